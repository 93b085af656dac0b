//! `HybridCacheBuilder`: typed configuration, validated once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Duration;

use tokio::sync::watch;

use crate::acks::Acknowledged;
use crate::cache::HybridCache;
use crate::clock::{Clock, SystemClock};
use crate::codec::Codec;
use crate::deferred::Deferred;
use crate::ends::LoadEnds;
use crate::engine::{Engine, acker, follower, housekeeper, replay};
use crate::error::{Error, Result};
use crate::fence::Fence;
use crate::invalidation::{Invalidation, InvalidationLog, MemoryLog};
use crate::keys::validate_namespace;
use crate::l1::L1;
use crate::lease::Lease;
use crate::options::EntryOptions;
use crate::resilience::{Compartment, Guard, GuardedStore, Resilience};
use crate::single_flight::Flights;
use crate::stats::Counters;
use crate::store::{L2Store, MemoryStore};
use crate::write_behind::WriteQueue;

impl HybridCache {
    /// Starts building a cache for `namespace` (the service's name: keys become
    /// `<namespace>:<key>` in L2).
    pub fn builder(namespace: impl Into<String>) -> HybridCacheBuilder {
        HybridCacheBuilder::new(namespace.into())
    }
}

/// How long a write waits for the fleet's acknowledgements without a staleness bound.
const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(1);

/// Builds a [`HybridCache`]. Every setting has a default; see each method.
#[must_use = "a builder does nothing until `build` is awaited"]
pub struct HybridCacheBuilder {
    namespace: String,
    l1: L1,
    l2: Option<Arc<dyn L2Store>>,
    log: Option<Arc<dyn InvalidationLog>>,
    lease: Option<Arc<dyn Lease>>,
    lease_ttl: Duration,
    max_staleness: Option<Duration>,
    acknowledged_writes: bool,
    track_foreign_writes: bool,
    codec: Codec,
    raw: bool,
    defaults: EntryOptions,
    max_key_bytes: usize,
    max_value_bytes: usize,
    clock: Arc<dyn Clock>,
    resilience: Resilience,
    write_queue: Option<Arc<dyn WriteQueue>>,
}

impl std::fmt::Debug for HybridCacheBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HybridCacheBuilder")
            .field("namespace", &self.namespace)
            .field("l1", &self.l1)
            .field("l2", &self.l2)
            .field("log", &self.log)
            .field("lease", &self.lease)
            .field("lease_ttl", &self.lease_ttl)
            .field("max_staleness", &self.max_staleness)
            .field("acknowledged_writes", &self.acknowledged_writes)
            .field("track_foreign_writes", &self.track_foreign_writes)
            .field("codec", &self.codec)
            .field("raw", &self.raw)
            .field("defaults", &self.defaults)
            .field("resilience", &self.resilience)
            .finish_non_exhaustive()
    }
}

impl HybridCacheBuilder {
    pub(crate) fn new(namespace: String) -> Self {
        HybridCacheBuilder {
            namespace,
            l1: L1::default(),
            l2: None,
            log: None,
            lease: None,
            lease_ttl: Duration::from_secs(10),
            max_staleness: None,
            acknowledged_writes: false,
            track_foreign_writes: false,
            codec: Codec::default(),
            raw: false,
            defaults: EntryOptions::default(),
            max_key_bytes: 1024,
            max_value_bytes: 4 * 1024 * 1024,
            clock: Arc::new(SystemClock),
            resilience: Resilience::default(),
            write_queue: None,
        }
    }

    /// L1 settings (default: 10,000 entries).
    pub fn l1(mut self, l1: L1) -> Self {
        self.l1 = l1;
        self
    }

    /// The shared L2 store (default: a private [`MemoryStore`]).
    pub fn l2(mut self, store: impl L2Store) -> Self {
        self.l2 = Some(Arc::new(store));
        self
    }

    /// The invalidation log that keeps instances' L1s coherent (default: a private
    /// [`MemoryLog`], which reaches only this cache).
    pub fn invalidation(mut self, log: impl InvalidationLog) -> Self {
        self.log = Some(Arc::new(log));
        self
    }

