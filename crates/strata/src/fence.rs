//! The L1 fence: how a read that is not a flight (`HybridCache::get`) learns that an
//! invalidation overtook the L2 value it is about to put in L1.
//!
//! Flights carry their own poison flag; a plain read has none, and registering one per read
//! would cost a lock on every L1 miss. Instead each invalidation bumps a counter of the key's
//! stripe (tags and clears bump them all) before it clears L1; the read notes the stripe's
//! count before going to L2 and checks it around its insert. Different keys share a stripe, so
//! a fill is sometimes given up needlessly (one in `STRIPES` invalidations) — never kept wrongly.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

const STRIPES: usize = 64;

/// Invalidation counters by key stripe.
pub(crate) struct Fence {
    stripes: [AtomicU64; STRIPES],
    hasher: foldhash::fast::RandomState,
}

impl Default for Fence {
    fn default() -> Self {
        Fence {
            stripes: [const { AtomicU64::new(0) }; STRIPES],
            hasher: foldhash::fast::RandomState::default(),
        }
    }
}

impl Fence {
    fn stripe(&self, key: &str) -> &AtomicU64 {
        // Truncation is the point: the hash only picks a stripe.
        #[allow(clippy::cast_possible_truncation)]
        let i = self.hasher.hash_one(key) as usize % STRIPES;
        &self.stripes[i]
    }

    /// The count to compare with later.
    pub(crate) fn read(&self, key: &str) -> u64 {
        self.stripe(key).load(Ordering::SeqCst)
    }

    /// An invalidation of `key` is about to be applied.
    pub(crate) fn bump(&self, key: &str) {
        self.stripe(key).fetch_add(1, Ordering::SeqCst);
    }

    /// An invalidation of unknown keys (a tag, the namespace) is about to be applied.
    pub(crate) fn bump_all(&self) {
        for s in &self.stripes {
            s.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bump_is_seen_by_its_key_and_bump_all_by_every_key() {
        let fence = Fence::default();
        let before = fence.read("a");
        fence.bump("a");
        assert_ne!(fence.read("a"), before);
        let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
        let seen: Vec<u64> = keys.iter().map(|k| fence.read(k)).collect();
        fence.bump_all();
        assert!(keys.iter().zip(seen).all(|(k, s)| fence.read(k) != s));
    }
}
