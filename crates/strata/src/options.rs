//! Per-entry options: how long a value lives and what happens around its expiry.

use std::time::Duration;

use crate::codec::Codec;
use crate::envelope::Times;

/// How one entry is cached. Set defaults on the builder; pass a modified copy per call
/// (`cache.default_entry_options().clone().ttl(…)`) to override.
///
/// The life of an entry, from its creation:
///
/// ```text
///  created      fresh_until          expires                  stale_until
///     |── fresh ──|── stale-while-revalidate ──|── fail-safe only ──|
///                 (soft_ttl)            (ttl)            (ttl + fail_safe)
/// ```
/// - *fresh*: served as is;
/// - *stale-while-revalidate* (with [`soft_ttl`](Self::soft_ttl)): served at once while one
///   background load refreshes it;
/// - *fail-safe* (with [`fail_safe`](Self::fail_safe)): served only when the loader fails or
///   times out, instead of an error;
/// - the L1 copy lives at most [`l1_ttl`](Self::l1_ttl) before L2 is asked again.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryOptions {
    pub(crate) ttl: Duration,
    pub(crate) jitter: f64,
    pub(crate) l1_ttl: Option<Duration>,
    pub(crate) soft_ttl: Option<Duration>,
    pub(crate) fail_safe_max: Option<Duration>,
    pub(crate) fail_safe_throttle: Duration,
    pub(crate) soft_timeout: Option<Duration>,
    pub(crate) hard_timeout: Option<Duration>,
    pub(crate) negative_ttl: Duration,
    pub(crate) tags: Vec<String>,
    pub(crate) skip_l1: bool,
    pub(crate) skip_l2: bool,
    pub(crate) early_refresh: Option<f64>,
    pub(crate) codec: Option<Codec>,
    /// Whether reads count in the statistics and among the hot keys ([`Self::uncounted`]).
    pub(crate) counted: bool,
}

impl Default for EntryOptions {
    /// A 5-minute TTL and nothing else: no jitter, no soft TTL, no fail-safe, no timeouts.
    fn default() -> Self {
        EntryOptions::ttl(Duration::from_secs(300))
    }
}

impl EntryOptions {
    /// Options with a hard TTL of `ttl` and every other feature off.
    pub fn ttl(ttl: Duration) -> Self {
        EntryOptions {
            ttl,
            jitter: 0.0,
            l1_ttl: None,
            soft_ttl: None,
            fail_safe_max: None,
            fail_safe_throttle: Duration::from_secs(30),
            soft_timeout: None,
            hard_timeout: None,
            negative_ttl: Duration::from_secs(30),
            tags: Vec::new(),
            skip_l1: false,
            skip_l2: false,
            counted: true,
            early_refresh: None,
            codec: None,
        }
    }

    /// Sets the hard TTL.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Adds up to `fraction × ttl` (random, uniform) to each entry's TTL, so that entries written
    /// together do not expire together. Clamped to `0.0..=1.0`.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// How long the L1 copy lives before L2 is consulted again; capped at the TTL. Shorter L1
    /// TTLs bound how long an instance can serve a value another instance already replaced, if
    /// an invalidation were lost.
    pub fn l1_ttl(mut self, ttl: Duration) -> Self {
        self.l1_ttl = Some(ttl);
        self
    }

    /// After `soft_ttl` the entry is stale: served at once while one background load refreshes
    /// it (stale-while-revalidate). Ignored when not shorter than the TTL.
    pub fn soft_ttl(mut self, soft_ttl: Duration) -> Self {
        self.soft_ttl = Some(soft_ttl);
        self
    }

    /// Probabilistic early refresh (XFetch, Vattani et al.): a hit at time `now` also starts
    /// one background load when `now − δ·β·ln(rand) ≥ expiry`, where δ is how long the
    /// entry's last load took (kept in its envelope) and `rand` is uniform in (0, 1]. The
    /// closer the expiry and the slower the load, the likelier; so a hot key is reloaded
    /// shortly before it expires, by one caller, instead of by a stampede at expiry. `beta`
    /// = 1 is the usual choice, larger refreshes earlier; non-finite or non-positive values
    /// turn it off.
    pub fn early_refresh(mut self, beta: f64) -> Self {
        self.early_refresh = (beta.is_finite() && beta > 0.0).then_some(beta);
        self
    }

