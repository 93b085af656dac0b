//! The tags this instance invalidated lately, in order, for the loads that began before.
//!
//! A load's tags are unknown until its value is there, so a tag invalidation cannot tell
//! which loads in flight it overtakes. Each load notes where this record stood when it began;
//! before it fills, it checks its value's tags against what was recorded since. Only the
//! loads of the invalidated tag's entries are refused — not every load in flight — and a
//! record too short to tell (more drops than it keeps) refuses, as a whole-namespace drop does.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Drops kept: far more than can happen during one load.
const KEPT: usize = 1024;

#[derive(Default)]
pub(crate) struct TagDrops {
    /// The number the next drop gets; loads read it without the lock.
    next: AtomicU64,
    /// `(number, tag)`, oldest first; `None`: every entry (a clear, a resync).
    drops: Mutex<VecDeque<(u64, Option<Box<str>>)>>,
}

impl TagDrops {
    /// Where the record stands: what a load notes when it begins.
    pub(crate) fn now(&self) -> u64 {
        self.next.load(Ordering::SeqCst)
    }

    /// Records a drop of `tag`, or of everything (`None`).
    pub(crate) fn record(&self, tag: Option<&str>) {
        let mut drops = self.lock();
        // Numbered under the lock, so the record stays in order.
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        drops.push_back((n, tag.map(Into::into)));
        if drops.len() > KEPT {
            drops.pop_front();
        }
    }

    /// Whether a drop recorded since `since` concerns a value tagged `tags`.
    pub(crate) fn overtakes(&self, since: u64, tags: &[String]) -> bool {
        if self.now() == since {
            return false;
        }
        let drops = self.lock();
        if drops.front().is_none_or(|(first, _)| *first > since) {
            return true; // the record no longer reaches back that far
        }
        drops
            .iter()
            .filter(|(n, _)| *n >= since)
            .any(|(_, tag)| tag.as_deref().is_none_or(|t| tags.iter().any(|x| x == t)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, Option<Box<str>>)>> {
        self.drops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn only_drops_since_the_load_began_and_of_its_tags_overtake_it() {
        let d = TagDrops::default();
        d.record(Some("a"));
        let since = d.now();
        assert!(!d.overtakes(since, &tags(&["a"])), "before it began");
        d.record(Some("b"));
        assert!(d.overtakes(since, &tags(&["a", "b"])));
        assert!(!d.overtakes(since, &tags(&["a", "c"])));
        assert!(!d.overtakes(since, &[]));
        d.record(None);
        assert!(d.overtakes(since, &[]), "everything dropped");
    }

    #[test]
    fn a_record_too_short_to_tell_overtakes() {
        let d = TagDrops::default();
        let since = d.now();
        for i in 0..=KEPT {
            d.record(Some(&format!("t{i}")));
        }
        assert!(d.overtakes(since, &tags(&["unrelated"])));
        assert!(!d.overtakes(d.now(), &tags(&["unrelated"])));
    }
}
