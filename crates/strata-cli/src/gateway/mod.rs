//! `strata gateway`: a caching reverse proxy — routes by path prefix to upstreams, each
//! route behind a [`strata_http`] cache sharing one [`HybridCache`] (so with Redis, every
//! gateway instance shares responses, collapses misses and honours purges).

mod admin;
mod config;
mod dashboard;
mod follow;
mod proxy;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use metrics_exporter_prometheus::PrometheusBuilder;
use strata::{HybridCache, InvalidationLog, L1};
use strata_http::HttpCache;
use strata_redis::{RedisConfig, RedisStore, RedisStreamLog, StatsReader, StatsReporter};
use tower_layer::Layer;

use config::Config;
use server::{Gateway, Route, RouteService};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `strata gateway`.
#[derive(Args, Debug)]
pub(crate) struct GatewayArgs {
    /// The configuration file (routes, cache policies, Redis, admin token).
    #[arg(long, short, conflicts_with_all = ["upstream"])]
    config: Option<PathBuf>,
    /// Quick form: where to listen.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Quick form: one upstream for every path, policy from its headers.
    #[arg(long, required_unless_present = "config")]
    upstream: Option<String>,
}

/// Room for a response's headers and framing beside its body in one cache entry.
const ENTRY_OVERHEAD: usize = 64 << 10;

pub(crate) async fn run(args: GatewayArgs) -> Result<ExitCode, BoxError> {
    let mut config = match (&args.config, &args.upstream) {
        (Some(path), _) => Config::load(path)?,
        (None, Some(upstream)) => Config::quick(args.listen, upstream)?,
        (None, None) => return Err("give --config FILE, or --upstream URL".into()),
    };
    // The file's `redis` wins; else the environment's; else the embedded cache.
    if config.redis.is_none() {
        config.redis = std::env::var("REDIS_URL").ok();
    }
    let token = admin::Token::new(
        config
            .admin_token
            .clone()
            .or_else(|| std::env::var("STRATA_ADMIN_TOKEN").ok()),
    );
    // Before anything registers a metric: handles made earlier would not be recorded.
    let metrics = PrometheusBuilder::new()
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])?
        .install_recorder()?;
    {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                metrics.run_upkeep();
            }
        });
    }
    let max_body = config
        .routes
        .iter()
        .map(config::RouteConfig::max_body)
        .max()
        .unwrap_or(1 << 20);
    let builder = HybridCache::builder(config.namespace.clone())
        .l1(L1::with_max_bytes(config.l1_size.0))
        .max_value_bytes(max_body + ENTRY_OVERHEAD);
    let mut reporter = None;
    let mut counters_at = None;
    let (cache, log, backend) = match &config.redis {
        Some(url) => {
            let redis = RedisConfig::from_url(url)?;
            let mut log = RedisStreamLog::connect_with(&redis).await?;
            if let Some(shards) = config.log_shards {
                log = log.shards(config.namespace.clone(), shards);
            }
            let cache = builder
                .l2(RedisStore::connect_with(&redis).await?)
                .invalidation(log.clone())
                .build()
                .await?;
            let log: Arc<dyn InvalidationLog> = Arc::new(log);
            // Hit rates over every gateway instance, for `strata stats` and the dashboard.
            reporter = Some(StatsReporter::start(
                cache.clone(),
                redis.connect().await?,
                Duration::from_secs(2),
            ));
            counters_at = Some(StatsReader::connect(&redis).await?);
            (cache, Some(log), "redis")
        }
        None => (builder.build().await?, None, "embedded"),
    };
    let dashboard = dashboard::Dashboard::start(cache.clone(), counters_at);
    match log {
        Some(log) => follow::follow(log, &config.follow, cache.clone(), dashboard.clone()).await?,
        None if !config.follow.is_empty() => eprintln!(
            "gateway: `follow` needs Redis (the embedded cache has no other services to \
                 follow); ignored"
        ),
        None => {}
    }
    let client = proxy::client(&config.upstream);
    let mut routes = Vec::new();
    for route in &config.routes {
        let proxy = proxy::Proxy::new(
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
    let workers = config
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get));
    let listeners = server::listeners(config.listen, workers)
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let listen = listeners[0].local_addr()?;
    eprintln!(
        "strata gateway on http://{listen} — {} route(s), cache: {backend}{}",
        routes.len(),
        if token.is_set() {
            ""
        } else {
            " — admin API locked (no admin token: set admin_token or STRATA_ADMIN_TOKEN)"
        }
    );
    for route in &config.routes {
        eprintln!(
            "  {:<24} → {}{}",
            route.prefix.0,
            route.upstream,
            if route.cached() { "" } else { " (not cached)" }
        );
    }
    let gateway = Arc::new(Gateway {
        routes,
        cache,
        token,
        metrics,
        backend,
        dashboard,
    });
    gateway.serve(listeners, Duration::from_secs(10)).await?;
    if let Some(reporter) = reporter {
        let _ = reporter.flush().await;
    }
    Ok(ExitCode::SUCCESS)
}
