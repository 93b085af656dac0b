//! Answers to the client: a stored response (with its `Age`, or as a `304` when the client's
//! validators match), and the `Cache-Status`/`X-Cache` headers on every answer.

use http::header::{
    AGE, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_LOCATION, DATE, ETAG, EXPIRES, IF_MODIFIED_SINCE,
    IF_NONE_MATCH, LAST_MODIFIED, RANGE, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use crate::body::CacheBody;
use crate::cache_status::CacheStatus;
use crate::freshness::http_date;
use crate::range;
use crate::stored::StoredResponse;

/// `Cache-Status`.
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
/// `X-Cache`.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// The stored response as an answer to a request with `request` headers.
pub(crate) fn stored<RB>(
    r: &StoredResponse,
    request: &HeaderMap,
    head_only: bool,
    now_us: u64,
) -> Response<CacheBody<RB>> {
    let age = HeaderValue::from(r.age(now_us).as_secs());
    if r.status == 200 && not_modified(request, r.header_map()) {
        let mut response = Response::new(CacheBody::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        let headers = response.headers_mut();
        for name in [
            CACHE_CONTROL,
            CONTENT_LOCATION,
            DATE,
            ETAG,
            EXPIRES,
            VARY,
            LAST_MODIFIED,
        ] {
            for value in r.header_map().get_all(&name) {
                headers.append(name.clone(), value.clone());
            }
        }
        headers.insert(AGE, age);
        return response;
    }
    let mut headers = r.header_map().clone();
    headers.insert(AGE, age);
    // A stored complete response serves ranges of itself (RFC 9110 §14; it says so with the
    // `Accept-Ranges` it was stored with).
    if r.status == 200 && !head_only && request.contains_key(RANGE) {
        let ranges = range::select(request, r.header_map(), r.body.len() as u64);
        if let Some(partial) = range::answer(ranges, &headers, &r.body) {
            return partial;
        }
    }
    let body = if head_only {
        CacheBody::empty()
    } else {
        CacheBody::full(r.body.clone())
    };
    if head_only {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(r.body.len()));
    }
    let mut response = Response::new(body);
    *response.status_mut() = r.status();
    *response.headers_mut() = headers;
    response
}

/// Whether the client's `If-None-Match` (or, without it, `If-Modified-Since`) matches
/// (RFC 9110 §13.1.2, §13.1.3, weak comparison).
pub(crate) fn not_modified(request: &HeaderMap, response: &HeaderMap) -> bool {
    if request.contains_key(IF_NONE_MATCH) {
        let Some(ours) = response
            .get(ETAG)
            .and_then(|e| e.to_str().ok())
            .and_then(|e| match EntityTags::new(e).next() {
                Some(Tag::Opaque(tag)) => Some(tag),
                _ => None,
            })
        else {
            return false;
        };
        return request
            .get_all(IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(EntityTags::new)
            .any(|tag| match tag {
                Tag::Any => true,
                Tag::Opaque(theirs) => theirs == ours,
            });
    }
    match (
        request.get(IF_MODIFIED_SINCE).and_then(http_date),
        response.get(LAST_MODIFIED).and_then(http_date),
    ) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

/// One member of an `If-None-Match` list (RFC 9110 §8.8.3, §13.1.2).
#[derive(Debug, PartialEq, Eq)]
enum Tag<'a> {
    /// `*`.
    Any,
    /// An entity-tag's opaque part, quotes included, weakness dropped (weak comparison).
    Opaque(&'a str),
}

/// The entity-tags of a list, read as the grammar says: a comma inside the quotes belongs to
/// the tag (`"a,b"` is one). Reading stops at the first member that is not an entity-tag.
struct EntityTags<'a>(&'a str);

impl<'a> EntityTags<'a> {
    fn new(list: &'a str) -> Self {
        EntityTags(list)
    }
}

impl<'a> Iterator for EntityTags<'a> {
    type Item = Tag<'a>;

    fn next(&mut self) -> Option<Tag<'a>> {
        let rest = self.0.trim_start_matches([' ', '\t', ',']);
        if let Some(after) = rest.strip_prefix('*') {
            self.0 = after;
            return Some(Tag::Any);
        }
        let quoted = rest.strip_prefix("W/").unwrap_or(rest);
        if !quoted.starts_with('"') {
            self.0 = "";
            return None;
        }
        let Some(end) = quoted[1..].find('"') else {
            self.0 = "";
            return None;
        };
        let (tag, after) = quoted.split_at(end + 2);
        self.0 = after;
        Some(Tag::Opaque(tag))
    }
}

/// Adds `Cache-Status` and `X-Cache`.
pub(crate) fn mark<B>(response: &mut Response<B>, status: &CacheStatus, cache_name: &str) {
    let headers = response.headers_mut();
    headers.insert(CACHE_STATUS, status.header_value(cache_name));
    headers.insert(X_CACHE, status.x_cache());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_tag_lists_keep_commas_inside_quotes() {
        let tags: Vec<Tag<'_>> = EntityTags::new(r#""a,b", W/"c" ,"d",*"#).collect();
        assert_eq!(
            tags,
            [
                Tag::Opaque(r#""a,b""#),
                Tag::Opaque(r#""c""#),
                Tag::Opaque(r#""d""#),
                Tag::Any
            ]
        );
        // Not an entity-tag: reading stops there.
        let tags: Vec<Tag<'_>> = EntityTags::new(r#""a", b, "c""#).collect();
        assert_eq!(tags, [Tag::Opaque(r#""a""#)]);
        assert_eq!(EntityTags::new(r#""unterminated"#).count(), 0);
        let stored = map(&[(ETAG, r#""a,b""#)]);
        assert!(not_modified(
            &map(&[(IF_NONE_MATCH, r#""x", "a,b""#)]),
            &stored
        ));
        assert!(!not_modified(&map(&[(IF_NONE_MATCH, r#""a""#)]), &stored));
        assert!(!not_modified(&map(&[(IF_NONE_MATCH, r#"b""#)]), &stored));
    }

    fn map(pairs: &[(HeaderName, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| (n.clone(), HeaderValue::from_str(v).unwrap()))
            .collect()
    }

    #[test]
    fn conditionals_compare_weakly_and_inm_wins() {
        let res = map(&[
            (ETAG, "W/\"v1\""),
            (LAST_MODIFIED, "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);
        assert!(not_modified(
            &map(&[(IF_NONE_MATCH, "\"v0\", \"v1\"")]),
            &res
        ));
        assert!(not_modified(&map(&[(IF_NONE_MATCH, "*")]), &res));
        assert!(!not_modified(&map(&[(IF_NONE_MATCH, "\"v2\"")]), &res));
        let later = (IF_MODIFIED_SINCE, "Mon, 07 Nov 1994 08:49:37 GMT");
        assert!(not_modified(&map(std::slice::from_ref(&later)), &res));
        assert!(!not_modified(
            &map(&[(IF_NONE_MATCH, "\"v2\""), later]),
            &res
        ));
        assert!(!not_modified(
            &map(&[(IF_MODIFIED_SINCE, "Sat, 05 Nov 1994 08:49:37 GMT")]),
            &res
        ));
    }
}
