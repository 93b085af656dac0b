//! Range requests (RFC 9110 §14) answered from a stored complete response: one range as a
//! `206`, several as `multipart/byteranges`, none satisfiable as a `416`; `If-Range` decides
//! whether the ranges apply at all.
//!
//! The cache stores complete responses only: a cacheable request's `Range` is not sent to the
//! origin (as nginx and Varnish do), so a miss fetches and stores the whole response and the
//! ranges are cut from it; a `206` from an origin is never stored as the complete response.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{
    CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_RANGE, LAST_MODIFIED, RANGE,
};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::body::CacheBody;
use crate::freshness::http_date;

/// More ranges than this (after merging the overlapping ones) are answered with the whole
/// response: many tiny ranges cost more to frame than they save (RFC 9110 §14.2's advice
/// against range abuse).
const MAX_RANGES: usize = 16;

/// What a request's `Range` asks of a representation of some length.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ranges {
    /// No usable `Range` (absent, not `bytes`, malformed, or `If-Range` does not match): the
    /// whole response.
    Whole,
    /// These inclusive byte ranges, ascending, not overlapping.
    Parts(Vec<(u64, u64)>),
    /// None of them is satisfiable: `416`.
    Unsatisfiable,
}

/// The ranges `request` asks of a stored `200` with `response` headers and a body of `len`
/// bytes.
pub(crate) fn select(request: &HeaderMap, response: &HeaderMap, len: u64) -> Ranges {
    let Some(range) = request.get(RANGE).and_then(|v| v.to_str().ok()) else {
        return Ranges::Whole;
    };
    if !if_range_matches(request, response) {
        return Ranges::Whole;
    }
    parse(range, len)
}

/// `Range: bytes=…` against a length (RFC 9110 §14.1.2). Anything malformed is ignored (the
/// whole response), as §14.2 allows.
pub(crate) fn parse(range: &str, len: u64) -> Ranges {
    let Some((unit, set)) = range.split_once('=') else {
        return Ranges::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return Ranges::Whole;
    }
    let mut parts = Vec::new();
    let mut any = false;
    for spec in set.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        any = true;
        let Some((first, last)) = spec.split_once('-') else {
            return Ranges::Whole;
        };
        let number = |s: &str| {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u64>().unwrap_or(u64::MAX))
        };
        let (first, last) = (first.trim(), last.trim());
        let resolved = match (number(first), number(last)) {
            // `first-last` and `first-`.
            (Some(first), last) if last.is_some() || last_is_empty(spec) => {
                if last.is_some_and(|last| last < first) {
                    return Ranges::Whole;
                }
                (first < len).then(|| (first, last.unwrap_or(u64::MAX).min(len - 1)))
            }
            // `-suffix`: the last `suffix` bytes.
            (None, Some(suffix)) if first.is_empty() => {
                (suffix > 0 && len > 0).then(|| (len - suffix.min(len), len - 1))
            }
            _ => return Ranges::Whole,
        };
        parts.extend(resolved);
    }
    if !any {
        return Ranges::Whole;
    }
    if parts.is_empty() {
        return Ranges::Unsatisfiable;
    }
    parts.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(parts.len());
    for (first, last) in parts {
        match merged.last_mut() {
            Some(prev) if first <= prev.1.saturating_add(1) => prev.1 = prev.1.max(last),
            _ => merged.push((first, last)),
        }
    }
    if merged.len() > MAX_RANGES {
        return Ranges::Whole;
    }
    Ranges::Parts(merged)
}

fn last_is_empty(spec: &str) -> bool {
    spec.trim_end().ends_with('-')
}

/// `If-Range` (RFC 9110 §13.1.5): the ranges apply only if the validator it carries is the
/// stored response's — an entity-tag by strong comparison, or a date equal to a
/// `Last-Modified` (a weak tag never matches).
fn if_range_matches(request: &HeaderMap, response: &HeaderMap) -> bool {
    let Some(condition) = request.get(IF_RANGE) else {
        return true;
    };
    let Ok(condition) = condition.to_str().map(str::trim) else {
        return false;
    };
    if condition.starts_with('"') {
        return response
            .get(ETAG)
            .and_then(|e| e.to_str().ok())
            .is_some_and(|ours| ours.trim() == condition);
    }
    if condition.starts_with("W/") {
        return false;
    }
    match (
        HeaderValue::from_str(condition)
            .ok()
            .as_ref()
            .and_then(http_date),
        response.get(LAST_MODIFIED).and_then(http_date),
    ) {
        (Some(since), Some(modified)) => since == modified,
        _ => false,
    }
}

