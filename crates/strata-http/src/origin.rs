//! Going to the origin: calling the inner service, reading what may be stored, and deciding
//! how long to keep it.

use std::time::{Duration, SystemTime};

use crate::BoxError;
use bytes::{Bytes, BytesMut};
use http::header::{ETAG, LAST_MODIFIED};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use http_body_util::BodyExt;
use tower_service::Service;

use crate::freshness::{current_age, freshness_lifetime};
use crate::policy::{Policy, ResponseDirectives};
use crate::storable::{NotStored, storable_with};
use crate::stored::{StoredResponse, unix_us};

/// The inner service, called once per trip.
#[derive(Clone)]
pub(crate) struct Origin<S> {
    service: S,
}

/// The head of a request to the origin.
#[derive(Clone, Debug)]
pub(crate) struct Head {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    /// The client request's extensions, for requests passed on as they came (none on
    /// requests the cache makes for everyone).
    pub(crate) extensions: http::Extensions,
}

impl<S> Origin<S> {
    pub(crate) fn new(service: S) -> Self {
        Origin { service }
    }

    /// Sends `head` with `body`; an inner error is a failed trip.
    pub(crate) async fn send<B, RB>(mut self, head: Head, body: B) -> Result<Response<RB>, BoxError>
    where
        S: Service<Request<B>, Response = Response<RB>>,
        S::Error: Into<BoxError>,
    {
        let mut request = Request::new(body);
        *request.method_mut() = head.method;
        *request.uri_mut() = head.uri;
        *request.version_mut() = head.version;
        *request.headers_mut() = head.headers;
        *request.extensions_mut() = head.extensions;
        std::future::poll_fn(|cx| self.service.poll_ready(cx))
            .await
            .map_err(Into::into)?;
        self.service.call(request).await.map_err(Into::into)
    }
}

/// A body read up to a cap.
pub(crate) enum Read<B> {
    /// All of it.
    Whole(Bytes),
    /// Over the cap: what was read and the rest, still to stream.
    Over(Bytes, B),
}

/// Reads `body` whole if it is at most `cap` bytes (trailers are dropped).
pub(crate) async fn read_capped<B>(mut body: B, cap: usize) -> Result<Read<B>, BoxError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    if body.size_hint().lower() > cap as u64 {
        return Ok(Read::Over(Bytes::new(), body));
    }
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.map_err(Into::into)?.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() > cap {
                return Ok(Read::Over(buf.freeze(), body));
            }
        }
    }
    Ok(Read::Whole(buf.freeze()))
}

/// How a response is to be kept, worked out when it arrives.
#[derive(Debug, Clone)]
pub(crate) struct Keep {
    pub(crate) lifetime: Duration,
    pub(crate) initial_age: Duration,
    pub(crate) swr: Duration,
    pub(crate) sie: Duration,
    pub(crate) no_cache: bool,
    pub(crate) must_revalidate: bool,
    /// How long the cache holds it: fresh time left plus the longest stale use.
    pub(crate) hold: Duration,
}

/// Whether (and how long) the response to a `GET` with `request` headers may be stored.
pub(crate) fn keep(
    policy: &Policy,
    request: &HeaderMap,
    status: StatusCode,
    response: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Result<Keep, NotStored> {
    let ResponseDirectives { cc, targeted } = policy.directives(response);
    match storable_with(
        &Method::GET,
        request,
        status,
        response,
        &cc,
        targeted,
        policy.opt_ins,
    ) {
        Err(NotStored::NoFreshness) if policy.ttl.or(policy.default_ttl).is_some() => {}
        other => other?,
    }
    let lifetime = policy
        .ttl
        .or_else(|| {
            if targeted {
                cc.s_maxage.or(cc.max_age).map(Duration::from_secs)
            } else {
                freshness_lifetime(&cc, response)
            }
        })
        .or(policy.default_ttl)
        .unwrap_or(Duration::ZERO);
    let initial_age = current_age(response, request_time, response_time, response_time);
    let secs = |s: Option<u64>| s.map(Duration::from_secs);
    let must_revalidate = cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some();
    // Never served stale past `must-revalidate`, `proxy-revalidate`, `s-maxage` or
    // `no-cache` (RFC 9111 §4.2.4: an explicit directive forbids it), not even where a
    // `stale-if-error` of the origin's, the request's or the route's would allow it.
    let no_stale = must_revalidate || cc.no_cache;
    let swr = secs(cc.stale_while_revalidate)
        .or(policy.swr)
        .filter(|_| !no_stale)
        .unwrap_or_default();
    let sie = secs(cc.stale_if_error)
        .or(policy.sie)
        .filter(|_| !no_stale)
        .unwrap_or_default();
    let validator = response.contains_key(ETAG) || response.contains_key(LAST_MODIFIED);
    let revalidation = if validator {
        policy.keep
    } else {
        Duration::ZERO
    };
    let hold =
        (lifetime.saturating_sub(initial_age) + swr.max(sie).max(revalidation)).min(policy.max_ttl);
    // Stale on arrival with nothing to revalidate with: storing it would help no one.
    if hold.is_zero() || (hold < Duration::from_secs(1) && !validator) {
        return Err(NotStored::NoFreshness);
    }
    Ok(Keep {
        lifetime,
        initial_age,
        swr,
        sie,
        no_cache: cc.no_cache,
        must_revalidate,
        hold,
    })
}

impl Keep {
    /// The stored form of a response kept this way.
    pub(crate) fn store(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: Bytes,
        response_time: SystemTime,
        vary: Option<(Vec<String>, String)>,
        tags: Vec<String>,
    ) -> StoredResponse {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let mut headers = StoredResponse::header_list(headers);
        if status == StatusCode::OK && !headers.iter().any(|(n, _)| n == "accept-ranges") {
            // Ranges of it are answered from the cache (`range.rs`).
            headers.push(("accept-ranges".into(), Bytes::from_static(b"bytes")));
        }
        StoredResponse {
            status: status.as_u16(),
            headers,
            body,
            response_time: unix_us(response_time),
            initial_age: ms(self.initial_age),
            lifetime: ms(self.lifetime),
            swr: ms(self.swr),
            sie: ms(self.sie),
            no_cache: self.no_cache,
            must_revalidate: self.must_revalidate,
            vary,
            tags,
            map: Default::default(),
        }
    }
}

/// Statuses that count as the origin failing, for `stale-if-error` (RFC 5861 §4).
pub(crate) fn is_failure(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}
