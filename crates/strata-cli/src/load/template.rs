//! Request templates: `--get '[WEIGHT=]URL'`, `--write '[WEIGHT=]METHOD URL'`, bodies, and the
//! placeholders they hold (`{key}`, `{version}`, `{rand}`).
//!
//! Only those three words in braces are placeholders; any other brace is text, so a JSON body
//! needs no escaping (`{"price_cents": {rand}}`). A brace around another word (`{id}`) is an
//! error rather than text sent as is: it is almost always a typo for `{key}`.

use std::fmt::Write as _;

use http::{Method, Uri};

/// What a placeholder stands for in one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Values {
    /// The key drawn from the Zipf distribution, 1 to `--keys`.
    pub(crate) key: u64,
    /// A number larger than that of any earlier write of the run.
    pub(crate) version: u64,
    /// A random number below 1,000,000.
    pub(crate) rand: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Key,
    Version,
    Rand,
}

/// Text with placeholders, split once at parse time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Text {
    pieces: Vec<(String, Option<Part>)>,
}

impl Text {
    /// Splits `text` at its placeholders; `what` names it in errors.
    pub(crate) fn parse(what: &str, text: &str) -> Result<Text, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            literal.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let word_len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            let word = &after[..word_len];
            if word.is_empty() || !after[word_len..].starts_with('}') {
                // Not a placeholder: a brace of JSON, say.
                literal.push('{');
                rest = after;
                continue;
            }
            let part = match word {
                "key" => Part::Key,
                "version" => Part::Version,
                "rand" => Part::Rand,
                other => {
                    return Err(format!(
                        "{what} {text:?}: unknown placeholder {{{other}}} (known: {{key}}, {{version}}, {{rand}})"
                    ));
                }
            };
            pieces.push((std::mem::take(&mut literal), Some(part)));
            rest = &after[word_len + 1..];
        }
        literal.push_str(rest);
        pieces.push((literal, None));
        Ok(Text { pieces })
    }

    /// The text with `values` in place.
    pub(crate) fn render(&self, values: &Values) -> String {
        let mut out = String::new();
        for (literal, part) in &self.pieces {
            out.push_str(literal);
            let _ = match part {
                Some(Part::Key) => write!(out, "{}", values.key),
                Some(Part::Version) => write!(out, "{}", values.version),
                Some(Part::Rand) => write!(out, "{}", values.rand),
                None => Ok(()),
            };
        }
        out
    }

    fn holds(&self, wanted: Part) -> bool {
        self.pieces.iter().any(|(_, p)| *p == Some(wanted))
    }

    /// Whether `{version}` appears.
    pub(crate) fn holds_version(&self) -> bool {
        self.holds(Part::Version)
    }
}

/// One request template: method, URL, and for writes a body.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    pub(crate) method: Method,
    pub(crate) url: Text,
    pub(crate) weight: u32,
}

impl Template {
    /// `--get '[WEIGHT=]URL'`.
    pub(crate) fn get(text: &str) -> Result<Template, String> {
        let (weight, url) = weight_of(text)?;
        Template::new(Method::GET, url, weight, "--get")
    }

    /// `--write '[WEIGHT=]METHOD URL'` (`PUT`, `POST`, `PATCH`, `DELETE`, `PURGE`, …).
    pub(crate) fn write(text: &str) -> Result<Template, String> {
        let (weight, rest) = weight_of(text)?;
        let (method, url) = rest.trim().split_once(char::is_whitespace).ok_or_else(|| {
            format!("--write {text:?}: expected 'METHOD URL', e.g. 'PUT http://staging/products/{{key}}'")
        })?;
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| format!("--write {text:?}: {method:?} is not an HTTP method"))?;
        Template::new(method, url.trim(), weight, "--write")
    }

    fn new(method: Method, url: &str, weight: u32, what: &str) -> Result<Template, String> {
        let text = Text::parse(what, url)?;
        // Checked with a sample now, not on the first request of a long run.
        let sample = text.render(&Values {
            key: 1,
            version: 1,
            rand: 1,
        });
        let uri: Uri = sample
            .parse()
            .map_err(|e| format!("{what} {url:?}: not a URL ({e})"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(format!(
                "{what} {url:?}: give an absolute http:// or https:// URL, e.g. http://127.0.0.1:8080/products/{{key}}"
            ));
        }
        if uri.host().is_none() {
            return Err(format!("{what} {url:?}: the URL names no host"));
        }
        Ok(Template {
            method,
            url: text,
            weight,
        })
    }

    /// The URL for `values`, checked: a key can only make it invalid through the template's
    /// own text, which the sample at parse time already tried.
    pub(crate) fn uri(&self, values: &Values) -> Result<Uri, String> {
        let url = self.url.render(values);
        url.parse().map_err(|e| format!("{url:?}: not a URL ({e})"))
    }
}

