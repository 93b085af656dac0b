//! The upstream side: a pooled hyper client, one [`Proxy`] service per route.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http::{Request, Response, Uri};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use strata_http::strip_hop_by_hop;
use tower_service::Service;

use crate::config::{Upstream, UpstreamSettings};
use crate::forwarding;

/// A request body: the client's, or none on requests the cache makes for everyone.
#[derive(Debug, Default)]
pub(crate) struct RequestBody(Option<Incoming>);

impl RequestBody {
    pub(crate) fn new(body: Incoming) -> Self {
        RequestBody(Some(body))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.0.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.0
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

/// The pooled client every route shares.
pub(crate) type HttpClient = Client<HttpConnector, RequestBody>;

pub(crate) fn client(settings: &UpstreamSettings) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(settings.connect_timeout.0));
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(60)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(settings.idle_timeout.0)
        .pool_max_idle_per_host(settings.max_idle_per_host)
        .build(connector)
}

/// Forwards a route's requests to its upstream. Cloned per request: one `Arc`.
#[derive(Clone)]
pub(crate) struct Proxy(Arc<ProxyInner>);

struct ProxyInner {
    client: HttpClient,
    upstream: Upstream,
    strip: Option<String>,
    timeout: Duration,
}

impl Proxy {
    pub(crate) fn new(
        client: HttpClient,
        upstream: Upstream,
        strip: Option<&str>,
        timeout: Duration,
    ) -> Self {
        Proxy(Arc::new(ProxyInner {
            client,
            upstream,
            strip: strip.map(Into::into),
            timeout,
        }))
    }

    /// The upstream URI for a request's path and query.
    fn target(&self, uri: &Uri) -> Result<Uri, http::Error> {
        let this = &self.0;
        let mut path = uri.path();
        if let Some(prefix) = this.strip.as_deref().filter(|p| *p != "/") {
            path = path.strip_prefix(prefix).unwrap_or(path);
        }
        let path = if path.is_empty() { "/" } else { path };
        let pq = match uri.query() {
            Some(q) => format!("{}{path}?{q}", this.upstream.base),
            None => format!("{}{path}", this.upstream.base),
        };
        Uri::builder()
            .scheme(this.upstream.scheme.clone())
            .authority(this.upstream.authority.clone())
            .path_and_query(pq)
            .build()
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Service<Request<RequestBody>> for Proxy {
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Incoming>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<RequestBody>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let target = this.target(request.uri())?;
            // `X-Forwarded-*` were set as the request came in (`forwarding::from_client`):
            // what of them a request the cache shares carries is its key policy's call.
            let received = request.version();
            let headers = request.headers_mut();
            strip_hop_by_hop(headers);
            forwarding::via(headers, received);
            let inner = &this.0;
            if let Ok(host) = HeaderValue::from_str(inner.upstream.authority.as_str()) {
                headers.insert(HOST, host);
            }
            // The upstream's span is a child of this gateway's (the client's `traceparent`
            // is this span's parent).
            strata_http::trace_context::inject(request.headers_mut());
            *request.uri_mut() = target;
            *request.version_mut() = http::Version::HTTP_11;
            let response = tokio::time::timeout(inner.timeout, inner.client.request(request))
                .await
                .map_err(|_| {
                    format!(
                        "upstream {} did not answer within {:?}",
                        inner.upstream, inner.timeout
                    )
                })??;
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            forwarding::via(&mut parts.headers, parts.version);
            // The client is answered in its own protocol, whatever the upstream spoke.
            parts.version = http::Version::HTTP_11;
            Ok(Response::from_parts(parts, body))
        })
    }
}
