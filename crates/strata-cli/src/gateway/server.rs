//! The listener: routes requests to their route's cache and upstream, serves the admin API,
//! and shuts down gracefully.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use metrics::Histogram;
use metrics_exporter_prometheus::PrometheusHandle;
use strata::HybridCache;
use strata_http::{CacheBody, HttpCache, HttpCacheService, Purge};
use tokio::net::TcpListener;
use tower_service::Service;
use tracing::Instrument;

use super::admin::{Token, is_admin};
use super::config::PathPrefix;
use super::dashboard::Dashboard;
use super::proxy::{Proxy, RequestBody};

/// What the gateway answers with.
pub(crate) type Reply = Response<CacheBody<Incoming>>;

/// One route: its prefix, and its upstream behind its cache (or not).
pub(crate) struct Route {
    pub(crate) prefix: PathPrefix,
    pub(crate) http: Option<HttpCache>,
    pub(crate) service: RouteService,
    pub(crate) latency: Histogram,
    /// Its requests' span name: `gateway <prefix>`.
    pub(crate) span_name: String,
}

/// A route's service: cached, or a plain proxy.
#[derive(Clone)]
pub(crate) enum RouteService {
    Cached(HttpCacheService<Proxy>),
    Direct(Proxy),
}

/// The running gateway.
pub(crate) struct Gateway {
    /// Longest prefix first.
    pub(crate) routes: Vec<Route>,
    pub(crate) cache: HybridCache,
    pub(crate) token: Token,
    pub(crate) metrics: PrometheusHandle,
    /// `redis` or `embedded`, for the health answer.
    pub(crate) backend: &'static str,
    /// What `/_strata/` shows.
    pub(crate) dashboard: Arc<Dashboard>,
}

fn plain(status: StatusCode, body: &'static str) -> Reply {
    let mut r = Response::new(CacheBody::full(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

impl Gateway {
    fn route(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.prefix.matches(path))
    }

    async fn handle(&self, request: Request<Incoming>, peer: SocketAddr) -> Reply {
        let path = request.uri().path();
        if is_admin(path) {
            let path = path.to_owned();
            let (parts, body) = request.into_parts();
            return self
                .admin(&parts.method, &path, &parts.headers, body, &self.metrics)
                .await;
        }
        let Some(route) = self.route(path) else {
            return plain(StatusCode::NOT_FOUND, "no route\n");
        };
        let span =
            strata_demo::trace::server_span(&route.span_name, request.method(), request.headers());
        let request = request.map(|body| RequestBody::new(body, peer));
        let started = Instant::now();
        let reply = async {
            match route.service.clone() {
                RouteService::Cached(mut service) => match service.call(request).await {
                    Ok(reply) => reply,
                    Err(never) => match never {},
                },
                RouteService::Direct(mut proxy) => match proxy.call(request).await {
                    Ok(response) => response.map(CacheBody::streaming),
                    Err(error) => {
                        eprintln!("gateway: upstream: {error}");
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
            let Some(http) = self.route(&path).and_then(|r| r.http.as_ref()) else {
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
        let any = self.routes.iter().find_map(|r| r.http.as_ref());
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

    /// Serves on `listeners`, one thread with its own single-threaded runtime each (as
    /// nginx runs one worker per core: a connection's requests never hop threads, and no
    /// work-stealing scheduler is woken per request — measured ~10 % more cached hits per
    /// second than one multi-threaded runtime), until SIGINT or SIGTERM; then requests in
    /// flight may finish (at most `drain`).
    pub(crate) async fn serve(
        self: Arc<Self>,
        listeners: Vec<std::net::TcpListener>,
        drain: Duration,
    ) -> std::io::Result<()> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        // Pooled upstream connections live on whichever thread opened them, and serve every
        // thread: no runtime may end while another still has requests in flight.
        let drained = Arc::new(tokio::sync::Barrier::new(listeners.len()));
        let mut threads = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let gateway = self.clone();
            let stopped = stopped.clone();
            let drained = drained.clone();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            threads.push(
                std::thread::Builder::new()
                    .name(format!("gateway-{i}"))
                    .spawn(move || {
                        runtime.block_on(async {
                            gateway.accept(listener, stopped, drain).await;
                            drained.wait().await;
                        });
                    })?,
            );
        }
        shutdown_signal().await;
        eprintln!("gateway: shutting down, finishing requests in flight");
        let _ = stop.send(true);
        tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await
        .map_err(std::io::Error::other)
    }

    /// One thread's accept loop.
    async fn accept(
        self: Arc<Self>,
        listener: std::net::TcpListener,
        mut stopped: tokio::sync::watch::Receiver<bool>,
        drain: Duration,
    ) {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(error) => {
                eprintln!("gateway: listener: {error}");
                return;
            }
        };
        let graceful = GracefulShutdown::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(error) => {
                            // Out of file descriptors and the like: back off rather than spin.
                            eprintln!("gateway: accept: {error}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let gateway = self.clone();
                    let service = service_fn(move |request| {
                        let gateway = gateway.clone();
                        async move { Ok::<_, Infallible>(gateway.handle(request, peer).await) }
                    });
                    // Small answers go out in one write (the body copied behind the head)
                    // rather than a writev of two buffers: measured faster for cached hits.
                    let connection = http1::Builder::new()
                        .writev(false)
                        // A client that trickles its headers is cut off (slowloris).
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(30))
                        .serve_connection(TokioIo::new(stream), service);
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                }
                _ = stopped.changed() => break,
            }
        }
        drop(listener);
        if tokio::time::timeout(drain, graceful.shutdown())
            .await
            .is_err()
        {
            eprintln!("gateway: requests still in flight after {drain:?}; closing");
        }
    }
}

/// `workers` listening sockets on `addr` (the first decides the port when it is 0), with
/// `SO_REUSEPORT` so the kernel spreads connections over them.
pub(crate) fn listeners(
    addr: SocketAddr,
    workers: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Socket, Type};
    let mut out: Vec<std::net::TcpListener> = Vec::with_capacity(workers);
    let mut at = addr;
    for _ in 0..workers.max(1) {
        let socket = Socket::new(Domain::for_address(at), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&at.into())?;
        socket.listen(1024)?;
        let listener: std::net::TcpListener = socket.into();
        at = listener.local_addr()?;
        out.push(listener);
    }
    Ok(out)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
