//! Building a gateway from its configuration: the cache (Redis or the embedded one), the
//! routes, the admin API, the dashboard and the follow tasks.

use std::fmt;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use strata::{HybridCache, InvalidationLog, L1};
use strata_redis::{RedisConfig, RedisStore, RedisStreamLog, StatsReader, StatsReporter};

use crate::admin::{Admin, Token};
use crate::config::{Config, RouteConfig};
use crate::dashboard::Dashboard;
use crate::error::Error;
use crate::follow::follow;
use crate::gateway::Gateway;
use crate::handler::Handler;
use crate::routes::Routes;

/// Room for a response's headers and framing beside its body in one cache entry.
const ENTRY_OVERHEAD: usize = 64 << 10;

/// How long requests in flight may finish after a shutdown, by default.
const DEFAULT_DRAIN: Duration = Duration::from_secs(10);

/// Latency buckets of `strata_gateway_request_duration_seconds` and the cache's histograms.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Builds a [`Gateway`]: the configuration, and how it fits the program around it.
pub struct GatewayBuilder {
    config: Config,
    metrics: Metrics,
    drain: Duration,
}

/// Where `/metrics` comes from.
enum Metrics {
    /// Install a Prometheus recorder for the process (if none is installed yet).
    Install,
    /// The program's own.
    Handle(PrometheusHandle),
    /// None: `/metrics` answers 404.
    Off,
}

impl fmt::Debug for GatewayBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayBuilder")
            .field("config", &self.config)
            .field("drain", &self.drain)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A builder for a gateway configured by `config`.
    pub fn builder(config: Config) -> GatewayBuilder {
        GatewayBuilder {
            config,
            metrics: Metrics::Install,
            drain: DEFAULT_DRAIN,
        }
    }

    /// The gateway `config` describes, with the defaults of [`GatewayBuilder`]: connects to
    /// Redis (or builds the embedded cache), starts following the configured namespaces.
    pub async fn from_config(config: Config) -> Result<Gateway, Error> {
        Gateway::builder(config).build().await
    }
}

impl GatewayBuilder {
    /// Serves `/metrics` from the program's own Prometheus recorder instead of installing
    /// one (the default installs one for the process, unless one is installed already).
    #[must_use]
    pub fn prometheus(mut self, handle: PrometheusHandle) -> Self {
        self.metrics = Metrics::Handle(handle);
        self
    }

    /// No `/metrics` endpoint, and no recorder installed: for a program that exports its
    /// metrics some other way.
    #[must_use]
    pub fn without_metrics_endpoint(mut self) -> Self {
        self.metrics = Metrics::Off;
        self
    }

    /// How long requests in flight may finish after a shutdown (default 10 s).
    #[must_use]
    pub fn drain(mut self, drain: Duration) -> Self {
        self.drain = drain;
        self
    }

    /// Builds the gateway: the cache, its routes and admin API, and the tasks that follow
    /// other services' invalidations and sample the dashboard's counters. Needs a Tokio
    /// runtime.
    pub async fn build(self) -> Result<Gateway, Error> {
        let GatewayBuilder {
            config,
            metrics,
            drain,
        } = self;
        // Before anything registers a metric: handles made earlier would not be recorded.
        let metrics = match metrics {
            Metrics::Install => install_recorder()?,
            Metrics::Handle(handle) => Some(handle),
            Metrics::Off => None,
        };
        let max_body = config
            .routes
            .iter()
            .map(RouteConfig::max_body)
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
                let store = RedisStore::connect_with(&redis).await?;
                let mut log = RedisStreamLog::sharing(&store);
                if let Some(shards) = config.log_shards {
                    log = log.shards(config.namespace.clone(), shards);
                }
                let cache = builder
                    .l2(store)
                    .invalidation(log.clone())
                    .track_foreign_writes(config.track_foreign_writes)
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
            // The embedded cache refuses it with why (nothing outside writes to it).
            None => (
                builder
                    .track_foreign_writes(config.track_foreign_writes)
                    .build()
                    .await?,
                None,
                "embedded",
            ),
        };
        let dashboard = Dashboard::start(cache.clone(), counters_at);
        match log {
            Some(log) => follow(log, &config.follow, cache.clone(), dashboard.clone()).await?,
            None if !config.follow.is_empty() => tracing::warn!(
                "gateway: `follow` needs Redis (the embedded cache has no other services to \
                 follow); ignored"
            ),
            None => {}
        }
        let routes = Routes::build(&config, &cache)?;
        let token = Token::new(config.admin_token.clone());
        let summary = summary(&config, backend, token.is_set());
        let workers = config.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        });
        Ok(Gateway {
            handler: Arc::new(Handler {
                routes,
                admin: Admin {
                    token,
                    metrics,
                    dashboard,
                    cache: cache.clone(),
                    backend,
                },
            }),
            cache,
            reporter,
            listen: config.listen,
            admin_listen: config.admin_listen(),
            workers,
            drain,
            summary,
        })
    }
}

/// A Prometheus recorder for the process, and its upkeep task; `None` if the program
/// installed a recorder of its own already.
fn install_recorder() -> Result<Option<PrometheusHandle>, Error> {
    let recorder = PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .map_err(|e| Error::Metrics(e.to_string()))?
        .build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        tracing::info!("gateway: the program has its own metrics recorder; no /metrics here");
        return Ok(None);
    }
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    Ok(Some(handle))
}

/// The routes, the cache behind them and the admin API's state, one route per line.
fn summary(config: &Config, backend: &str, token_set: bool) -> String {
    let mut s = format!("{} route(s), cache: {backend}", config.routes.len());
    if config.admin_listen().is_none() {
        s.push_str(" — no admin listener (admin_listen = \"off\")");
    } else if !token_set {
        s.push_str(" — admin API locked (no admin token: set admin_token or STRATA_ADMIN_TOKEN)");
    }
    for route in &config.routes {
        let _ = write!(
            s,
            "\n  {:<24} → {}{}",
            route.prefix.0,
            route.upstream,
            if route.cached() { "" } else { " (not cached)" }
        );
    }
    s
}
