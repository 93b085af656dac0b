//! The routes: by longest path prefix, each an upstream behind its cache (or not), and purges
//! across them.

use http::StatusCode;
use metrics::Histogram;
use strata::HybridCache;
use strata_http::{CacheBody, HttpCache, HttpCacheService, Purge};
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;

use crate::config::{Config, PathPrefix};
use crate::proxy::{self, Proxy, RequestBody};
use crate::reply::{Reply, plain};

/// One route: its prefix, and its upstream behind its cache (or not).
pub(crate) struct Route {
    pub(crate) prefix: PathPrefix,
    pub(crate) http: Option<HttpCache>,
    service: RouteService,
    latency: Histogram,
    /// Its requests' span name: `gateway <prefix>`.
    span_name: String,
}

/// A route's service: cached, or a plain proxy.
#[derive(Clone)]
enum RouteService {
    Cached(HttpCacheService<Proxy>),
    Direct(Proxy),
}

/// Every route, longest prefix first.
pub(crate) struct Routes(Vec<Route>);

impl Routes {
    /// The routes of `config`, cached ones sharing `cache`.
    pub(crate) fn build(config: &Config, cache: &HybridCache) -> Result<Routes, strata::Error> {
        let client = proxy::client(&config.upstream);
        let mut routes = Vec::with_capacity(config.routes.len());
        for route in &config.routes {
            let proxy = Proxy::new(
                client.clone(),
                route.upstream.clone(),
                route.strip_prefix.then_some(route.prefix.0.as_str()),
                config.upstream.timeout.0,
            );
            let (http, service) = if route.cached() {
                let http = HttpCache::new(cache.clone(), route.policy()?);
                let service = http.layer().layer(proxy);
                (Some(http), RouteService::Cached(service))
            } else {
                (None, RouteService::Direct(proxy))
            };
            routes.push(Route {
                prefix: route.prefix.clone(),
                http,
                service,
                latency: metrics::histogram!("strata_gateway_request_duration_seconds", "route" => route.name().to_owned()),
                span_name: format!("gateway {}", route.prefix.0),
            });
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.0.len()));
        Ok(Routes(routes))
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// The route serving `path`.
    pub(crate) fn find(&self, path: &str) -> Option<&Route> {
        self.0.iter().find(|r| r.prefix.matches(path))
    }

    /// Serves `request` through its route, in a server span continuing the caller's trace.
    pub(crate) async fn serve(&self, request: http::Request<RequestBody>) -> Reply {
        let Some(route) = self.find(request.uri().path()) else {
            return plain(StatusCode::NOT_FOUND, "no route\n");
        };
        let span = strata_http::trace_context::server_span(
            &route.span_name,
            request.method(),
            request.headers(),
        );
        let started = std::time::Instant::now();
        let reply = async {
            match route.service.clone() {
                RouteService::Cached(mut service) => match service.call(request).await {
                    Ok(reply) => reply,
                    Err(never) => match never {},
                },
                RouteService::Direct(mut proxy) => match proxy.call(request).await {
                    Ok(response) => response.map(CacheBody::streaming),
                    Err(error) => {
                        tracing::warn!(%error, "upstream");
                        plain(StatusCode::BAD_GATEWAY, "502 Bad Gateway\n")
                    }
                },
            }
        }
        .instrument(span.clone())
        .await;
        route.latency.record(started.elapsed().as_secs_f64());
        if !span.is_disabled() {
            span.record("http.response.status_code", reply.status().as_u16());
            if let Some(cache) = reply.headers().get("x-cache").and_then(|v| v.to_str().ok()) {
                span.record("cache", cache);
            }
        }
        reply
    }

    /// Purges across routes: each URL through the route that serves it (its key policy),
    /// tags and prefixes once (routes share the cache). Every target is checked first.
    pub(crate) async fn purge(&self, purge: &Purge) -> strata::Result<usize> {
        let mut by_route: Vec<(&HttpCache, Purge)> = Vec::new();
        for url in &purge.urls {
            let path = url
                .parse::<http::Uri>()
                .map_err(|e| strata::Error::Config(format!("purge url {url:?}: {e}")))?
                .path()
                .to_owned();
            let Some(http) = self.find(&path).and_then(|r| r.http.as_ref()) else {
                return Err(strata::Error::Config(format!(
                    "purge url {url:?}: no cached route serves it"
                )));
            };
            match by_route.iter_mut().find(|(h, _)| std::ptr::eq(*h, http)) {
                Some((_, p)) => p.urls.push(url.clone()),
                None => by_route.push((
                    http,
                    Purge {
                        urls: vec![url.clone()],
                        soft: purge.soft,
                        ..Purge::default()
                    },
                )),
            }
        }
        let any = self.0.iter().find_map(|r| r.http.as_ref());
        let rest = Purge {
            urls: Vec::new(),
            ..purge.clone()
        };
        if let Some(any) = any {
            any.purge_tags(&rest)?;
            for (http, p) in &by_route {
                http.purge_tags(p)?;
            }
        }
        let mut purged = 0;
        for (http, p) in &by_route {
            purged += http.purge(p).await?;
        }
        if let Some(any) = any
            && !rest.is_empty()
        {
            purged += any.purge(&rest).await?;
        }
        Ok(purged)
    }
}
