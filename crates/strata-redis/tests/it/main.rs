//! Integration tests against real `redis-server` processes started by the test harness.

mod checker;
#[cfg(feature = "cluster")]
mod cluster;
mod coherence;
mod compat;
mod hostile_bytes;
mod lease;
mod outage;
mod polyglot;
mod resilience;
mod round_trips;
mod security;
mod sentinel;
mod stats;
mod store;
mod stream;
mod tracking;
mod write_behind;

use std::time::Duration;

use strata::{EntryOptions, HybridCache, HybridCacheBuilder};
use strata_redis::{RedisConfig, RedisStore, RedisStreamLog};
use strata_testkit::RedisServer;

pub(crate) const TTL: Duration = Duration::from_secs(60);
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// One heavy, timing-bound test at a time: a cluster test runs six servers and often three
/// checker processes, a staleness checker four processes (some Python or Node). Two at once on
/// a two-core machine stretched a failover, or a cut-off worker's catch-up, past the bounds
/// the tests assert (seen twice in CI: one read past the 500 ms bound).
pub(crate) static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A cache instance with its own connections (store, backplane) to `redis`.
pub(crate) async fn instance(redis: &RedisServer, options: EntryOptions) -> HybridCache {
    let config = RedisConfig::from_url(&redis.url()).unwrap();
    instance_with(&config, options).await
}

pub(crate) async fn instance_with(config: &RedisConfig, options: EntryOptions) -> HybridCache {
    builder(config, options).await.build().await.unwrap()
}

/// An instance whose writes wait for the other instances' acknowledgements.
pub(crate) async fn acknowledging(config: &RedisConfig) -> HybridCache {
    builder(config, EntryOptions::ttl(TTL))
        .await
        .acknowledged_writes(true)
        .build()
        .await
        .unwrap()
}

/// The builder of [`instance_with`], for tests that set more: the log on the store's
/// connection, as an instance should have it.
pub(crate) async fn builder(config: &RedisConfig, options: EntryOptions) -> HybridCacheBuilder {
    sharing(config, |log| log).await.default_entry(options)
}

/// A cache instance's builder in `svc` on `config` whose log, set up by `log`, shares its
/// store's connection; entries kept for [`TTL`].
async fn sharing(
    config: &RedisConfig,
    log: impl FnOnce(RedisStreamLog) -> RedisStreamLog,
) -> HybridCacheBuilder {
    let store = RedisStore::connect_with(config).await.unwrap();
    HybridCache::builder("svc")
        .invalidation(log(RedisStreamLog::sharing(&store)))
        .l2(store)
        .default_entry(EntryOptions::ttl(TTL))
}

/// A cache instance's builder in `svc` on `config`: its own store, the backplane `log`,
/// entries kept for [`TTL`].
pub(crate) async fn builder_with_log(
    config: &RedisConfig,
    log: impl strata::InvalidationLog,
) -> HybridCacheBuilder {
    HybridCache::builder("svc")
        .l2(RedisStore::connect_with(config).await.unwrap())
        .invalidation(log)
        .default_entry(EntryOptions::ttl(TTL))
}

/// A cache instance in `svc` on `config` over the backplane `log`.
pub(crate) async fn instance_with_log(
    config: &RedisConfig,
    log: impl strata::InvalidationLog,
) -> HybridCache {
    builder_with_log(config, log).await.build().await.unwrap()
}

/// An instance that trusts its L1 only `max_staleness` past its log's last report; the log
/// in `shards` parts, reporting every 100 ms.
pub(crate) async fn bounded_instance(
    config: &RedisConfig,
    max_staleness: Duration,
    shards: usize,
) -> HybridCache {
    sharing(config, |log| {
        log.shards("svc", shards)
            .heartbeat_every(Duration::from_millis(100))
    })
    .await
    .max_staleness(max_staleness)
    .build()
    .await
    .unwrap()
}

/// A plain connection for planting and inspecting bytes, as another service would.
pub(crate) async fn raw_connection(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}
