//! `Cache-Control` (RFC 9111 §5.2): the directives of a request or a response, parsed from
//! every field line, never failing — what cannot be understood is ignored or, for freshness,
//! treated as stale, as §4.2.1 asks.

use http::HeaderMap;
use http::header::CACHE_CONTROL;

/// The largest delta-seconds a cache must represent (RFC 9111 §1.2.2): larger values, and
/// overflows, count as this.
pub const MAX_DELTA_SECONDS: u64 = 2_147_483_648;

/// The directives of one message's `Cache-Control` field lines.
///
/// ```
/// use http::{HeaderMap, HeaderValue, header::CACHE_CONTROL};
/// let mut headers = HeaderMap::new();
/// headers.insert(CACHE_CONTROL, HeaderValue::from_static("public, s-maxage=60, stale-while-revalidate=30"));
/// let cc = strata_http::CacheControl::from_headers(&headers);
/// assert_eq!((cc.s_maxage, cc.stale_while_revalidate), (Some(60), Some(30)));
/// assert!(cc.public && !cc.private);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheControl {
    /// `max-age`: in a response, its freshness lifetime; in a request, the oldest response
    /// the client accepts. An invalid or conflicting value is 0 (stale).
    pub max_age: Option<u64>,
    /// `s-maxage`: a shared cache's freshness lifetime, over `max-age` and `Expires`.
    pub s_maxage: Option<u64>,
    /// `no-store`: not to be stored at all.
    pub no_store: bool,
    /// `no-cache` (with or without field names, treated alike): not to be served without
    /// revalidation.
    pub no_cache: bool,
    /// `private`: for a single user; a shared cache does not store it.
    pub private: bool,
    /// `public`: may be stored by a shared cache even where it otherwise would not be.
    pub public: bool,
    /// `must-revalidate`: never served stale.
    pub must_revalidate: bool,
    /// `proxy-revalidate`: never served stale by a shared cache.
    pub proxy_revalidate: bool,
    /// `stale-while-revalidate` (RFC 5861): served stale this long while it is revalidated.
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error` (RFC 5861): served stale this long when the origin fails.
    pub stale_if_error: Option<u64>,
    /// `max-stale` in a request: `Some(None)` accepts any staleness.
    pub max_stale: Option<Option<u64>>,
    /// `min-fresh` in a request.
    pub min_fresh: Option<u64>,
    /// `only-if-cached` in a request.
    pub only_if_cached: bool,
    /// `immutable` (RFC 8246).
    pub immutable: bool,
}

impl CacheControl {
    /// The directives of every `Cache-Control` field line in `headers`. Lines that are not
    /// visible ASCII are ignored.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut cc = CacheControl::default();
        for value in headers.get_all(CACHE_CONTROL) {
            if let Ok(text) = value.to_str() {
                for (name, arg) in directives(text) {
                    cc.apply(&name, arg.as_deref());
                }
            }
        }
        cc
    }

    fn apply(&mut self, name: &str, arg: Option<&str>) {
        match name {
            "max-age" => set_seconds(&mut self.max_age, arg),
            "s-maxage" => set_seconds(&mut self.s_maxage, arg),
            "stale-while-revalidate" => set_seconds(&mut self.stale_while_revalidate, arg),
            "stale-if-error" => set_seconds(&mut self.stale_if_error, arg),
            "min-fresh" => set_seconds(&mut self.min_fresh, arg),
            "max-stale" => {
                self.max_stale = Some(arg.map(|a| seconds(a).unwrap_or(0)));
            }
            "no-store" => self.no_store = true,
            "no-cache" => self.no_cache = true,
            "private" => self.private = true,
            "public" => self.public = true,
            "must-revalidate" => self.must_revalidate = true,
            "proxy-revalidate" => self.proxy_revalidate = true,
            "only-if-cached" => self.only_if_cached = true,
            "immutable" => self.immutable = true,
            _ => {} // extensions we do not know are ignored (§5.2.3)
        }
    }
}

/// A delta-seconds directive: an invalid value, or a second occurrence that disagrees, makes
/// it 0 — stale, the safe reading of §4.2.1.
fn set_seconds(slot: &mut Option<u64>, arg: Option<&str>) {
    let parsed = arg.and_then(seconds).unwrap_or(0);
    *slot = match *slot {
        Some(previous) if previous != parsed => Some(0),
        _ => Some(parsed),
    };
}

/// `delta-seconds = 1*DIGIT`, saturating at [`MAX_DELTA_SECONDS`].
pub(crate) fn seconds(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        text.parse::<u64>()
            .map_or(MAX_DELTA_SECONDS, |n| n.min(MAX_DELTA_SECONDS)),
    )
}

/// `name[=token|quoted-string]` items of a comma-separated list; names lowercased, quotes and
/// escapes removed, commas inside quoted strings kept.
fn directives(text: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        // Name, up to '=' or ','.
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            name.push(c.to_ascii_lowercase());
            chars.next();
        }
        let mut arg = None;
        if chars.peek() == Some(&'=') {
            chars.next();
            let mut value = String::new();
            while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                chars.next();
            }
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => value.extend(chars.next()),
                        c => value.push(c),
                    }
                }
                // Anything between the closing quote and the next comma is malformed: dropped.
                while chars.peek().is_some_and(|c| *c != ',') {
                    chars.next();
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
                value = value.trim().to_owned();
            }
            arg = Some(value);
        }
        let name = name.trim();
        if !name.is_empty() {
            out.push((name.to_owned(), arg));
        }
        if chars.next().is_none() {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn parse(lines: &[&str]) -> CacheControl {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(CACHE_CONTROL, HeaderValue::from_str(line).unwrap());
        }
        CacheControl::from_headers(&headers)
    }

    #[test]
    fn directives_across_lines_any_case_with_quoted_commas() {
        let cc = parse(&[
            "Public, MAX-AGE=60",
            r#"private="set-cookie, x-user", s-maxage="120""#,
            "no-cache, stale-if-error=300",
        ]);
        assert_eq!(cc.max_age, Some(60));
        assert_eq!(cc.s_maxage, Some(120));
        assert_eq!(cc.stale_if_error, Some(300));
        assert!(cc.public && cc.private && cc.no_cache);
        assert!(!cc.no_store);
    }

    #[test]
    fn invalid_or_conflicting_freshness_is_stale() {
        assert_eq!(parse(&["max-age=abc"]).max_age, Some(0));
        assert_eq!(parse(&["max-age=-1"]).max_age, Some(0));
        assert_eq!(parse(&["max-age"]).max_age, Some(0));
        assert_eq!(parse(&["max-age=60", "max-age=30"]).max_age, Some(0));
        assert_eq!(parse(&["max-age=60, max-age=60"]).max_age, Some(60));
        assert_eq!(
            parse(&["max-age=99999999999999999999999"]).max_age,
            Some(MAX_DELTA_SECONDS)
        );
    }

    #[test]
    fn request_directives() {
        let cc = parse(&["max-stale, min-fresh=5, only-if-cached"]);
        assert_eq!(cc.max_stale, Some(None));
        assert_eq!(cc.min_fresh, Some(5));
        assert!(cc.only_if_cached);
        assert_eq!(parse(&["max-stale=10"]).max_stale, Some(Some(10)));
    }

    #[test]
    fn unknown_and_empty_items_are_ignored() {
        let cc = parse(&[", ,community=\"UCI\", foo, max-age=5,,"]);
        assert_eq!(
            cc,
            CacheControl {
                max_age: Some(5),
                ..CacheControl::default()
            }
        );
    }

    proptest! {
        #[test]
        fn any_visible_ascii_parses_without_panic(text in "[ -~]{0,200}") {
            if let Ok(value) = HeaderValue::from_str(&text) {
                let mut headers = HeaderMap::new();
                headers.insert(CACHE_CONTROL, value);
                let _ = CacheControl::from_headers(&headers);
            }
        }
    }
}
