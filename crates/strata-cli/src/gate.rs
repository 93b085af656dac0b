//! CI gates: `--gate 'hit_ratio>=0.85' --gate 'p95_ms<=150' --gate 'stale_reads==0'`, the
//! same expressions for `strata bench` and `strata load`.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Ge,
    Le,
    Gt,
    Lt,
    Eq,
    Ne,
}

/// One parsed gate.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Gate {
    text: String,
    metric: String,
    cmp: Cmp,
    value: f64,
}

/// What a gate is checked against: a report as JSON, with short names for its deeper fields.
pub(crate) trait Gated {
    /// The report as JSON: a gate names one of its top-level numbers or a [`Self::DERIVED`].
    fn to_json(&self) -> Value;
    /// Metrics a gate can name besides the top-level numbers: name, JSON pointer, scale.
    const DERIVED: &'static [(&'static str, &'static str, f64)];
    /// What a failed gate's line names as measured (`strata W1`, `load`).
    fn subject(&self) -> String;
}

impl Gate {
    /// Parses `metric OP number`, OP one of `>=`, `<=`, `==`, `!=`, `>`, `<`.
    pub(crate) fn parse(text: &str) -> Result<Gate, String> {
        let t = text.trim();
        let ops = [
            (">=", Cmp::Ge),
            ("<=", Cmp::Le),
            ("==", Cmp::Eq),
            ("!=", Cmp::Ne),
            (">", Cmp::Gt),
            ("<", Cmp::Lt),
        ];
        let (at, sym, cmp) = ops
            .iter()
            .filter_map(|(sym, cmp)| t.find(sym).map(|at| (at, *sym, *cmp)))
            .min_by_key(|(at, sym, _)| (*at, std::cmp::Reverse(sym.len())))
            .ok_or_else(|| {
                format!("gate {text:?}: expected METRIC OP NUMBER, e.g. 'hit_ratio>=0.85'")
            })?;
        let metric = t[..at].trim();
        let number = t[at + sym.len()..].trim();
        if metric.is_empty()
            || !metric
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(format!("gate {text:?}: {metric:?} is not a metric name"));
        }
        let value: f64 = number
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| format!("gate {text:?}: {number:?} is not a number"))?;
        Ok(Gate {
            text: t.to_owned(),
            metric: metric.to_owned(),
            cmp,
            value,
        })
    }

    /// `Ok(())` when `report` passes; otherwise the line to print.
    pub(crate) fn check<R: Gated>(&self, report: &R) -> Result<(), String> {
        let json = report.to_json();
        let measured = match lookup(&json, R::DERIVED, &self.metric) {
            Some(Measured::Number(v)) => v,
            Some(Measured::Missing) => {
                return Err(format!(
                    "gate {}: {} was not measured in this run",
                    self.text, self.metric
                ));
            }
            None => {
                let known: Vec<&str> = R::DERIVED.iter().map(|d| d.0).collect();
                return Err(format!(
                    "gate {}: unknown metric {:?} (use {} or a numeric field of the JSON report)",
                    self.text,
                    self.metric,
                    known.join(", ")
                ));
            }
        };
        let pass = match self.cmp {
            Cmp::Ge => measured >= self.value,
            Cmp::Le => measured <= self.value,
            Cmp::Gt => measured > self.value,
            Cmp::Lt => measured < self.value,
            Cmp::Eq => measured == self.value,
            Cmp::Ne => measured != self.value,
        };
        if pass {
            Ok(())
        } else {
            Err(format!(
                "gate failed: {} (measured {} on {})",
                self.text,
                trim(measured),
                report.subject()
            ))
        }
    }
}

/// A gate's metric in a report.
enum Measured {
    Number(f64),
    /// The report has the field, empty (`null`): not measured in this run.
    Missing,
}

fn lookup(json: &Value, derived: &[(&str, &str, f64)], name: &str) -> Option<Measured> {
    let (value, scale) = match derived.iter().find(|d| d.0 == name) {
        Some((_, pointer, scale)) => (json.pointer(pointer), *scale),
        None => (json.get(name), 1.0),
    };
    match value? {
        Value::Null => Some(Measured::Missing),
        v => v.as_f64().map(|v| Measured::Number(v * scale)),
    }
}

/// Parses every `--gate`: a bad one is an error before minutes of work, not after.
pub(crate) fn parse_all(texts: &[String]) -> Result<Vec<Gate>, String> {
    texts.iter().map(|g| Gate::parse(g)).collect()
}

/// Checks every gate on every report, with a line on stderr per failure; whether one failed.
pub(crate) fn any_failed<R: Gated>(gates: &[Gate], reports: &[&R]) -> bool {
    let mut failed = false;
    for gate in gates {
        for report in reports {
            if let Err(line) = gate.check(*report) {
                eprintln!("{line}");
                failed = true;
            }
        }
    }
    failed
}

fn trim(v: f64) -> String {
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report as bare JSON, with one derived name.
    struct Json(Value);

    impl Gated for Json {
        fn to_json(&self) -> Value {
            self.0.clone()
        }
        const DERIVED: &'static [(&'static str, &'static str, f64)] =
            &[("p95_ms", "/latency_us/p95", 1e-3)];
        fn subject(&self) -> String {
            "the run".into()
        }
    }

    fn report() -> Json {
        Json(serde_json::json!({
            "hit_ratio": 0.9, "errors": 0, "ops_per_s": 100.0, "stale_reads": 3,
            "latency_us": {"p95": 120_000},
        }))
    }

    #[test]
    fn gates_pass_and_fail_on_the_report() {
        let r = report();
        for ok in [
            "hit_ratio>=0.85",
            "p95_ms<=150",
            "errors==0",
            " ops_per_s > 99.5 ",
            "hit_ratio!=0",
        ] {
            assert_eq!(Gate::parse(ok).unwrap().check(&r), Ok(()), "{ok}");
        }
        let failed = Gate::parse("stale_reads==0")
            .unwrap()
            .check(&r)
            .unwrap_err();
        assert_eq!(
            failed,
            "gate failed: stale_reads==0 (measured 3 on the run)"
        );
        let failed = Gate::parse("p95_ms<100").unwrap().check(&r).unwrap_err();
        assert!(failed.contains("measured 120"), "{failed}");
    }

    #[test]
    fn bad_expressions_are_clear_errors() {
        for (bad, says) in [
            ("hit_ratio", "expected METRIC OP NUMBER"),
            ("hit_ratio>=", "is not a number"),
            ("hit_ratio>=abc", "is not a number"),
            (">=0.5", "is not a metric name"),
            ("hit ratio>=0.5", "is not a metric name"),
            ("hit_ratio>=NaN", "is not a number"),
        ] {
            let err = Gate::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let err = Gate::parse("nonsense>=1")
            .unwrap()
            .check(&report())
            .unwrap_err();
        assert!(
            err.contains("unknown metric") && err.contains("p95_ms"),
            "{err}"
        );
    }

    #[test]
    fn a_metric_not_measured_says_so() {
        let r = Json(serde_json::json!({"stale_reads": null}));
        let err = Gate::parse("stale_reads==0")
            .unwrap()
            .check(&r)
            .unwrap_err();
        assert_eq!(
            err,
            "gate stale_reads==0: stale_reads was not measured in this run"
        );
    }

    #[test]
    fn two_character_operators_win_over_their_prefix() {
        assert_eq!(Gate::parse("errors<=1").unwrap().cmp, Cmp::Le);
        assert_eq!(Gate::parse("errors<1").unwrap().cmp, Cmp::Lt);
        assert_eq!(Gate::parse("errors!=1").unwrap().cmp, Cmp::Ne);
    }
}
