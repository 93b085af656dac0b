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
//! fill, or evicted like any entry nobody reads.
//! [`HybridCache::run_pending_tasks`](crate::HybridCache::run_pending_tasks) sweeps them out
//! at once.

use std::sync::Arc;

use crate::envelope::Times;
use crate::error::{Error, Result};
use crate::value::{Found, Value};

/// The L1 map.
pub(crate) type L1Map = quick_cache::sync::Cache<
    String,
    L1Entry,
    Weigher,
    foldhash::fast::RandomState,
    quick_cache::sync::DefaultLifecycle<String, L1Entry>,
>;

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

    /// The map, or `None` for a disabled L1.
    pub(crate) fn build(&self) -> Result<Option<L1Map>> {
        if self.capacity == 0 {
            return Ok(None);
        }
        let entries = if self.by_bytes {
            (self.capacity / TYPICAL_ENTRY_BYTES).max(1)
        } else {
            self.capacity
        };
        let parallelism = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let shards = usize::try_from(entries / MIN_SHARD_ENTRIES)
            .unwrap_or(usize::MAX)
            .clamp(1, parallelism * 4)
            .next_power_of_two();
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(usize::try_from(entries).unwrap_or(usize::MAX))
            .weight_capacity(self.capacity)
            .shards(shards)
            .build()
            .map_err(|e| Error::Config(format!("L1: {e}")))?;
        Ok(Some(quick_cache::sync::Cache::with_options(
            options,
            Weigher {
                by_bytes: self.by_bytes,
            },
            // SipHash was ~5 % of an L1 hit. foldhash is several times faster and still
            // seeded per process, which keeps keys an attacker can choose from being aimed at
            // one bucket chain.
            foldhash::fast::RandomState::default(),
            quick_cache::sync::DefaultLifecycle::default(),
        )))
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

    /// Whether this entry is the L1 copy of `found` (the same value, made at the same time).
    pub(crate) fn is_copy_of(&self, found: &Found) -> bool {
        let same = match (&self.value, &found.value) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        same && self.times == found.times
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
