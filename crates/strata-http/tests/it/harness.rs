//! An origin app behind the layer, called as a tower service.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use strata::HybridCache;
use strata_http::{HttpCache, HttpCacheService, Policy};
use strata_redis::{RedisConfig, RedisStore, RedisStreamLog};
use strata_testkit::RedisServer;
use tower_service::Service;

use crate::origin::{Origin, app};

/// One instance of a service: its own cache, the shared origin.
pub(crate) struct Instance {
    pub(crate) http: HttpCache,
    service: HttpCacheService<Router>,
}

/// An answer, read whole.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn x_cache(&self) -> &str {
        self.header("x-cache")
    }
    pub(crate) fn cache_status(&self) -> &str {
        self.header("cache-status")
    }
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

pub(crate) fn origin() -> Arc<Origin> {
    Arc::new(Origin::default())
}

/// An instance on the embedded in-memory cache.
pub(crate) async fn memory(origin: &Arc<Origin>, policy: Policy) -> Instance {
    let cache = HybridCache::builder("shop").build().await.unwrap();
    Instance::new(cache, origin, policy)
}

/// An instance sharing `redis` (L2, leases, invalidation log) with the others.
pub(crate) async fn on_redis(
    redis: &RedisServer,
    origin: &Arc<Origin>,
    policy: Policy,
) -> Instance {
    Instance::new(hybrid(redis, "shop").await, origin, policy)
}

/// A hybrid cache on `redis` in `namespace`.
pub(crate) async fn hybrid(redis: &RedisServer, namespace: &str) -> HybridCache {
    let config = RedisConfig::from_url(&redis.url()).unwrap();
    HybridCache::builder(namespace)
        .l2(RedisStore::connect_with(&config).await.unwrap())
        .invalidation(RedisStreamLog::connect_with(&config).await.unwrap())
        .max_value_bytes(16 << 20)
        .build()
        .await
        .unwrap()
}

impl Instance {
    pub(crate) fn new(cache: HybridCache, origin: &Arc<Origin>, policy: Policy) -> Instance {
        let http = HttpCache::new(cache, policy);
        let service = tower_layer::Layer::layer(&http.layer(), app(origin.clone()));
        Instance { http, service }
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        self.send(Request::get(path).body(Body::empty()).unwrap())
            .await
    }

    pub(crate) async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut request = Request::get(path);
        for (n, v) in headers {
            request = request.header(*n, *v);
        }
        self.send(request.body(Body::empty()).unwrap()).await
    }

    pub(crate) async fn call(&self, method: Method, path: &str) -> Reply {
        self.send(
            Request::builder()
                .method(method)
                .uri(path)
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    pub(crate) async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.service.clone().call(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}
