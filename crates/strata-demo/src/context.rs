//! What every service starts with: its database, its cache (and the shared reference-data
//! cache), and, with Redis, its event relay.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use strata::HybridCache;
use strata_redis::{RedisConfig, RedisStore, RedisStreamLog, StatsReporter};

use crate::db::Db;
use crate::error::Result;
use crate::outbox::Relay;

/// The staleness bound of every service's L1 when there is Redis.
pub const STALENESS_BOUND: Duration = Duration::from_secs(2);

/// How often each instance adds its cache counters to Redis.
const STATS_EVERY: Duration = Duration::from_secs(2);

/// Where a service keeps its data and reaches the others.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The service's name: its cache namespace, its migrations, its consumer group.
    pub name: String,
    /// Its database: `sqlite://path` or `postgres://…`.
    pub database_url: String,
    /// Redis for L2, the invalidation log, leases and event streams; `None`: the embedded
    /// cache, and events stay in the outbox.
    pub redis_url: Option<String>,
}

/// A running service's shared parts.
#[derive(Clone)]
pub struct Context {
    /// The service's name.
    pub name: String,
    /// Its own database.
    pub db: Db,
    /// Its own cache (namespace = its name).
    pub cache: HybridCache,
    /// Reference data every service reads (categories, countries): namespace `reference`,
    /// long TTLs.
    pub reference: HybridCache,
    /// Publishes its outbox (with Redis).
    pub relay: Option<Relay>,
    /// Redis, if any.
    pub redis: Option<RedisConfig>,
    queries: Arc<AtomicU64>,
    reporters: Arc<Vec<StatsReporter>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// Opens the database, builds the caches, starts the relay.
    pub async fn start(config: &ServiceConfig) -> Result<Context> {
        let db = Db::open(&config.database_url, &config.name).await?;
        let redis = config
            .redis_url
            .as_deref()
            .map(RedisConfig::from_url)
            .transpose()?;
        let cache = cache_in(&config.name, redis.as_ref()).await?;
        let reference = cache_in("reference", redis.as_ref()).await?;
        let mut reporters = Vec::new();
        let relay = match &redis {
            Some(r) => {
                let conn = r.connect().await?;
                let relay = Relay::new(db.clone(), conn.clone());
                tokio::spawn(relay.clone().run(Duration::from_millis(200)));
                // Hit rates over every instance, for `strata stats`.
                for c in [&cache, &reference] {
                    reporters.push(StatsReporter::start(c.clone(), conn.clone(), STATS_EVERY));
                }
                Some(relay)
            }
            None => None,
        };
        Ok(Context {
            name: config.name.clone(),
            db,
            cache,
            reference,
            relay,
            redis,
            queries: Arc::default(),
            reporters: Arc::new(reporters),
        })
    }

    /// Counts a database query made for a cache miss (`strata_demo_db_queries_total`, and
    /// [`queries`](Self::queries) for the demo's report).
    pub fn count_query(&self) {
        self.queries.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("strata_demo_db_queries_total", "service" => self.name.clone())
            .increment(1);
    }

    /// At shutdown: lands the caches' fills still in flight (no lease record left for the
    /// other instances to wait out), withdraws from the acknowledgements (no other instance's
    /// write waits for this one) and sends the last counters to Redis.
    pub async fn flush_stats(&self) {
        self.cache.shutdown().await;
        self.reference.shutdown().await;
        for r in self.reporters.iter() {
            let _ = r.flush().await;
        }
    }

    /// Database queries made for cache misses so far.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// After a commit that appended events: publish them now.
    pub fn events_committed(&self) {
        if let Some(relay) = &self.relay {
            relay.notify();
        }
    }
}

/// A cache in `namespace`: on Redis when there is one, else embedded.
async fn cache_in(namespace: &str, redis: Option<&RedisConfig>) -> Result<HybridCache> {
    let builder = HybridCache::builder(namespace);
    let builder = match redis {
        // With Redis, an instance that cannot vouch for its L1 (cut off from the log) reads
        // L2 instead: no value older than the bound is served from L1.
        Some(r) => {
            let store = RedisStore::connect_with(r).await?;
            builder
                .invalidation(RedisStreamLog::sharing(&store))
                .l2(store)
                .max_staleness(STALENESS_BOUND)
        }
        None => builder,
    };
    Ok(builder.build().await?)
}