/// The answer for `ranges` of `body`, with the stored `headers` (already with `Age`); `None`
/// for the whole response.
pub(crate) fn answer<RB>(
    ranges: Ranges,
    headers: &HeaderMap,
    body: &Bytes,
) -> Option<Response<CacheBody<RB>>> {
    let len = body.len() as u64;
    // The status, the body, and the header that says what the body is.
    let (status, body, (name, value)) = match ranges {
        Ranges::Whole => return None,
        Ranges::Unsatisfiable => (
            StatusCode::RANGE_NOT_SATISFIABLE,
            Bytes::new(),
            (CONTENT_RANGE, content_range(None, len)),
        ),
        Ranges::Parts(parts) => match parts.as_slice() {
            [(first, last)] => (
                StatusCode::PARTIAL_CONTENT,
                slice(body, *first, *last),
                (CONTENT_RANGE, content_range(Some((*first, *last)), len)),
            ),
            _ => {
                let (content_type, body) = multipart(&parts, headers.get(CONTENT_TYPE), body);
                (
                    StatusCode::PARTIAL_CONTENT,
                    body,
                    (CONTENT_TYPE, content_type),
                )
            }
        },
    };
    let mut headers = headers.clone();
    if status == StatusCode::RANGE_NOT_SATISFIABLE {
        // No body: nothing has the representation's type.
        headers.remove(CONTENT_TYPE);
    }
    headers.insert(name, value);
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    let mut response = Response::new(CacheBody::full(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Some(response)
}

fn slice(body: &Bytes, first: u64, last: u64) -> Bytes {
    let at = |n: u64| usize::try_from(n).unwrap_or(usize::MAX).min(body.len());
    body.slice(at(first)..at(last.saturating_add(1)))
}

/// `bytes first-last/len`, or `bytes */len`.
fn content_range(range: Option<(u64, u64)>, len: u64) -> HeaderValue {
    let text = match range {
        Some((first, last)) => format!("bytes {first}-{last}/{len}"),
        None => format!("bytes */{len}"),
    };
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("bytes */0"))
}

/// A `multipart/byteranges` body (RFC 9110 §14.6) and its `Content-Type`.
fn multipart(
    parts: &[(u64, u64)],
    content_type: Option<&HeaderValue>,
    body: &Bytes,
) -> (HeaderValue, Bytes) {
    // A boundary that cannot occur in the parts' heads and is unlikely in their bodies; a
    // client finds it only at the start of a line after CRLF "--".
    let boundary = format!("strata-{:016x}", boundary_seed(body));
    let len = body.len() as u64;
    let mut out = BytesMut::new();
    for &(first, last) in parts {
        out.put_slice(b"\r\n--");
        out.put_slice(boundary.as_bytes());
        out.put_slice(b"\r\n");
        if let Some(ct) = content_type {
            out.put_slice(b"content-type: ");
            out.put_slice(ct.as_bytes());
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"content-range: ");
        out.put_slice(content_range(Some((first, last)), len).as_bytes());
        out.put_slice(b"\r\n\r\n");
        out.put_slice(&slice(body, first, last));
    }
    out.put_slice(b"\r\n--");
    out.put_slice(boundary.as_bytes());
    out.put_slice(b"--\r\n");
    let content_type = HeaderValue::from_str(&format!("multipart/byteranges; boundary={boundary}"))
        .unwrap_or(HeaderValue::from_static("multipart/byteranges"));
    (content_type, out.freeze())
}

/// A boundary that differs between bodies: a hash of the body's length and a sample of it.
fn boundary_seed(body: &Bytes) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(body.len());
    h.write(&body[..body.len().min(64)]);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parts(v: &[(u64, u64)]) -> Ranges {
        Ranges::Parts(v.to_vec())
    }

    #[test]
    fn byte_ranges_resolve_against_the_length() {
        assert_eq!(parse("bytes=0-99", 1000), parts(&[(0, 99)]));
        assert_eq!(parse("bytes=900-", 1000), parts(&[(900, 999)]));
        assert_eq!(parse("bytes=-100", 1000), parts(&[(900, 999)]));
        assert_eq!(parse("bytes=-5000", 1000), parts(&[(0, 999)]));
        assert_eq!(parse("bytes=990-5000", 1000), parts(&[(990, 999)]));
        assert_eq!(parse("BYTES = 0-0 , 5-9", 1000), parts(&[(0, 0), (5, 9)]));
        // Overlapping and adjacent ranges are merged, in order.
        assert_eq!(parse("bytes=50-99,0-49,40-60", 1000), parts(&[(0, 99)]));
    }

    #[test]
    fn unsatisfiable_and_ignored_ranges() {
        assert_eq!(parse("bytes=1000-", 1000), Ranges::Unsatisfiable);
        assert_eq!(parse("bytes=-0", 1000), Ranges::Unsatisfiable);
        assert_eq!(parse("bytes=0-", 0), Ranges::Unsatisfiable);
        // One satisfiable range is enough.
        assert_eq!(parse("bytes=2000-,0-0", 1000), parts(&[(0, 0)]));
        for ignored in [
            "items=0-1",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=1",
            "bytes=",
            "bytes=--1",
            "bytes=+1-2",
            "0-1",
        ] {
            assert_eq!(parse(ignored, 1000), Ranges::Whole, "{ignored}");
        }
        let many: Vec<String> = (0..20).map(|i| format!("{}-{}", i * 10, i * 10)).collect();
        assert_eq!(
            parse(&format!("bytes={}", many.join(",")), 1000),
            Ranges::Whole
        );
    }

    #[test]
    fn if_range_needs_the_stored_validator() {
        let mut response = HeaderMap::new();
        response.insert(ETAG, HeaderValue::from_static("\"v1\""));
        response.insert(
            LAST_MODIFIED,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(RANGE, HeaderValue::from_static("bytes=0-0"));
            h.insert(IF_RANGE, HeaderValue::from_static(v));
            select(&h, &response, 10)
        };
        assert_eq!(with("\"v1\""), parts(&[(0, 0)]));
        assert_eq!(with("\"v2\""), Ranges::Whole);
        assert_eq!(with("W/\"v1\""), Ranges::Whole);
        assert_eq!(with("Sun, 06 Nov 1994 08:49:37 GMT"), parts(&[(0, 0)]));
        assert_eq!(with("Sun, 06 Nov 1994 08:49:38 GMT"), Ranges::Whole);
        assert_eq!(with("yesterday"), Ranges::Whole);
    }

    #[test]
    fn answers() {
        let body = Bytes::from_static(b"0123456789");
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let one: Response<CacheBody<()>> = answer(parts(&[(2, 4)]), &headers, &body).unwrap();
        assert_eq!(one.status(), 206);
        assert_eq!(one.headers()[CONTENT_RANGE], "bytes 2-4/10");
        assert_eq!(one.headers()[CONTENT_LENGTH], "3");
        let none: Response<CacheBody<()>> = answer(Ranges::Unsatisfiable, &headers, &body).unwrap();
        assert_eq!(none.status(), 416);
        assert_eq!(none.headers()[CONTENT_RANGE], "bytes */10");
        let (ct, multi) = multipart(&[(0, 1), (8, 9)], headers.get(CONTENT_TYPE), &body);
        let ct = ct.to_str().unwrap();
        let boundary = ct.strip_prefix("multipart/byteranges; boundary=").unwrap();
        let text = String::from_utf8(multi.to_vec()).unwrap();
        assert_eq!(
            text,
            format!(
                "\r\n--{boundary}\r\ncontent-type: text/plain\r\ncontent-range: bytes 0-1/10\r\n\r\n01\
                 \r\n--{boundary}\r\ncontent-type: text/plain\r\ncontent-range: bytes 8-9/10\r\n\r\n89\
                 \r\n--{boundary}--\r\n"
            )
        );
        assert!(answer::<()>(Ranges::Whole, &headers, &body).is_none());
    }

    proptest! {
        #[test]
        fn any_range_resolves_inside_the_body(text in "[ -~]{0,60}", len in 0u64..5000) {
            if let Ranges::Parts(parts) = parse(&text, len) {
                let mut end = None;
                for (first, last) in parts {
                    prop_assert!(first <= last && last < len);
                    prop_assert!(end.is_none_or(|e: u64| first > e + 1));
                    end = Some(last);
                }
            }
        }
    }
}
