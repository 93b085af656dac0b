//! What the gateway answers with, and the small answers it writes itself.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response, StatusCode};
use hyper::body::Incoming;
use strata_http::CacheBody;

/// A response of the gateway: from the cache, streamed from an upstream, or its own.
pub(crate) type Reply = Response<CacheBody<Incoming>>;

/// A short text answer of the gateway's own.
pub(crate) fn plain(status: StatusCode, body: &'static str) -> Reply {
    let mut r = Response::new(CacheBody::full(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

/// `body` as `content_type`.
pub(crate) fn text(
    status: StatusCode,
    body: impl Into<Bytes>,
    content_type: &'static str,
) -> Reply {
    let mut r = Response::new(CacheBody::full(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// `value` as JSON.
pub(crate) fn json(status: StatusCode, value: serde_json::Value) -> Reply {
    text(status, value.to_string(), "application/json")
}
