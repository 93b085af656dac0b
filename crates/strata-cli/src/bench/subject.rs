//! The caches under test: Strata, and the hand-written cache-aside every service starts with.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use strata::{EntryOptions, HybridCache, L1, L2Store, MemoryLog, MemoryStore, WriteMode};
use strata_redis::{RedisConfig, RedisStore, RedisStreamLog};

use super::source::{Record, Source};
use super::workload::Params;

use crate::BoxError;

/// Where L2 lives for a run.
#[derive(Debug, Clone)]
pub(crate) enum L2Target {
    Redis(Box<RedisConfig>),
    /// The embedded in-memory store and log (no Redis available): shared by the run's caches,
    /// as instances share one Redis.
    Embedded(MemoryStore, MemoryLog),
}

impl L2Target {
    pub(crate) fn label(&self) -> &'static str {
        match self {
            L2Target::Redis(_) => "redis",
            L2Target::Embedded(..) => "embedded",
        }
    }

    pub(crate) async fn store(&self) -> Result<Arc<dyn L2Store>, BoxError> {
        Ok(match self {
            L2Target::Redis(config) => Arc::new(RedisStore::connect_with(config).await?),
            L2Target::Embedded(store, _) => Arc::new(store.clone()),
        })
    }
}

/// Which cache a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Choice {
    Strata,
    Naive,
    Both,
}

impl Choice {
    /// The cache a run of this choice measures, as reports and worker flags name it.
    pub(crate) fn name(self) -> &'static str {
        if self == Choice::Naive {
            "naive"
        } else {
            "strata"
        }
    }
}

/// Per-level read counts, comparable between the two caches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) l1_hits: u64,
    pub(crate) l2_hits: u64,
    /// Reads that waited on another read's L2 fetch or load: hits, by the workload's rules.
    pub(crate) waited: u64,
    /// Failed L2 operations (Strata; the naive cache's show as errors to callers).
    pub(crate) l2_errors: u64,
}

impl std::ops::Sub for Counts {
    type Output = Counts;
    fn sub(self, o: Counts) -> Counts {
        Counts {
            l1_hits: self.l1_hits - o.l1_hits,
            l2_hits: self.l2_hits - o.l2_hits,
            waited: self.waited - o.waited,
            l2_errors: self.l2_errors - o.l2_errors,
        }
    }
}

/// A cache under test.
pub(crate) enum Subject {
    Strata(HybridCache),
    Naive(Naive),
}

/// Namespaces of the two subjects, so one Redis can hold both without mixing them.
pub(crate) const STRATA_NS: &str = "bench";
pub(crate) const NAIVE_NS: &str = "bench-naive";

impl Subject {
    /// Strata configured as the workload says: L1 of `l1_entries` with the L1 TTL, L2 with the
    /// L2 TTL, invalidations on a Redis stream and load leases on Redis (or both in-process
    /// when embedded).
    ///
    /// In a `fleet` (W5), writes are acknowledged by every instance before they return, so
    /// that no instance serves what another invalidated.
    pub(crate) async fn strata(
        target: &L2Target,
        params: &Params,
        fleet: bool,
    ) -> Result<Subject, BoxError> {
        let options = EntryOptions::ttl(Duration::from_secs(params.l2_ttl_s))
            .l1_ttl(Duration::from_secs(params.l1_ttl_s));
        let builder = HybridCache::builder(STRATA_NS)
            .l1(L1::with_capacity(params.l1_entries))
            .default_entry(options)
            .acknowledged_writes(fleet)
            .track_foreign_writes(params.track_foreign_writes);
        let cache = match target {
            L2Target::Redis(config) => {
                let store = RedisStore::connect_with(config).await?;
                builder
                    .invalidation(RedisStreamLog::sharing(&store))
                    .l2(store)
                    .build()
                    .await?
            }
            L2Target::Embedded(store, log) => {
                builder
                    .l2(store.clone())
                    .invalidation(log.clone())
                    .build()
                    .await?
            }
        };
        Ok(Subject::Strata(cache))
    }

