//! Tags a response carries, by which it can be purged: `Surrogate-Key` (Fastly, space
//! separated), `Cache-Tag` (Cloudflare, comma separated) and `Cache-Groups` (RFC 9875, a
//! structured-field list of strings).

use http::{HeaderMap, HeaderName};

/// `Surrogate-Key`.
pub const SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
/// `Cache-Tag`.
pub const CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");
/// `Cache-Groups` (RFC 9875).
pub const CACHE_GROUPS: HeaderName = HeaderName::from_static("cache-groups");
/// `Cache-Group-Invalidation` (RFC 9875): on a response to an unsafe request, the groups
/// whose stored responses it invalidates.
pub const CACHE_GROUP_INVALIDATION: HeaderName =
    HeaderName::from_static("cache-group-invalidation");

/// At most this many tags are taken from one response; the rest are ignored (an origin that
/// sends thousands would make every store a thousand index writes).
pub const MAX_TAGS: usize = 64;
/// Tags longer than this are ignored.
pub const MAX_TAG_BYTES: usize = 256;

/// The tags of a response, deduplicated, in order of appearance, at most [`MAX_TAGS`].
pub fn response_tags(headers: &HeaderMap) -> Vec<String> {
    let mut tags = Vec::new();
    let mut add = |tag: &str| {
        if !tag.is_empty()
            && tag.len() <= MAX_TAG_BYTES
            && tags.len() < MAX_TAGS
            && !tags.iter().any(|t| t == tag)
        {
            tags.push(tag.to_owned());
        }
    };
    for value in headers.get_all(SURROGATE_KEY) {
        if let Ok(text) = value.to_str() {
            text.split_ascii_whitespace().for_each(&mut add);
        }
    }
    for value in headers.get_all(CACHE_TAG) {
        if let Ok(text) = value.to_str() {
            text.split(',').map(str::trim).for_each(&mut add);
        }
    }
    for group in groups(headers, &CACHE_GROUPS) {
        add(&group);
    }
    tags
}

/// The strings of a structured-field list header (RFC 8941 §3.1, strings only, as RFC 9875
/// uses it). Members that are not strings, and everything after a syntax error, are ignored.
pub(crate) fn groups(headers: &HeaderMap, name: &HeaderName) -> Vec<String> {
    let mut out = Vec::new();
    for value in headers.get_all(name) {
        let mut rest = value.as_bytes();
        loop {
            rest = rest.trim_ascii_start();
            let Some((&b'"', after)) = rest.split_first() else {
                break;
            };
            let Some((string, after)) = sf_string(after) else {
                break;
            };
            out.push(string);
            // Parameters (`;a=1`) are allowed on members; skip to the next comma.
            match after.iter().position(|&b| b == b',') {
                Some(comma) => rest = &after[comma + 1..],
                None => break,
            }
        }
    }
    out
}

/// The rest of an sf-string after its opening quote: the string and what follows it.
fn sf_string(mut bytes: &[u8]) -> Option<(String, &[u8])> {
    let mut out = String::new();
    loop {
        let (&b, rest) = bytes.split_first()?;
        bytes = rest;
        match b {
            b'"' => return Some((out, bytes)),
            b'\\' => {
                let (&escaped, rest) = bytes.split_first()?;
                if escaped != b'"' && escaped != b'\\' {
                    return None;
                }
                out.push(char::from(escaped));
                bytes = rest;
            }
            b' '..=b'~' => out.push(char::from(b)),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    proptest! {
        /// Any bytes a header may carry: no panic, and what comes out is bounded and clean.
        #[test]
        fn any_header_bytes_give_bounded_tags(
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
            which in 0usize..3,
        ) {
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                let name = [SURROGATE_KEY, CACHE_TAG, CACHE_GROUPS][which].clone();
                let mut headers = HeaderMap::new();
                headers.insert(name, value);
                let tags = response_tags(&headers);
                prop_assert!(tags.len() <= MAX_TAGS);
                for tag in tags {
                    prop_assert!(!tag.is_empty() && tag.len() <= MAX_TAG_BYTES);
                    prop_assert!(tag.bytes().all(|b| (b' '..=b'~').contains(&b)));
                }
            }
        }

        /// Strings written as an sf-list read back as written.
        #[test]
        fn cache_groups_round_trip(groups_in in proptest::collection::vec("[ -~]{1,20}", 1..5)) {
            let list: Vec<String> = groups_in
                .iter()
                .map(|g| format!("\"{}\"", g.replace('\\', "\\\\").replace('"', "\\\"")))
                .collect();
            let mut headers = HeaderMap::new();
            headers.insert(CACHE_GROUPS, HeaderValue::from_str(&list.join(", ")).unwrap());
            prop_assert_eq!(groups(&headers, &CACHE_GROUPS), groups_in);
        }
    }

    #[test]
    fn all_three_headers_deduplicated() {
        let mut h = HeaderMap::new();
        h.insert(
            SURROGATE_KEY,
            HeaderValue::from_static("product:42  category:7"),
        );
        h.insert(CACHE_TAG, HeaderValue::from_static("product:42, shop , "));
        h.insert(
            CACHE_GROUPS,
            HeaderValue::from_static(r#""scripts", "a \"q\"";p=1, 7, "x""#),
        );
        assert_eq!(
            response_tags(&h),
            ["product:42", "category:7", "shop", "scripts", "a \"q\""]
        );
    }

    #[test]
    fn bad_input_is_ignored_and_bounded() {
        let mut h = HeaderMap::new();
        let many: Vec<String> = (0..500).map(|i| format!("t{i}")).collect();
        h.insert(
            SURROGATE_KEY,
            HeaderValue::from_str(&many.join(" ")).unwrap(),
        );
        h.insert(
            CACHE_GROUPS,
            HeaderValue::from_bytes(b"\"unterminated").unwrap(),
        );
        let tags = response_tags(&h);
        assert_eq!(tags.len(), MAX_TAGS);
        let mut long = HeaderMap::new();
        long.insert(CACHE_TAG, HeaderValue::from_str(&"x".repeat(300)).unwrap());
        assert!(response_tags(&long).is_empty());
    }
}
