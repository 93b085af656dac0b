//! The engine's L1 operations: filling it (fenced against invalidations applied meanwhile)
//! and applying invalidations to it.

use super::Engine;
use crate::l1::L1Entry;
use crate::options::{EntryOptions, ms};
use crate::stats::Counter;
use crate::value::Found;

/// What an L1 copy may answer a read with at a given time: the one rule every read path
/// (`get_or_load`, `get`, `get_many_or_load`) applies, each adding only what it does beyond
/// answering (a refresh, a fallback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Serve {
    /// Its value, fresh.
    Fresh,
    /// Its value, past the soft expiry: a refresh is due.
    Stale,
    /// Its value, a fail-safe copy within its throttle (the loader failed).
    FailSafe,
    /// Nothing: the log cannot vouch for L1 just now (the staleness bound); counted in
    /// `l1_bypassed`. The copy may still serve as a fail-safe fallback.
    Untrusted,
    /// Nothing: past its time in L1. The copy may still serve as a fail-safe fallback.
    Expired,
}

impl Engine {
    /// What `e` may answer a read with at `now` (see [`Serve`]).
    #[inline]
    pub(crate) fn l1_serves(&self, e: &L1Entry, now: u64) -> Serve {
        if now >= e.l1_until {
            return Serve::Expired;
        }
        if !self.l1_trusted(now) {
            self.counters.incr(Counter::l1_bypassed);
            return Serve::Untrusted;
        }
        if e.fail_safe {
            Serve::FailSafe
        } else if now < e.times.fresh_until {
            Serve::Fresh
        } else {
            Serve::Stale
        }
    }

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
    /// Whether the entry went in.
    pub(crate) fn insert_l1_unless(
        &self,
        key: &str,
        entry: L1Entry,
        overtaken: impl Fn() -> bool,
    ) -> bool {
        let Some(l1) = &self.l1 else { return false };
        if !overtaken() {
            l1.insert(key.to_owned(), entry);
            if !overtaken() {
                return true;
            }
            l1.remove(key);
        }
        self.counters.incr(Counter::fills_fenced);
        false
    }

    /// Takes the copy of `found` back out of L1 (L2 refused its fill), unless something
    /// newer replaced it there meanwhile (a write-through).
    pub(crate) fn unfill_l1(&self, key: &str, found: &Found) {
        if let Some(l1) = &self.l1 {
            l1.remove_if(key, |entry| entry.is_copy_of(found));
        }
    }

    // Each `drop_*` applies an invalidation here. It first marks what it overtakes — the loads
    // in flight (poisoned: they neither fill L1 nor take in new callers) and the fence that
    // plain reads check — then clears L1.

    /// Marks `key` overtaken by a change: an invalidation, or a write-through.
    pub(crate) fn overtake(&self, key: &str) {
        self.flights.poison(key);
        self.fence.bump(key);
        // The change replaced or deleted the key in L2 first, and with it any lease record a
        // flight here waits on: that wait is over. Without this, a waiter whose record an
        // invalidation deleted heard of no fill and slept until its poll (50 ms): W1's hot
        // keys, written while a flight on them waited, did so ~100 times a run.
        self.load_ends.announce(key);
    }

    pub(crate) fn drop_l1(&self, key: &str) {
        self.overtake(key);
        if let Some(l1) = &self.l1 {
            l1.remove(key);
        }
    }

    /// Marks what a drop of `tag` overtakes: the loads in flight (a flight's tags are unknown
    /// until it ends, so each checks its value's against this record before it fills, and
    /// none takes in callers from now on: they would get what it read before the drop) and
    /// the fence that plain reads check.
    pub(crate) fn overtake_tag(&self, tag: &str) {
        self.tag_drops.record(Some(tag));
        self.flights.detach_all();
        self.fence.bump_all();
    }

    pub(crate) fn drop_tag(&self, tag: &str) {
        self.overtake_tag(tag);
        if let Some(l1) = &self.l1 {
            // One pass over every shard, each under its write lock in turn: tag
            // invalidations are rare next to reads, and this keeps reads free of checks.
            l1.retain(|_, e| !e.has_tag(tag));
        }
    }

    pub(crate) fn drop_all(&self) {
        self.tag_drops.record(None);
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
        self.load_ends.announce_all();
    }
}