/// `3=URL` → (3, URL); a URL alone weighs 1. Only digits before the first `=` make a weight,
/// so a query string's `=` stays in the URL.
fn weight_of(text: &str) -> Result<(u32, &str), String> {
    match text.split_once('=') {
        Some((w, rest)) if !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()) => {
            let weight: u32 = w
                .parse()
                .map_err(|_| format!("{text:?}: weight {w} is too large"))?;
            if weight == 0 {
                return Err(format!("{text:?}: a weight is at least 1"));
            }
            Ok((weight, rest))
        }
        _ => Ok((1, text)),
    }
}

/// The index of the item a uniform draw in `0..weights.sum()` falls on.
pub(crate) fn pick(weights: &[u32], draw: u64) -> usize {
    let mut left = draw;
    for (i, w) in weights.iter().enumerate() {
        if left < u64::from(*w) {
            return i;
        }
        left -= u64::from(*w);
    }
    // Only reached with a draw outside the range; the last is as good as any.
    weights.len().saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: Values = Values {
        key: 42,
        version: 7,
        rand: 999,
    };

    #[test]
    fn placeholders_are_replaced_and_json_braces_kept() {
        let t = Text::parse(
            "--body",
            r#"{"price_cents": {rand}, "v": {version}, "k": "{key}"}"#,
        )
        .unwrap();
        assert_eq!(t.render(&V), r#"{"price_cents": 999, "v": 7, "k": "42"}"#);
        assert!(t.holds_version());
        assert_eq!(Text::parse("x", "{ {").unwrap().render(&V), "{ {");
        assert_eq!(Text::parse("x", "a{key}").unwrap().render(&V), "a42");
    }

    #[test]
    fn templates_parse_with_weights_and_methods() {
        let g = Template::get("3=http://h:8080/products/{key}?a=b").unwrap();
        assert_eq!(g.weight, 3);
        assert_eq!(g.uri(&V).unwrap(), "http://h:8080/products/42?a=b");
        let plain = Template::get("http://h/p?x=1").unwrap();
        assert_eq!(plain.weight, 1);
        assert_eq!(plain.uri(&V).unwrap(), "http://h/p?x=1");
        let w = Template::write("PUT http://h/products/{key}").unwrap();
        assert_eq!(w.method, Method::PUT);
        let weights = [g.weight, plain.weight];
        assert_eq!(
            (0..4).map(|d| pick(&weights, d)).collect::<Vec<_>>(),
            [0, 0, 0, 1]
        );
    }

    #[test]
    fn bad_templates_are_clear_errors() {
        for (bad, says) in [
            ("http://h/products/{id}", "unknown placeholder {id}"),
            ("/products/{key}", "absolute http:// or https:// URL"),
            ("ftp://h/products/{key}", "absolute http:// or https:// URL"),
            ("http://h/a b", "not a URL"),
            ("0=http://h/", "at least 1"),
            ("99999999999=http://h/", "too large"),
        ] {
            let err = Template::get(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        for (bad, says) in [
            ("http://h/products/{key}", "expected 'METHOD URL'"),
            ("P(T http://h/", "not an HTTP method"),
        ] {
            let err = Template::write(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
