//! Deferred writes: the shared half of a write that could not reach the shared tier, kept
//! until it can, then replayed.
//!
//! When `invalidate`, `set`, `invalidate_tag` or `clear` cannot reach L2 or the log (an
//! outage, an open breaker), this instance has already done its local half (L1), and the rest
//! is recorded here: for a key, "delete it in L2 and tell the others". Until that has been
//! replayed, L2 is not trusted for the key — reads and fills of it skip L2 (see
//! [`Deferred::blocks`]) — because L2 may still hold the value the write replaced, and after a
//! frozen Redis thaws, a fill sent before the write may even land in it. A replay is always an
//! invalidation, never the value: deleting is safe in any order, writing a value back is not.
//!
//! The record lives in this process: if it dies before Redis returns, the replay is lost and
//! the old value lives in L2 until its TTL. Writes that must not be lost belong in the
//! write-behind queue, which is durable.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::invalidation::Target;

/// Beyond this many deferred keys, they collapse into one deferred clear of the namespace.
const MAX_KEYS: usize = 100_000;

/// Writes whose shared half is pending.
#[derive(Default)]
pub(crate) struct Deferred {
    /// Whether anything is pending: the one check on the L2 path while nothing is.
    any: AtomicBool,
    pending: Mutex<Pending>,
    pub(crate) wake: Notify,
}

/// Each target with the sequence number of its latest deferral: a replay that raced a newer
/// deferral of the same target leaves it pending.
#[derive(Default)]
struct Pending {
    seq: u64,
    clear: Option<u64>,
    tags: HashMap<String, u64>,
    keys: HashMap<String, u64>,
}

impl Pending {
    fn len(&self) -> usize {
        usize::from(self.clear.is_some()) + self.tags.len() + self.keys.len()
    }
}

impl Deferred {
    /// Whether L2 may hold a value for `key` that a deferred write replaced.
    #[inline]
    pub(crate) fn blocks(&self, key: &str) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let p = self.lock();
        // A pending tag could cover any key: its members are known only to L2.
        p.clear.is_some() || !p.tags.is_empty() || p.keys.contains_key(key)
    }

    /// How many writes are pending.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    pub(crate) fn defer(&self, target: Target) {
        let mut p = self.lock();
        p.seq += 1;
        let seq = p.seq;
        let overflow = matches!(&target, Target::Key(key)
            if p.keys.len() >= MAX_KEYS && !p.keys.contains_key(key));
        if overflow {
            tracing::warn!(
                max = MAX_KEYS,
                "too many deferred invalidations; the namespace will be cleared instead"
            );
        }
        match target {
            // A pending clear covers everything deferred before its replay runs.
            _ if p.clear.is_some() || overflow => {
                p.clear = Some(seq);
                p.tags.clear();
                p.keys.clear();
            }
            Target::Clear => p.clear = Some(seq),
            Target::Tag(tag) => drop(p.tags.insert(tag, seq)),
            Target::Key(key) => drop(p.keys.insert(key, seq)),
        }
        self.any.store(true, Ordering::Release);
        drop(p);
        self.wake.notify_one();
    }

    /// What to replay, clear first (it makes the rest moot).
    pub(crate) fn snapshot(&self) -> Vec<(Target, u64)> {
        let p = self.lock();
        if let Some(seq) = p.clear {
            return vec![(Target::Clear, seq)];
        }
        let tags = p.tags.iter().map(|(t, s)| (Target::Tag(t.clone()), *s));
        let keys = p.keys.iter().map(|(k, s)| (Target::Key(k.clone()), *s));
        tags.chain(keys).collect()
    }

    /// `target`, deferred as `seq`, has been replayed.
    pub(crate) fn done(&self, target: &Target, seq: u64) {
        let mut p = self.lock();
        let current = match target {
            Target::Clear => p.clear,
            Target::Tag(tag) => p.tags.get(tag).copied(),
            Target::Key(key) => p.keys.get(key).copied(),
        };
        if current == Some(seq) {
            match target {
                Target::Clear => p.clear = None,
                Target::Tag(tag) => drop(p.tags.remove(tag)),
                Target::Key(key) => drop(p.keys.remove(key)),
            }
        }
        self.any.store(p.len() > 0, Ordering::Release);
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        // Only sets behind this lock, each step complete: a panic elsewhere leaves them valid.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Target {
        Target::Key(k.to_owned())
    }

    #[test]
    fn a_replay_that_raced_a_newer_deferral_leaves_it_pending() {
        let d = Deferred::default();
        assert!(!d.blocks("a"));
        d.defer(key("a"));
        let snapshot = d.snapshot();
        d.defer(key("a")); // deferred again while the replay ran
        for (target, seq) in snapshot {
            d.done(&target, seq);
        }
        assert!(d.blocks("a") && !d.blocks("b"));
        for (target, seq) in d.snapshot() {
            d.done(&target, seq);
        }
        assert!(!d.blocks("a") && d.len() == 0);
    }

    #[test]
    fn tags_block_every_key_and_a_clear_covers_the_rest() {
        let d = Deferred::default();
        d.defer(Target::Tag("t".into()));
        assert!(d.blocks("anything"));
        d.defer(key("a"));
        d.defer(Target::Clear);
        d.defer(key("b"));
        assert_eq!(d.len(), 1, "one clear replays it all");
        assert_eq!(d.snapshot().len(), 1);
    }

    #[test]
    fn too_many_keys_collapse_into_a_clear() {
        let d = Deferred::default();
        for i in 0..=MAX_KEYS {
            d.defer(key(&i.to_string()));
        }
        let snapshot = d.snapshot();
        assert_eq!(snapshot.len(), 1);
        assert_eq!(snapshot[0].0, Target::Clear);
    }
}
