//! The tower glue: [`HttpCacheLayer`] wraps a service in [`HttpCacheService`].

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::BoxError;
use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_layer::Layer;
use tower_service::Service;

use std::sync::Arc;

use crate::body::CacheBody;
use crate::shared::Shared;

/// A tower [`Layer`] that answers requests from an [`HttpCache`](crate::HttpCache).
///
/// ```no_run
/// # async fn demo(cache: strata::HybridCache) {
/// use axum::{Router, routing::get};
/// use strata_http::{HttpCache, Policy};
///
/// let http = HttpCache::new(cache, Policy::new("catalog"));
/// let app: Router = Router::new()
///     .route("/products/{id}", get(|| async { "a teapot" }))
///     .layer(http.layer());
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct HttpCacheLayer {
    pub(crate) shared: Arc<Shared>,
}

impl<S> Layer<S> for HttpCacheLayer {
    type Service = HttpCacheService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpCacheService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service [`HttpCacheLayer`] makes: requests are answered from the cache or passed to
/// the inner service (the origin). Inner errors become `502 Bad Gateway` (and count as origin
/// failures for `stale-if-error`), so the service itself never fails.
#[derive(Clone, Debug)]
pub struct HttpCacheService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, B, RB> Service<Request<B>> for HttpCacheService<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Default + Send + 'static,
    RB: Body<Data = Bytes> + Send + Unpin + 'static,
    RB::Error: Into<BoxError>,
{
    type Response = Response<CacheBody<RB>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each request (and each background revalidation) drives its own clone of the inner
        // service to readiness when it needs the origin; most never do.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let exchange = crate::exchange::Exchange {
            shared: self.shared.clone(),
            origin: crate::origin::Origin::new(self.inner.clone()),
            types: std::marker::PhantomData,
        };
        Box::pin(async move { Ok(exchange.serve(request).await) })
    }
}