    pub(crate) async fn naive(target: &L2Target, params: &Params) -> Result<Subject, BoxError> {
        let backend = match target {
            L2Target::Redis(config) => NaiveBackend::Redis(config.connect().await?),
            L2Target::Embedded(store, _) => NaiveBackend::Memory(store.clone()),
        };
        Ok(Subject::Naive(Naive {
            backend,
            ttl: Duration::from_secs(params.l2_ttl_s),
            hits: AtomicU64::new(0),
        }))
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Subject::Strata(_) => "strata",
            Subject::Naive(_) => "naive",
        }
    }

    /// Reads `key` (`keys[key]` is its name), loading from `source` on a miss; returns the
    /// version read.
    pub(crate) async fn read(
        &self,
        source: &'static Source,
        keys: &'static [String],
        key: u32,
    ) -> Result<u64, BoxError> {
        let name = &keys[key as usize];
        match self {
            Subject::Strata(cache) => {
                let record: Arc<Record> = cache.get_or_load(name, move || source.load(key)).await?;
                Ok(record.version)
            }
            Subject::Naive(naive) => naive.read(source, name, key).await,
        }
    }

    /// Invalidates `key` through the cache's own path (the source was updated already).
    pub(crate) async fn invalidate(
        &self,
        keys: &'static [String],
        key: u32,
    ) -> Result<(), BoxError> {
        let name = &keys[key as usize];
        match self {
            Subject::Strata(cache) => Ok(cache.invalidate(name).await?),
            Subject::Naive(naive) => naive.delete(name).await,
        }
    }

    /// Waits for what the cache still has in flight (a miss's fill follows its answer), so a
    /// process does not leave a lease record behind when it exits.
    pub(crate) async fn settle(&self) {
        if let Subject::Strata(cache) = self {
            cache.run_pending_tasks().await;
        }
    }

    /// Leaves the fleet, as a service does before its process exits: the other instances'
    /// writes stop waiting for this one's acknowledgements at once, not when its last sign of
    /// life expires (up to a second per write for three: W5's fleet lost up to 3 s so when one
    /// process finished its share before the others).
    pub(crate) async fn leave(&self) {
        if let Subject::Strata(cache) = self {
            cache.shutdown().await;
        }
    }

    pub(crate) fn counts(&self) -> Counts {
        match self {
            Subject::Strata(cache) => {
                let s = cache.stats();
                Counts {
                    l1_hits: s.l1_hits + s.stale_served,
                    l2_hits: s.l2_hits,
                    waited: s.waited,
                    l2_errors: s.l2_errors,
                }
            }
            Subject::Naive(naive) => Counts {
                l1_hits: 0,
                l2_hits: naive.hits.load(Ordering::Relaxed),
                waited: 0,
                l2_errors: 0,
            },
        }
    }

    /// Whether L2 served every call of an interval whose counts grew by `d`: for Strata, its
    /// breaker is closed, no write waits for replay, and no L2 call failed; for the naive
    /// cache (no L1: every read is an L2 call), it had L2 hits.
    pub(crate) fn l2_serving(&self, d: &Counts) -> bool {
        match self {
            Subject::Strata(cache) => {
                let health = cache.health();
                health.l2 == strata::BreakerState::Closed
                    && health.deferred_writes == 0
                    && d.l2_errors == 0
            }
            Subject::Naive(_) => d.l2_hits > 0,
        }
    }

    /// Removes the subject's keys from L2, so each run starts cold.
    pub(crate) async fn flush(target: &L2Target) -> Result<(), BoxError> {
        let store = target.store().await?;
        for ns in [STRATA_NS, NAIVE_NS] {
            store.clear(ns).await?;
        }
        Ok(())
    }
}

/// The hand-written cache-aside: `GET` → miss → load → `SET … EX`; a write `DEL`s. No L1, no
/// single-flight; one multiplexed connection; values are plain JSON.
pub(crate) struct Naive {
    backend: NaiveBackend,
    ttl: Duration,
    hits: AtomicU64,
}

/// Where the baseline keeps values: plain Redis commands, or the embedded map.
enum NaiveBackend {
    Redis(strata_redis::RedisConnection),
    Memory(MemoryStore),
}

impl Naive {
    async fn read(&self, source: &'static Source, name: &str, key: u32) -> Result<u64, BoxError> {
        let full = strata::keys::data_key(NAIVE_NS, name);
        let cached: Option<Vec<u8>> = match &self.backend {
            NaiveBackend::Redis(conn) => {
                redis::cmd("GET")
                    .arg(&full)
                    .query_async(&mut conn.clone())
                    .await?
            }
            NaiveBackend::Memory(store) => store.get(NAIVE_NS, name).await?.map(|b| b.to_vec()),
        };
        if let Some(bytes) = cached
            && let Ok(record) = serde_json::from_slice::<Record>(&bytes)
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(record.version);
        }
        let record = source.load(key).await?;
        let bytes = serde_json::to_vec(&record)?;
        match &self.backend {
            NaiveBackend::Redis(conn) => {
                redis::cmd("SET")
                    .arg(&full)
                    .arg(bytes)
                    .arg("EX")
                    .arg(self.ttl.as_secs())
                    .exec_async(&mut conn.clone())
                    .await?;
            }
            NaiveBackend::Memory(store) => {
                store
                    .set(
                        NAIVE_NS,
                        name,
                        bytes.into(),
                        self.ttl,
                        &[],
                        WriteMode::REPLACE,
                    )
                    .await?;
            }
        }
        Ok(record.version)
    }

    async fn delete(&self, name: &str) -> Result<(), BoxError> {
        match &self.backend {
            NaiveBackend::Redis(conn) => {
                let full = strata::keys::data_key(NAIVE_NS, name);
                redis::cmd("DEL")
                    .arg(full)
                    .exec_async(&mut conn.clone())
                    .await?;
            }
            NaiveBackend::Memory(store) => drop(store.delete(NAIVE_NS, name, None).await?),
        }
        Ok(())
    }
}
