//! Strata: a typed, async hybrid cache for Rust services.
//!
//! A [`HybridCache`] puts an in-process **L1** (typed `Arc<T>` values in a bounded map) in
//! front of a shared **L2** (Redis, through `strata-redis`, or the embedded [`MemoryStore`]),
//! and keeps every instance's L1 coherent through an **invalidation log** (a Redis stream, or
//! the in-process [`MemoryLog`]).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), strata::Error> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use strata::{EntryOptions, HybridCache, L1};
//!
//! let cache = HybridCache::builder("product-service")
//!     .l1(L1::with_capacity(100_000))
//!     // With Redis (`store` from `strata_redis::RedisStore::connect(url).await?`):
//!     // .invalidation(strata_redis::RedisStreamLog::sharing(&store))
//!     // .l2(store)
//!     .default_entry(EntryOptions::ttl(Duration::from_secs(3600)).jitter(0.1))
//!     .build()
//!     .await?;
//!
//! let name: Arc<String> = cache
//!     .get_or_load("product:42:name", || async { Ok::<_, std::io::Error>("Teapot".to_string()) })
//!     .await?;
//! cache.invalidate("product:42:name").await?; // here, in L2, and in every other instance
//! # assert_eq!(*name, "Teapot");
//! # Ok(()) }
//! ```
//!
//! # The read path
//! 1. **L1**: a hit is a lookup and a reference-count increment: no decoding, no allocation.
//! 2. **Single-flight**: concurrent misses of one key share one L2 read and one load.
//! 3. **L2**, one round trip: entries are stored in a versioned [`envelope`] carrying their
//!    timestamps and tags, so every instance treats them alike. Corrupt or foreign bytes are a
//!    miss, never an error. The same read takes the key's **load lease** if L2 has nothing:
//!    one instance of the service loads, the others wait for its fill (or serve their stale
//!    copy meanwhile).
//! 4. **The loader**, under soft and hard [timeouts](EntryOptions::soft_timeout); on failure,
//!    [fail-safe](EntryOptions::fail_safe) serves the last good value instead of an error.
//! 5. **Fill** L2, one round trip, [fenced](Fence): stored only if the lease the read took is
//!    still there, so a load that an invalidation overtook cannot write its old value back;
//!    and L1, unless an invalidation arrived meanwhile. A missed key's callers are answered
//!    once the fill is sent, not when it lands (a refused fill then takes the value
//!    back out of L1; other instances find the lease until it lands, and wait for it);
//!    [`run_pending_tasks`](HybridCache::run_pending_tasks) waits for such fills.
//!
//! Values past their [soft TTL](EntryOptions::soft_ttl) are served at once while one background
//! load refreshes them (stale-while-revalidate).
//!
//! # Writes
//! [`set`](HybridCache::set) writes through to L2; [`invalidate`](HybridCache::invalidate),
//! [`invalidate_tag`](HybridCache::invalidate_tag) and [`clear`](HybridCache::clear) remove
//! entries from L2, from this L1, and, through the log, from every other instance's L1.
//! [`write_behind`](HybridCache::write_behind) queues a write durably for the source of truth
//! and caches it; a [`Flusher`] applies the queue (see [`write_behind`](mod@write_behind)).
//!
//! # When Redis fails
//! Every call to the shared tier goes through a guard configured by [`Resilience`]: a timeout
//! per kind of call, retries of retryable failures under a budget, a circuit breaker per
//! target and a bulkhead (loader calls have one too). Reads then fall back to L1, the loader
//! or a stale value and never return a Redis error. Writes do their local half and defer the
//! shared half, replayed once Redis is back; [`HybridCache::health`] shows the breakers and
//! what is pending.
//!
//! # Coherence
//! How long can another instance's L1 serve a value after it was invalidated? Only until its
//! follower applies the invalidation — and with
//! [`max_staleness`](HybridCacheBuilder::max_staleness), no longer than that bound even when
//! the follower is cut off or behind: L1 is then bypassed until the log vouches for it again.
//! With [`acknowledged_writes`](HybridCacheBuilder::acknowledged_writes), not at all: a write
//! returns once every other live instance has applied it. An instance about to exit calls
//! [`shutdown`](HybridCache::shutdown), so that the others' writes stop waiting for it at once.
//!
//! # Seams
//! [`L2Store`], [`InvalidationLog`], [`Lease`], [`WriteQueue`] and [`Clock`] are traits; the embedded implementations
//! here make everything run on a bare machine, `strata-redis` provides the real ones.
//!
//! # Observability
//! [`HybridCache::stats`] returns the counters; they are also exported through the `metrics`
//! facade (`strata_hits_total{namespace,level}`, `strata_misses_total`, …) once a second, and
//! slow paths emit `tracing` spans (`strata.load`).
//!
//! # Allocator
//! The library sets no global allocator: that is the program's choice. An L1 hit allocates
//! nothing, but a miss, an L2 hit and a write do (the decoded value, the command and its reply
//! buffers, the entry's tags), from whichever task runs them, and many tasks free what others
//! allocated. glibc's allocator serves that pattern through locked arenas; a thread-caching
//! allocator such as `mimalloc` or `jemalloc` does not lock on the common path. The `strata`
//! binary uses mimalloc, which took ~12 % off its CPU per operation on W1 (BENCHMARKS.md,
//! "Allocator"); a service whose hit ratio leaves many misses may want the same:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
//! ```

mod acks;
mod batch;
mod builder;
mod cache;
mod clock;
mod codec;
mod deferred;
mod ends;
mod engine;
pub mod envelope;
mod error;
mod fence;
mod hot_keys;
mod in_flight;
pub mod invalidation;
pub mod keys;
mod l1;
mod lease;
mod options;
mod resilience;
mod single_flight;
mod stats;
mod store;
mod tag_drops;
mod value;
pub mod write_behind;

pub use builder::HybridCacheBuilder;
pub use cache::HybridCache;
pub use clock::{Clock, ManualClock, SystemClock};
pub use codec::Codec;
pub use error::{BoxError, Error, Result};
pub use hot_keys::HotKey;
pub use invalidation::{InvalidationLog, LogAppend, MemoryLog, Position};
pub use l1::L1;
pub use lease::{Lease, MemoryLease};
pub use options::{EntryOptions, Loaded};
pub use resilience::{
    BreakerConfig, BreakerError, BreakerState, Bulkhead, CircuitBreaker, Health, Resilience,
    RetryPolicy,
};
pub use stats::Stats;
pub use store::{Fence, L2Store, MemoryStore, Read, ReplicaWait, WriteMode, Written};
pub use value::CacheValue;
pub use write_behind::{Flusher, MemoryWriteQueue, QueuedWrite, WriteQueue};