    /// The lease taken to refresh a value L2 still holds (stale-while-revalidate, fail-safe,
    /// early refresh), so that one instance reloads it while the others keep serving it.
    /// Default: the L2 store's own ([`L2Store::lease`]; Redis and [`MemoryStore`] keep them).
    /// A miss needs none of it: it takes its load lease in the data key, with the read
    /// ([`L2Store::read`]).
    pub fn lease(mut self, lease: impl Lease) -> Self {
        self.lease = Some(Arc::new(lease));
        self
    }

    /// How long a lease holds (default 10 s): the longest other instances wait for a holder
    /// before one of them loads too. Set it above the loader's usual worst case: a fill that
    /// comes after its lease expired is not stored (the lease is its fence), and a holder that
    /// dies blocks its key's waiters for at most this long.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Bounds how stale an L1 hit can be (default: unbounded — L1 trusts the log). While the
    /// invalidation log has not reported this instance caught up for longer than `max` — its
    /// connection is down, or it is behind — L1 hits are passed over (counted in
    /// [`Stats::l1_bypassed`](crate::Stats::l1_bypassed)) and reads go to L2 until it has
    /// caught up. Needs a log that reports ([`InvalidationLog::heartbeat`], e.g.
    /// `strata_redis::RedisStreamLog`), with a heartbeat of at most half of `max`.
    pub fn max_staleness(mut self, max: Duration) -> Self {
        self.max_staleness = Some(max);
        self
    }

    /// Writes return only once every other live instance of the namespace has applied them
    /// (default: off — a write returns once it is in L2 and the log, and other instances drop
    /// their copies as their followers read it, a millisecond or so later). With it, a read
    /// that starts after `set`, `invalidate`, `invalidate_tag` or `clear` returned never sees
    /// the old value, on any instance.
    ///
    /// Each instance acknowledges what its follower applied (one small write to the log's
    /// store per batch, and one per heartbeat as a sign of life); a write waits for the
    /// acknowledgements of the instances alive, looking at them again as soon as each look
    /// returns for the first few looks (they come a round trip or two after the write), then
    /// every millisecond. An instance that cannot acknowledge (cut off, frozen) holds writes
    /// up for at most [`max_staleness`](Self::max_staleness) (one second without it) — after
    /// which, with a staleness bound, it no longer trusts its L1 anyway; writes it held up are
    /// counted in
    /// [`Stats::writes_unacknowledged`](crate::Stats::writes_unacknowledged). Every instance of
    /// the namespace must enable it — the Python and Node clients take part alike
    /// (`acknowledged_writes=True`, `acknowledgedWrites: true`; `docs/protocol.md` §4). A write
    /// whose shared half cannot be done now (L2 or the log unreachable from here) is deferred
    /// and replayed as usual, but returns
    /// [`Error::Unavailable`]: the others were not told. Needs a log that takes
    /// acknowledgements ([`InvalidationLog::acknowledges`]: `strata_redis::RedisStreamLog`,
    /// [`MemoryLog`]).
    pub fn acknowledged_writes(mut self, on: bool) -> Self {
        self.acknowledged_writes = on;
        self
    }