    /// Keeps expired entries for `max` more, to serve when the loader fails or times out
    /// instead of returning an error. While a fail-safe value is served the loader is retried
    /// at most once per [`fail_safe_throttle`](Self::fail_safe_throttle).
    pub fn fail_safe(mut self, max: Duration) -> Self {
        self.fail_safe_max = Some(max);
        self
    }

    /// How long a fail-safe value is served before the loader is tried again (default 30 s).
    pub fn fail_safe_throttle(mut self, throttle: Duration) -> Self {
        self.fail_safe_throttle = throttle;
        self
    }

    /// When a stale value is at hand and the loader takes longer than this, return the stale
    /// value and let the loader finish in the background and fill the cache.
    pub fn soft_timeout(mut self, timeout: Duration) -> Self {
        self.soft_timeout = Some(timeout);
        self
    }

    /// Give up on the loader after this long (its future is dropped): serve stale if allowed,
    /// else fail with [`Error::LoaderTimeout`](crate::Error::LoaderTimeout).
    pub fn hard_timeout(mut self, timeout: Duration) -> Self {
        self.hard_timeout = Some(timeout);
        self
    }

    /// TTL of "not found" results of [`get_or_load_optional`](crate::HybridCache::get_or_load_optional)
    /// (default 30 s).
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// Tags for [`invalidate_tag`](crate::HybridCache::invalidate_tag) (replaces earlier tags).
    pub fn tags<I, S>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// Reads with these options count nowhere: not in the hit, miss and load counters
    /// ([`HybridCache::stats`](crate::HybridCache::stats), the metrics, what a stats reporter
    /// publishes) nor among the hot keys. For bookkeeping read beside every real read — a
    /// marker, a flag — which would otherwise outnumber the data's reads, inflate the hit
    /// ratio and top the hot keys (the HTTP layer's soft-purge marker is one).
    pub fn uncounted(mut self) -> Self {
        self.counted = false;
        self
    }

    /// Neither read nor write L1 for this call.
    pub fn skip_l1(mut self) -> Self {
        self.skip_l1 = true;
        self
    }

    /// Neither read nor write L2 for this call (and do not tell other instances).
    pub fn skip_l2(mut self) -> Self {
        self.skip_l2 = true;
        self
    }

    /// Encodes this entry's value in L2 with `codec` instead of the cache's (the envelope
    /// names the codec, so every instance reads it whatever its own default). For values
    /// that are mostly bytes — JSON writes bytes as arrays of numbers, ~4 × their size —
    /// [`Codec::MessagePack`] keeps them at their size. Ignored by a cache in raw mode
    /// (always JSON).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = Some(codec);
        self
    }

    /// The timestamps of an entry created at `now` (jitter drawn here). Negative entries use
    /// the negative TTL and neither soft TTL nor fail-safe.
    pub(crate) fn times(&self, now: u64, negative: bool) -> Times {
        if negative {
            let expires = now.saturating_add(ms(self.negative_ttl));
            return Times {
                created: now,
                fresh_until: expires,
                expires,
                stale_until: expires,
            };
        }
        let mut ttl = ms(self.ttl);
        if self.jitter > 0.0 {
            ttl = ttl.saturating_add((ttl as f64 * self.jitter * fastrand::f64()) as u64);
        }
        let expires = now.saturating_add(ttl);
        let fresh_until = match self.soft_ttl {
            Some(soft) if ms(soft) < ttl => now.saturating_add(ms(soft)),
            _ => expires,
        };
        Times {
            created: now,
            fresh_until,
            expires,
            stale_until: expires.saturating_add(self.fail_safe_max.map_or(0, ms)),
        }
    }

    /// Whether a hit on an entry fresh until `fresh_until`, whose load took `load_ms`, should
    /// start an early refresh now (see [`early_refresh`](Self::early_refresh)).
    #[inline]
    pub(crate) fn refreshes_early(&self, load_ms: u32, fresh_until: u64, now: u64) -> bool {
        let Some(beta) = self.early_refresh else {
            return false;
        };
        // A load faster than the clock's resolution still gets a window of a millisecond.
        let delta = f64::from(load_ms.max(1));
        let gap = -delta * beta * (1.0 - fastrand::f64()).ln();
        // Precision is not a concern at millisecond timestamps.
        #[allow(clippy::cast_precision_loss)]
        let (now, fresh_until) = (now as f64, fresh_until as f64);
        now + gap >= fresh_until
    }

    /// Until when an L1 copy made at `now` of an entry with `times` may be served without
    /// asking L2.
    pub(crate) fn l1_until(&self, now: u64, times: &Times) -> u64 {
        match self.l1_ttl {
            Some(l1) => now.saturating_add(ms(l1)).min(times.expires),
            None => times.expires,
        }
    }
}

pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_follow_the_options() {
        let o = EntryOptions::ttl(Duration::from_secs(10))
            .soft_ttl(Duration::from_secs(4))
            .fail_safe(Duration::from_secs(60))
            .l1_ttl(Duration::from_secs(2));
        let t = o.times(1_000, false);
        assert_eq!(
            t,
            Times {
                created: 1_000,
                fresh_until: 5_000,
                expires: 11_000,
                stale_until: 71_000
            }
        );
        assert_eq!(o.l1_until(1_000, &t), 3_000);
        assert_eq!(
            o.clone()
                .l1_ttl(Duration::from_secs(99))
                .l1_until(1_000, &t),
            11_000
        );

        let n = o.times(1_000, true);
        assert_eq!((n.fresh_until, n.stale_until), (31_000, 31_000));
    }

    #[test]
    fn early_refresh_follows_xfetch() {
        let off = EntryOptions::ttl(Duration::from_secs(10));
        assert!(!off.refreshes_early(1_000, 10_000, 9_999));
        let o = off.early_refresh(2.0);
        // δ·β = 100 ms · 2 = 200 ms before expiry, the chance is P(−ln r ≥ 1) = 1/e ≈ 0.368.
        let n = 10_000;
        let hits = (0..n)
            .filter(|_| o.refreshes_early(100, 10_000, 9_800))
            .count();
        assert!((3_300..=4_050).contains(&hits), "{hits} of {n}");
        // At or past expiry, always; a minute before it, never.
        assert!((0..1_000).all(|_| o.refreshes_early(100, 10_000, 10_000)));
        assert!((0..1_000).all(|_| !o.refreshes_early(100, 70_000, 10_000)));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(o.clone().early_refresh(bad).early_refresh, None);
        }
    }

    #[test]
    fn jitter_stays_in_bounds() {
        let o = EntryOptions::ttl(Duration::from_secs(100)).jitter(0.1);
        let spread: Vec<u64> = (0..200).map(|_| o.times(0, false).expires).collect();
        assert!(spread.iter().all(|e| (100_000..=110_000).contains(e)));
        assert!(spread.iter().any(|e| *e != spread[0]), "jitter varies");
        assert_eq!(EntryOptions::default().jitter(f64::NAN).jitter, 0.0);
        assert_eq!(EntryOptions::default().jitter(7.0).jitter, 1.0);
    }

    #[test]
    fn soft_ttl_not_shorter_than_ttl_is_ignored() {
        let o = EntryOptions::ttl(Duration::from_secs(5)).soft_ttl(Duration::from_secs(9));
        let t = o.times(0, false);
        assert_eq!(t.fresh_until, t.expires);
    }
}

/// What an adaptive loader returns (see
/// [`HybridCache::get_or_load_adaptive`](crate::HybridCache::get_or_load_adaptive)): the value,
/// or "not found", and optionally the entry options to cache it with.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    pub(crate) value: Option<T>,
    pub(crate) options: Option<EntryOptions>,
}

impl<T> Loaded<T> {
    /// A value, cached with the call's options unless [`with_options`](Self::with_options)
    /// says otherwise.
    pub fn value(value: T) -> Self {
        Loaded {
            value: Some(value),
            options: None,
        }
    }

    /// Nothing found: cached as a negative entry for the options' negative TTL.
    pub fn not_found() -> Self {
        Loaded {
            value: None,
            options: None,
        }
    }

    /// Stores the value with `options` instead of the call's.
    pub fn with_options(mut self, options: EntryOptions) -> Self {
        self.options = Some(options);
        self
    }
}

impl<T> From<Option<T>> for Loaded<T> {
    fn from(value: Option<T>) -> Self {
        Loaded {
            value,
            options: None,
        }
    }
}
