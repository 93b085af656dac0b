//! L1: the in-process tier, typed values in a moka cache (TinyLFU admission, per-entry expiry).

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;

use crate::inner::{Found, Inner};
use crate::options::{EntryOptions, ms};
use crate::stats::Counter;

use crate::envelope::Times;

/// The L1 map.
pub(crate) type L1Map = moka::future::Cache<String, L1Entry, foldhash::fast::RandomState>;

/// A value as L1 keeps it: the decoded `Arc<T>`, type-erased so one cache can hold many types.
/// `None` is a negative entry ("not found").
pub(crate) type Value = Option<Arc<dyn Any + Send + Sync>>;

/// L1 settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L1 {
    capacity: u64,
    by_bytes: bool,
}

/// What an entry weighs beyond its key and encoded value (the entry, moka's bookkeeping).
const ENTRY_OVERHEAD: u32 = 128;

impl L1 {
    /// An L1 holding at most `entries` entries (moka's TinyLFU policy decides which).
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
        (self.capacity > 0).then(|| {
            let builder = moka::future::Cache::builder().max_capacity(self.capacity);
            let builder = if self.by_bytes {
                builder.weigher(|key: &String, entry: &L1Entry| {
                    let key = u32::try_from(key.len()).unwrap_or(u32::MAX);
                    key.saturating_add(entry.size)
                        .saturating_add(ENTRY_OVERHEAD)
                })
            } else {
                builder
            };
            builder
                .expire_after(Retention)
                .support_invalidation_closures()
                // SipHash was ~5 % of an L1 hit. foldhash is several times faster and still
                // seeded per process, which keeps keys an attacker can choose from being
                // aimed at one bucket chain.
                .build_with_hasher(foldhash::fast::RandomState::default())
        })
    }
}

impl Default for L1 {
    /// 10,000 entries.
    fn default() -> Self {
        L1::with_capacity(10_000)
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
    /// How long moka keeps the entry, decided when it was made.
    pub(crate) retain: Duration,
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
    pub(crate) fn of(found: &Found, l1_until: u64, now: u64) -> Self {
        L1Entry {
            value: found.value.clone(),
            times: found.times,
            l1_until,
            retain: retention(l1_until, &found.times, now),
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
}

/// How long moka keeps an entry: while it can serve — fresh or stale-while-revalidate until
/// `l1_until`, and as a fail-safe fallback until `stale_until`.
fn retention(l1_until: u64, times: &Times, now: u64) -> Duration {
    Duration::from_millis(l1_until.max(times.stale_until).saturating_sub(now))
}

struct Retention;

impl Expiry<String, L1Entry> for Retention {
    fn expire_after_create(&self, _: &String, value: &L1Entry, _: Instant) -> Option<Duration> {
        Some(value.retain)
    }

    fn expire_after_update(
        &self,
        _: &String,
        value: &L1Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.retain)
    }
}

/// L1 operations of a cache.
impl Inner {
    /// The L1 entry for a value found or loaded now.
    pub(crate) fn l1_entry(&self, options: &EntryOptions, found: &Found, now: u64) -> L1Entry {
        let l1_until = options.l1_until(now, &found.times);
        L1Entry::of(found, l1_until, now)
    }

    /// `stale`, to be served for one throttle period after the loader failed (fail-safe).
    pub(crate) fn fail_safe_entry(&self, options: &EntryOptions, mut stale: L1Entry) -> L1Entry {
        let now = self.clock.now_ms();
        stale.fail_safe = true;
        stale.l1_until = now.saturating_add(ms(options.fail_safe_throttle));
        stale.retain = retention(stale.l1_until, &stale.times, now);
        stale
    }

    /// Puts `entry` in L1 (write-through: nothing can overtake it).
    pub(crate) async fn insert_l1(&self, key: &str, entry: L1Entry) {
        if let Some(l1) = &self.l1 {
            l1.insert(key.to_owned(), entry).await;
        }
    }

    /// Puts `entry` in L1 unless `overtaken()` says an invalidation of the key was applied
    /// since its value was read. Checked again after the insert: an invalidation marks the key
    /// *before* it clears L1, so either its clear comes after our insert, or we see the mark
    /// and take the entry out again. A fill given up is counted in `fills_fenced`.
    pub(crate) async fn insert_l1_unless(
        &self,
        key: &str,
        entry: L1Entry,
        overtaken: impl Fn() -> bool,
    ) {
        let Some(l1) = &self.l1 else { return };
        if !overtaken() {
            l1.insert(key.to_owned(), entry).await;
            if !overtaken() {
                return;
            }
            l1.invalidate(key).await;
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

    pub(crate) async fn drop_l1(&self, key: &str) {
        self.overtake(key);
        if let Some(l1) = &self.l1 {
            l1.invalidate(key).await;
        }
    }

    pub(crate) fn drop_tag(&self, tag: &str) {
        // A flight's tags are unknown until it ends: poison them all (they are few).
        self.overtake_all();
        if let Some(l1) = &self.l1 {
            let tag = tag.to_owned();
            // Registered predicates apply to every read from now on, and entries are purged
            // lazily; this cannot fail because the L1 is built with closure support.
            if let Err(e) = l1.invalidate_entries_if(move |_, e| e.has_tag(&tag)) {
                tracing::error!(error = %e, "L1 tag invalidation refused; dropping all of L1");
                l1.invalidate_all();
            }
        }
    }

    pub(crate) fn drop_all(&self) {
        self.overtake_all();
        if let Some(l1) = &self.l1 {
            l1.invalidate_all();
        }
    }

    fn overtake_all(&self) {
        self.flights.poison_all();
        self.fence.bump_all();
    }
}