    /// Drops L1 copies that writers outside Strata's protocol changed (default: off) — a
    /// legacy service's `SET` or `DEL` on the same keys, a migration script, an operator with
    /// `redis-cli`, a plain cache-aside in another stack.
    ///
    /// The L2 store reports every write to this namespace's data keys that it did not make
    /// itself ([`L2Store::track_writes`]; Redis: server-assisted client-side caching,
    /// `CLIENT TRACKING … BCAST … NOLOOP`), and each such key leaves L1 as an invalidation
    /// from the log would, loads of it in flight included. Without it, an L1 copy outlives a
    /// foreign write until its L1 TTL.
    ///
    /// It costs: the server cannot tell other instances' writes (and, on Redis 7.0 and Valkey
    /// 8.1, what this instance's own scripts write: fills on Redis 7, invalidations,
    /// write-throughs) from foreign ones, so each also costs the key an L2 read. On W1 that
    /// was 7–14 % of the throughput and 18–30 % of the server's CPU (BENCHMARKS.md): off by
    /// default.
    ///
    /// What it does not give: a foreign write is seen once its report arrives (about a
    /// round trip), not before the writer's `DEL` returns as an acknowledged write would; a
    /// lost report stream drops all of L1 ([`LogEvent::Resync`](crate::invalidation::LogEvent::Resync)).
    /// A fill never overwrites a foreign write either way: fills are fenced by what their
    /// read found ([`Fence`](crate::Fence)). Fails at [`build`](Self::build) if the L2
    /// store cannot tell (the embedded store: nothing outside the process writes to it).
    pub fn track_foreign_writes(mut self, on: bool) -> Self {
        self.track_foreign_writes = on;
        self
    }

    /// The codec for L2 values (default: JSON).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Store bare JSON values in L2, without the envelope, so services in other languages can
    /// `GET <namespace>:<key>` and read them. Raw entries carry no soft TTL, fail-safe window
    /// or tags of their own in L2 (tags are still indexed). Requires the JSON codec.
    pub fn raw_values(mut self, raw: bool) -> Self {
        self.raw = raw;
        self
    }

    /// The entry options of calls that pass none.
    pub fn default_entry(mut self, options: EntryOptions) -> Self {
        self.defaults = options;
        self
    }

    /// Longest key (and tag) accepted, in bytes (default 1 KiB).
    pub fn max_key_bytes(mut self, max: usize) -> Self {
        self.max_key_bytes = max;
        self
    }

    /// Largest encoded value written to L2, in bytes (default 4 MiB).
    pub fn max_value_bytes(mut self, max: usize) -> Self {
        self.max_value_bytes = max;
        self
    }

    /// Timeouts, retries, circuit breakers and bulkheads around the shared tier and the loader
    /// (default: [`Resilience::default`]).
    pub fn resilience(mut self, resilience: Resilience) -> Self {
        self.resilience = resilience;
        self
    }

    /// The durable queue of [`HybridCache::write_behind`] (default: none, and write-behind
    /// fails with [`Error::Config`]); e.g. `strata_redis::RedisWriteQueue`.
    pub fn write_queue(mut self, queue: impl WriteQueue) -> Self {
        self.write_queue = Some(Arc::new(queue));
        self
    }

