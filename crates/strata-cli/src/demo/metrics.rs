//! Reading the processes' Prometheus `/metrics` text: the samples of one metric.

/// Each sample of metric `name` in `text`: its label set (`{…}`, without the braces) and its
/// value.
pub(crate) fn samples<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> {
    text.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (labels, value) = rest.rsplit_once("} ")?;
        Some((labels, value.trim().parse().ok()?))
    })
}

/// The value of label `label` in a label set.
pub(crate) fn label<'a>(labels: &'a str, label: &str) -> Option<&'a str> {
    labels
        .split(&format!("{label}=\""))
        .nth(1)?
        .split('"')
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_samples_and_labels() {
        let text = "# HELP x\nstrata_breaker_state{namespace=\"order\",target=\"inventory\"} 2\n\
                    strata_breaker_state_other{a=\"b\"} 9\nstrata_breaker_state{namespace=\"order\",target=\"user\"} 0\n";
        let found: Vec<_> = samples(text, "strata_breaker_state").collect();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].1, 2.0);
        assert_eq!(label(found[1].0, "target"), Some("user"));
        assert_eq!(label(found[1].0, "missing"), None);
    }
}
