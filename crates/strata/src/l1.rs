//! L1: the in-process tier, typed values in a moka cache (W-TinyLFU admission, per-entry expiry).

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;

use crate::inner::{Found, Inner};
use crate::options::{EntryOptions, ms};

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
}

impl L1 {
    /// An L1 holding at most `entries` entries (W-TinyLFU decides which).
    pub fn with_capacity(entries: u64) -> Self {
        L1 { capacity: entries }
    }

    /// No L1: every read goes to L2.
    pub fn disabled() -> Self {
        L1 { capacity: 0 }
    }

    pub(crate) fn build(&self) -> Option<L1Map> {
        (self.capacity > 0).then(|| {
            moka::future::Cache::builder()
                .max_capacity(self.capacity)
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
    /// A fail-safe copy: serving it counts as serving stale.
    pub(crate) fail_safe: bool,
}

impl L1Entry {
    pub(crate) fn new(
        value: Value,
        times: Times,
        l1_until: u64,
        tags: &[String],
        now: u64,
    ) -> Self {
        // Keep the copy while it can serve: fresh or stale-while-revalidate until `l1_until`,
        // and as a fail-safe fallback until `stale_until`.
        let keep_until = l1_until.max(times.stale_until);
        L1Entry {
            value,
            times,
            l1_until,
            retain: Duration::from_millis(keep_until.saturating_sub(now)),
            tags: (!tags.is_empty()).then(|| tags.into()),
            fail_safe: false,
        }
    }

    pub(crate) fn has_tag(&self, tag: &str) -> bool {
        self.tags
            .as_deref()
            .is_some_and(|t| t.iter().any(|x| x == tag))
    }
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
    pub(crate) async fn fill_l1(&self, key: &str, options: &EntryOptions, found: &Found, now: u64) {
        if let Some(l1) = &self.l1 {
            let l1_until = options.l1_until(now, &found.times);
            let entry = L1Entry::new(found.value.clone(), found.times, l1_until, &found.tags, now);
            l1.insert(key.to_owned(), entry).await;
        }
    }

    /// Keeps serving `stale` for one throttle period after the loader failed (fail-safe).
    pub(crate) async fn keep_fail_safe(
        &self,
        key: &str,
        options: &EntryOptions,
        mut stale: L1Entry,
    ) {
        if let Some(l1) = &self.l1 {
            let now = self.clock.now_ms();
            stale.fail_safe = true;
            stale.l1_until = now.saturating_add(ms(options.fail_safe_throttle));
            stale.retain = std::time::Duration::from_millis(
                stale
                    .l1_until
                    .max(stale.times.stale_until)
                    .saturating_sub(now),
            );
            l1.insert(key.to_owned(), stale).await;
        }
    }

    // Each `drop_*` applies an invalidation here: it also poisons the loads in flight that
    // may carry an old value, so that they neither fill L1 nor take in new callers.

    pub(crate) async fn drop_l1(&self, key: &str) {
        self.flights.poison(key);
        if let Some(l1) = &self.l1 {
            l1.invalidate(key).await;
        }
    }

    /// Removes `key` from L1 only (undoing a fill that an invalidation overtook).
    pub(crate) async fn evict_l1(&self, key: &str) {
        if let Some(l1) = &self.l1 {
            l1.invalidate(key).await;
        }
    }

    pub(crate) fn drop_tag(&self, tag: &str) {
        // A flight's tags are unknown until it ends: poison them all (they are few).
        self.flights.poison_all();
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
        self.flights.poison_all();
        if let Some(l1) = &self.l1 {
            l1.invalidate_all();
        }
    }
}
