//! The upstream side: a pooled hyper client, one [`Proxy`] service per route.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http::{HeaderName, Request, Response, Uri};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use strata_http::{SharedRequest, strip_hop_by_hop};
use tower_service::Service;

use super::config::{Upstream, UpstreamSettings};

/// A request body: the client's, or none (requests the cache makes on its own).
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

/// The client's address, for `X-Forwarded-For` on requests that are not shared.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub(crate) SocketAddr);

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

/// Forwards a route's requests to its upstream.
#[derive(Clone)]
pub(crate) struct Proxy {
    client: HttpClient,
    upstream: Arc<Upstream>,
    strip: Option<Arc<str>>,
    timeout: Duration,
}

impl Proxy {
    pub(crate) fn new(
        client: HttpClient,
        upstream: Upstream,
        strip: Option<&str>,
        timeout: Duration,
    ) -> Self {
        Proxy {
            client,
            upstream: Arc::new(upstream),
            strip: strip.map(Into::into),
            timeout,
        }
    }

    /// The upstream URI for a request's path and query.
    fn target(&self, uri: &Uri) -> Result<Uri, http::Error> {
        let mut path = uri.path();
        if let Some(prefix) = self.strip.as_deref().filter(|p| *p != "/") {
            path = path.strip_prefix(prefix).unwrap_or(path);
        }
        let path = if path.is_empty() { "/" } else { path };
        let pq = match uri.query() {
            Some(q) => format!("{}{path}?{q}", self.upstream.base),
            None => format!("{}{path}", self.upstream.base),
        };
        Uri::builder()
            .scheme(self.upstream.scheme.clone())
            .authority(self.upstream.authority.clone())
            .path_and_query(pq)
            .build()
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

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
            let shared = request.extensions().get::<SharedRequest>().is_some();
            let client_addr = request.extensions().get::<ClientAddr>().copied();
            let headers = request.headers_mut();
            strip_hop_by_hop(headers);
            let original_host = headers.remove(HOST);
            // Requests the cache may share carry only keyed input: nothing about this client.
            if !shared {
                if let Some(ClientAddr(addr)) = client_addr {
                    let ip = addr.ip().to_string();
                    let forwarded =
                        match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
                            Some(earlier) => format!("{earlier}, {ip}"),
                            None => ip,
                        };
                    if let Ok(v) = HeaderValue::from_str(&forwarded) {
                        headers.insert(X_FORWARDED_FOR, v);
                    }
                }
                if let Some(host) = original_host {
                    headers.insert(X_FORWARDED_HOST, host);
                }
                headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
            }
            if let Ok(host) = HeaderValue::from_str(this.upstream.authority.as_str()) {
                headers.insert(HOST, host);
            }
            *request.uri_mut() = target;
            *request.version_mut() = http::Version::HTTP_11;
            let response = tokio::time::timeout(this.timeout, this.client.request(request))
                .await
                .map_err(|_| {
                    format!(
                        "upstream {} did not answer within {:?}",
                        this.upstream, this.timeout
                    )
                })??;
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Ok(Response::from_parts(parts, body))
        })
    }
}