    /// The clock (default: the system clock). Tests use [`ManualClock`](crate::ManualClock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Validates the configuration, subscribes to the invalidation log and starts the
    /// background tasks. Must run inside a Tokio runtime.
    ///
    /// When this returns, every invalidation published later by another instance reaches this
    /// cache.
    pub async fn build(self) -> Result<HybridCache> {
        validate_namespace(&self.namespace)?;
        if self.raw && self.codec != Codec::Json {
            return Err(Error::Config("raw values require the JSON codec".into()));
        }
        if self.max_key_bytes == 0 || self.max_value_bytes == 0 {
            return Err(Error::Config("size limits must be above zero".into()));
        }
        if self.defaults.ttl.is_zero() {
            return Err(Error::Config("the default TTL must be above zero".into()));
        }
        if self.lease_ttl.is_zero() {
            return Err(Error::Config("the lease TTL must be above zero".into()));
        }
        if self.l2.is_some() && self.log.is_none() {
            tracing::warn!(
                namespace = %self.namespace,
                "a shared L2 without a shared invalidation log: other instances will not drop their L1 copies"
            );
        }

        crate::clock::calibrate().await;
        let log = self.log.unwrap_or_else(|| Arc::new(MemoryLog::new()));
        if let Some(max) = self.max_staleness {
            match log.heartbeat() {
                Some(beat) if beat * 2 <= max => {}
                Some(beat) => {
                    return Err(Error::Config(format!(
                        "max_staleness {max:?} must be at least twice the log's heartbeat {beat:?}"
                    )));
                }
                None => {
                    return Err(Error::Config(
                        "max_staleness needs an invalidation log that reports progress (e.g. RedisStreamLog)".into(),
                    ));
                }
            }
        }
        if self.acknowledged_writes && !log.acknowledges() {
            return Err(Error::Config(
                "acknowledged_writes needs an invalidation log that takes acknowledgements (e.g. RedisStreamLog)".into(),
            ));
        }
        let l1 = self.l1.build()?;
        let events = log.follow(&self.namespace).await?;
        let (shutdown, shutdown_rx) = watch::channel(());
        let counters = Arc::new(Counters::new(&self.namespace));
        let deferred = Arc::new(Deferred::default());
        let ns = &self.namespace;
        let r = &self.resilience;
        let l2_guard = Arc::new(Guard::new(ns, "l2", r, true, counters.clone()));
        let log_guard = Guard::new(ns, "log", r, false, counters.clone());
        let loaders = Compartment::new(r.bulkhead.loaders, r.bulkhead.max_wait, "loader calls");
        let user_l2 = self.l2.unwrap_or_else(|| Arc::new(MemoryStore::default()));
        let foreign = if self.track_foreign_writes {
            Some(user_l2.track_writes(&self.namespace).await?.ok_or_else(|| {
                Error::Config(format!(
                    "track_foreign_writes needs an L2 store that reports writes (e.g. strata_redis::RedisStore); {user_l2:?} does not"
                ))
            })?)
        } else {
            None
        };
        let l2 = Arc::new(GuardedStore::new(
            user_l2,
            l2_guard.clone(),
            deferred.clone(),
        ));
        // The guarded store's by default: behind the same breaker as the data.
        let lease = self.lease.or_else(|| l2.lease());
        let inner = Arc::new(Engine {
            counters,
            hot_keys: Default::default(),
            l2_guard,
            log_guard,
            loaders,
            deferred,
            write_queue: self.write_queue,
            namespace: self.namespace.into(),
            // Never `Invalidation::FOREIGN`: what the server reports must not be skipped.
            instance_id: fastrand::u64(Invalidation::FOREIGN + 1..),
            l1,
            l2,
            log,
            codec: self.codec,
            encoded_len: AtomicUsize::new(0),
            raw: self.raw,
            defaults: self.defaults,
            max_key_bytes: self.max_key_bytes,
            max_value_bytes: self.max_value_bytes,
            // `follow` just returned: the log has everything from now on.
            caught_up: AtomicU64::new(self.clock.now_ms()),
            clock: self.clock,
            flights: Arc::new(Flights::default()),
            fence: Fence::default(),
            tag_drops: crate::tag_drops::TagDrops::default(),
            lease,
            load_ends: LoadEnds::default(),
            fills: Arc::default(),
            lease_ttl: self.lease_ttl,
            max_staleness: self.max_staleness.map(crate::options::ms),
            acknowledged: self
                .acknowledged_writes
                .then(|| Acknowledged::new(self.max_staleness.unwrap_or(DEFAULT_ACK_WAIT))),
            _shutdown: shutdown,
        });
        let weak = Arc::downgrade(&inner);
        if let Some(acknowledged) = &inner.acknowledged {
            let first = acknowledged.first();
            tokio::spawn(acker::run(weak.clone(), shutdown_rx.clone()));
            tokio::spawn(follower::run(weak.clone(), events, shutdown_rx.clone()));
            // Counted by the others before it serves a read: no write may miss it.
            acknowledged.joined(first).await;
        } else {
            tokio::spawn(follower::run(weak.clone(), events, shutdown_rx.clone()));
        }
        if let Some(foreign) = foreign {
            // The same follower as the log's: a reported write is an invalidation like any.
            tokio::spawn(follower::run(weak.clone(), foreign, shutdown_rx.clone()));
        }
        tokio::spawn(housekeeper::run(weak.clone(), shutdown_rx.clone()));
        tokio::spawn(replay::run(weak, shutdown_rx));
        Ok(HybridCache::from_inner(inner))
    }
}
