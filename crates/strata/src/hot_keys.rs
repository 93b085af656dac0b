//! Hot keys: which keys a cache reads most, for an operator to see what a stampede or a
//! thundering herd hits (`strata top`).
//!
//! Reads are sampled (one in [`SAMPLE_EVERY`]) into a bounded list — the Space-Saving
//! algorithm: at most [`CAPACITY`] keys; a key not in a full list takes the place of the
//! least counted one and starts from its count. So a count is an upper bound of the key's
//! sampled reads, and a key read more often than one sample in `CAPACITY` is never lost.
//! Nothing is sampled until someone takes the list ([`HybridCache::take_hot_keys`]): a cache
//! nobody asks pays one relaxed load per read.
//!
//! [`HybridCache::take_hot_keys`]: crate::HybridCache::take_hot_keys

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

/// One read in this many is counted.
pub(crate) const SAMPLE_EVERY: u32 = 16;

/// The most keys counted at once.
pub(crate) const CAPACITY: usize = 256;

/// A key and how many reads of it an interval saw (estimated: its sampled reads times the
/// sampling rate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotKey {
    /// The cache key (without the namespace).
    pub key: String,
    /// Reads, estimated.
    pub reads: u64,
}

#[derive(Default)]
pub(crate) struct HotKeys {
    /// Set by the first take: sampling costs nothing until someone looks.
    on: AtomicBool,
    counts: Mutex<HashMap<Box<str>, u64>>,
}

impl HotKeys {
    /// Counts a read of `key`, one time in [`SAMPLE_EVERY`].
    #[inline]
    pub(crate) fn record(&self, key: &str) {
        if self.on.load(Ordering::Relaxed) && fastrand::u32(..SAMPLE_EVERY) == 0 {
            self.count(key);
        }
    }

    fn count(&self, key: &str) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = counts.get_mut(key) {
            *n += 1;
            return;
        }
        let mut start = 1;
        if counts.len() >= CAPACITY {
            // Full: the least counted makes room (a scan of a few hundred, once per sampled
            // read of a new key).
            if let Some((least, n)) = counts
                .iter()
                .min_by_key(|(_, n)| **n)
                .map(|(k, n)| (k.clone(), *n))
            {
                counts.remove(&least);
                start = n + 1;
            }
        }
        counts.insert(key.into(), start);
    }

    /// The counts since the last take, most read first; sampling starts with the first.
    pub(crate) fn take(&self) -> Vec<HotKey> {
        self.on.store(true, Ordering::Relaxed);
        let counts =
            std::mem::take(&mut *self.counts.lock().unwrap_or_else(PoisonError::into_inner));
        let mut hot: Vec<HotKey> = counts
            .into_iter()
            .map(|(key, n)| HotKey {
                key: key.into(),
                reads: n * u64::from(SAMPLE_EVERY),
            })
            .collect();
        hot.sort_unstable_by(|a, b| b.reads.cmp(&a.reads).then_with(|| a.key.cmp(&b.key)));
        hot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_sampled_until_someone_takes() {
        let hot = HotKeys::default();
        for _ in 0..10_000 {
            hot.record("k");
        }
        assert!(hot.take().is_empty());
        for _ in 0..10_000 {
            hot.record("k");
        }
        let taken = hot.take();
        assert_eq!(taken.len(), 1);
        // 625 samples expected; far outside 400..900 is a broken sampler, not bad luck.
        assert!((400 * 16..900 * 16).contains(&taken[0].reads), "{taken:?}");
        assert!(hot.take().is_empty(), "a take empties the window");
    }

    #[test]
    fn the_list_stays_bounded_and_keeps_the_heaviest_keys() {
        let hot = HotKeys::default();
        hot.take();
        let keys: Vec<String> = (0..100_000).map(|i| format!("k{i}")).collect();
        for i in 0..200_000usize {
            // Two heavy keys among 100,000 read once or twice each.
            hot.record(match i % 10 {
                0 => "heavy-a",
                1 => "heavy-b",
                _ => &keys[i % keys.len()],
            });
            assert!(hot.counts.lock().unwrap().len() <= CAPACITY);
        }
        let taken = hot.take();
        let top: Vec<&str> = taken.iter().take(2).map(|h| h.key.as_str()).collect();
        assert!(
            top.contains(&"heavy-a") && top.contains(&"heavy-b"),
            "{top:?}"
        );
    }
}
