//! L1: the in-process tier, typed values in a quick_cache map (S3-FIFO-like eviction).
//!
//! A hit is a read lock on one shard, a lookup and a clone of the entry (one reference count):
//! nothing is queued for later, so there is no maintenance task to run on a timer and no
//! read buffer to drain. Chosen by measurement on the W1 stream against moka (what Strata used
//! before: TinyLFU, ~6× the time per operation here) and a sharded S3-FIFO map of our own
//! (tied): `benches/l1.rs`, table in BENCHMARKS.md.
//!
//! Entries expire lazily: each carries until when it may serve (fresh, then stale-while-
//! revalidate or fail-safe) and the read path checks it; one past it is replaced by the next
//! fill, or evicted like any entry nobody reads. [`HybridCache::run_pending_tasks`]
//! (crate::HybridCache::run_pending_tasks) sweeps them out at once.

use std::any::Any;
use std::sync::Arc;

use crate::inner::{Found, Inner};
use crate::options::{EntryOptions, ms};
use crate::stats::Counter;

use crate::envelope::Times;

/// The L1 map.
pub(crate) type L1Map = quick_cache::sync::Cache<
    String,
    L1Entry,
    Weigher,
    foldhash::fast::RandomState,
    quick_cache::sync::DefaultLifecycle<String, L1Entry>,
>;

/// A value as L1 keeps it: the decoded `Arc<T>`, type-erased so one cache can hold many types.
/// `None` is a negative entry ("not found").
pub(crate) type Value = Option<Arc<dyn Any + Send + Sync>>;

/// L1 settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L1 {
    capacity: u64,
    by_bytes: bool,
}

/// What an entry weighs beyond its key and encoded value (the entry, the map's bookkeeping).
const ENTRY_OVERHEAD: u32 = 128;

/// Entries per shard below which the map gets fewer shards: a shard of a handful of entries
/// evicts by luck more than by policy.
const MIN_SHARD_ENTRIES: u64 = 64;

/// A guess at the size of an entry of an L1 bounded by bytes, to size its table.
const TYPICAL_ENTRY_BYTES: u64 = 1024;

impl L1 {
    /// An L1 holding at most `entries` entries (an S3-FIFO-like policy decides which).
    pub fn with_capacity(entries: u64) -> Self {
        L1 {
            capacity: entries,
            by_bytes: false,
        }
    }

    /// An L1 holding at most about `bytes` bytes: each entry weighs its key, its encoded size
    /// and a fixed overhead. For values whose sizes vary a lot (HTTP responses), where a count
    /// of entries says little about memory. Values never encoded (stored with
    /// [`skip_l2`](crate::EntryOptions::skip_l2)) weigh only their key and the overhead.
    pub fn with_max_bytes(bytes: u64) -> Self {
        L1 {
            capacity: bytes,
            by_bytes: true,
        }
    }

    /// No L1: every read goes to L2.
    pub fn disabled() -> Self {
        L1::with_capacity(0)
    }

    pub(crate) fn build(&self) -> Option<L1Map> {
        if self.capacity == 0 {
            return None;
        }
        let entries = if self.by_bytes {
            (self.capacity / TYPICAL_ENTRY_BYTES).max(1)
        } else {
            self.capacity
        };
        let parallelism = std::thread::available_parallelism().map_or(1, |n| n.get());
        let shards = usize::try_from(entries / MIN_SHARD_ENTRIES)
            .unwrap_or(usize::MAX)
            .clamp(1, parallelism * 4)
            .next_power_of_two();
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(usize::try_from(entries).unwrap_or(usize::MAX))
            .weight_capacity(self.capacity)
            .shards(shards)
            .build()
            .ok()?;
        Some(quick_cache::sync::Cache::with_options(
            options,
            Weigher {
                by_bytes: self.by_bytes,
            },
            // SipHash was ~5 % of an L1 hit. foldhash is several times faster and still
            // seeded per process, which keeps keys an attacker can choose from being aimed at
            // one bucket chain.
            foldhash::fast::RandomState::default(),
            quick_cache::sync::DefaultLifecycle::default(),
        ))
    }
}

impl Default for L1 {
    /// 10,000 entries.
    fn default() -> Self {
        L1::with_capacity(10_000)
    }
}

/// Weighs an entry: 1, or its bytes in an L1 bounded by bytes.
#[derive(Clone)]
pub(crate) struct Weigher {
    by_bytes: bool,
}

impl quick_cache::Weighter<String, L1Entry> for Weigher {
    fn weight(&self, key: &String, entry: &L1Entry) -> u64 {
        if self.by_bytes {
            let key = u32::try_from(key.len()).unwrap_or(u32::MAX);
            u64::from(key) + u64::from(entry.size) + u64::from(ENTRY_OVERHEAD)
        } else {
            1
        }
    }
}

