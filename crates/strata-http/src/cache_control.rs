//! `Cache-Control` (RFC 9111 §5.2): the directives of a request or a response, parsed from
//! every field line, never failing — what cannot be understood is ignored or, for freshness,
//! treated as stale, as §4.2.1 asks.

use http::header::CACHE_CONTROL;
use http::{HeaderMap, HeaderName};

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

    /// Targeted cache control (RFC 9213): the directives of the first of `targets` that
    /// `headers` holds with a valid, non-empty value, or `None` (then `Cache-Control` and
    /// `Expires` decide). A targeted field is a Structured Fields Dictionary (RFC 8941), its
    /// field lines joined; one that does not parse is ignored as if absent.
    ///
    /// ```
    /// use http::{HeaderMap, HeaderName, HeaderValue};
    /// use strata_http::CacheControl;
    /// let cdn = HeaderName::from_static("cdn-cache-control");
    /// let mut headers = HeaderMap::new();
    /// headers.insert("cache-control", HeaderValue::from_static("no-store"));
    /// headers.insert(cdn.clone(), HeaderValue::from_static("max-age=600, stale-if-error=60"));
    /// let cc = CacheControl::targeted(&headers, &[cdn]).unwrap();
    /// assert_eq!((cc.max_age, cc.no_store), (Some(600), false));
    /// ```
    pub fn targeted(headers: &HeaderMap, targets: &[HeaderName]) -> Option<Self> {
        targets.iter().find_map(|name| {
            let mut lines = headers.get_all(name).iter();
            let mut joined = lines.next()?.as_bytes().to_vec();
            for line in lines {
                joined.extend_from_slice(b", ");
                joined.extend_from_slice(line.as_bytes());
            }
            let dictionary: sfv::Dictionary = sfv::Parser::new(&joined).parse().ok()?;
            if dictionary.is_empty() {
                return None;
            }
            let mut cc = CacheControl::default();
            for (key, entry) in &dictionary {
                cc.apply_member(key.as_str(), entry);
            }
            Some(cc)
        })
    }

    /// One member of a targeted field. A directive is on unless its value is `?0`; a
    /// delta-seconds one takes a non-negative Integer, and anything else makes it 0 (stale),
    /// as an invalid `Cache-Control` value does.
    fn apply_member(&mut self, name: &str, entry: &sfv::ListEntry) {
        let item = match entry {
            sfv::ListEntry::Item(item) => Some(&item.bare_item),
            sfv::ListEntry::InnerList(_) => None,
        };
        if item.and_then(sfv::BareItem::as_boolean) == Some(false) {
            return;
        }
        let integer = item
            .and_then(sfv::BareItem::as_integer)
            .and_then(|i| u64::try_from(i64::from(i)).ok())
            .map(|n| n.min(MAX_DELTA_SECONDS).to_string());
        let arg = match item {
            Some(i) if i.as_boolean().is_some() => None,
            _ => Some(integer.as_deref().unwrap_or("invalid")),
        };
        self.apply(name, arg);
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

    fn targeted(lines: &[(&str, &str)]) -> Option<CacheControl> {
        let mut headers = HeaderMap::new();
        for (name, line) in lines {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(line).unwrap(),
            );
        }
        let targets = ["strata-cache-control", "cdn-cache-control"].map(HeaderName::from_static);
        CacheControl::targeted(&headers, &targets)
    }

    #[test]
    fn the_first_valid_target_field_wins() {
        let cc = targeted(&[
            ("cache-control", "max-age=5"),
            ("cdn-cache-control", "max-age=600"),
            ("strata-cache-control", "s-maxage=60, must-revalidate"),
        ])
        .unwrap();
        assert_eq!((cc.s_maxage, cc.max_age), (Some(60), None));
        assert!(cc.must_revalidate);
        // Field lines are one dictionary.
        let cc = targeted(&[
            ("cdn-cache-control", "max-age=600"),
            ("cdn-cache-control", "no-cache, private"),
        ])
        .unwrap();
        assert!(cc.no_cache && cc.private && cc.max_age == Some(600));
        assert_eq!(targeted(&[("cache-control", "max-age=5")]), None);
    }

    #[test]
    fn invalid_or_empty_target_fields_are_ignored() {
        // Not a dictionary (uppercase key, a stray quote, a trailing comma): the next target,
        // else none.
        for bad in ["Max-Age=60", "max-age=\"60", "max-age=60,", "max-age=60;;"] {
            assert_eq!(
                targeted(&[
                    ("strata-cache-control", bad),
                    ("cdn-cache-control", "max-age=7")
                ])
                .unwrap()
                .max_age,
                Some(7),
                "{bad}"
            );
            assert_eq!(targeted(&[("cdn-cache-control", bad)]), None, "{bad}");
        }
        assert_eq!(targeted(&[("cdn-cache-control", " ")]), None);
    }

    #[test]
    fn target_field_values_are_typed() {
        let cc = targeted(&[(
            "cdn-cache-control",
            "max-age=\"60\", stale-if-error=-1, no-store=?0, private=?1, no-cache=(a b)",
        )])
        .unwrap();
        // A string or a negative number is no delta-seconds: stale, the safe reading.
        assert_eq!((cc.max_age, cc.stale_if_error), (Some(0), Some(0)));
        assert!(!cc.no_store && cc.private && cc.no_cache);
        let cc = targeted(&[("cdn-cache-control", "max-age=1.5")]).unwrap();
        assert_eq!(cc.max_age, Some(0));
    }

    proptest! {
        #[test]
        fn any_target_field_parses_without_panic(text in "[ -~]{0,120}") {
            if let Ok(value) = HeaderValue::from_str(&text) {
                let mut headers = HeaderMap::new();
                headers.insert("cdn-cache-control", value);
                let _ = CacheControl::targeted(&headers, &[HeaderName::from_static("cdn-cache-control")]);
            }
        }

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