/// One L1 entry. Cloned on every hit, so it is kept to one reference count to bump (the value)
/// plus plain integers; tags are only present when the entry has some.
#[derive(Clone)]
pub(crate) struct L1Entry {
    pub(crate) value: Value,
    pub(crate) times: Times,
    /// Until when this copy may be served without asking L2 (L1 TTL, or a fail-safe throttle).
    pub(crate) l1_until: u64,
    pub(crate) tags: Option<Arc<[String]>>,
    /// How long the load that produced the value took (XFetch's δ).
    pub(crate) load_ms: u32,
    /// Encoded size in bytes (its weight in an L1 bounded by bytes).
    pub(crate) size: u32,
    /// A fail-safe copy: serving it counts as serving stale.
    pub(crate) fail_safe: bool,
}

impl L1Entry {
    /// The L1 copy of `found`, servable until `l1_until`.
    pub(crate) fn of(found: &Found, l1_until: u64) -> Self {
        L1Entry {
            value: found.value.clone(),
            times: found.times,
            l1_until,
            tags: (!found.tags.is_empty()).then(|| found.tags.as_slice().into()),
            load_ms: found.load_ms,
            size: found.size,
            fail_safe: false,
        }
    }

    pub(crate) fn has_tag(&self, tag: &str) -> bool {
        self.tags
            .as_deref()
            .is_some_and(|t| t.iter().any(|x| x == tag))
    }

    /// Whether the entry can still serve at `now`: fresh or stale-while-revalidate until
    /// `l1_until`, and as a fail-safe fallback until `stale_until`.
    pub(crate) fn alive(&self, now: u64) -> bool {
        now < self.l1_until.max(self.times.stale_until)
    }
}

/// L1 operations of a cache.
impl Inner {
    /// The L1 entry for a value found or loaded now.
    pub(crate) fn l1_entry(&self, options: &EntryOptions, found: &Found, now: u64) -> L1Entry {
        L1Entry::of(found, options.l1_until(now, &found.times))
    }

    /// `stale`, to be served for one throttle period after the loader failed (fail-safe).
    pub(crate) fn fail_safe_entry(&self, options: &EntryOptions, mut stale: L1Entry) -> L1Entry {
        let now = self.clock.now_ms();
        stale.fail_safe = true;
        stale.l1_until = now.saturating_add(ms(options.fail_safe_throttle));
        stale
    }

    /// Puts `entry` in L1 (write-through: nothing can overtake it).
    pub(crate) fn insert_l1(&self, key: &str, entry: L1Entry) {
        if let Some(l1) = &self.l1 {
            l1.insert(key.to_owned(), entry);
        }
    }

    /// Puts `entry` in L1 unless `overtaken()` says an invalidation of the key was applied
    /// since its value was read. Checked again after the insert: an invalidation marks the key
    /// *before* it clears L1, so either its clear comes after our insert, or we see the mark
    /// and take the entry out again. A fill given up is counted in `fills_fenced`.
    pub(crate) fn insert_l1_unless(&self, key: &str, entry: L1Entry, overtaken: impl Fn() -> bool) {
        let Some(l1) = &self.l1 else { return };
        if !overtaken() {
            l1.insert(key.to_owned(), entry);
            if !overtaken() {
                return;
            }
            l1.remove(key);
        }
        self.counters.incr(Counter::fills_fenced);
    }

    // Each `drop_*` applies an invalidation here. It first marks what it overtakes — the loads
    // in flight (poisoned: they neither fill L1 nor take in new callers) and the fence that
    // plain reads check — then clears L1.

    /// Marks `key` overtaken by a change: an invalidation, or a write-through.
    pub(crate) fn overtake(&self, key: &str) {
        self.flights.poison(key);
        self.fence.bump(key);
    }

    pub(crate) fn drop_l1(&self, key: &str) {
        self.overtake(key);
        if let Some(l1) = &self.l1 {
            l1.remove(key);
        }
    }

    pub(crate) fn drop_tag(&self, tag: &str) {
        // A flight's tags are unknown until it ends: poison them all (they are few).
        self.overtake_all();
        if let Some(l1) = &self.l1 {
            // One pass over every shard, each under its write lock in turn: tag
            // invalidations are rare next to reads, and this keeps reads free of checks.
            l1.retain(|_, e| !e.has_tag(tag));
        }
    }

    pub(crate) fn drop_all(&self) {
        self.overtake_all();
        if let Some(l1) = &self.l1 {
            l1.clear();
        }
    }

    /// Sweeps out entries that can no longer serve (the read path skips them anyway).
    pub(crate) fn sweep_l1(&self) {
        if let Some(l1) = &self.l1 {
            let now = self.clock.now_ms();
            l1.retain(|_, e| e.alive(now));
        }
    }

    fn overtake_all(&self) {
        self.flights.poison_all();
        self.fence.bump_all();
    }
}
