//! Single-flight per key: concurrent misses of one key share one L2 read and one load.
//!
//! The first caller becomes the leader and gets a [`Leader`]; the work runs in its own task, so a
//! caller that gives up (is cancelled, or returns a stale value at its soft timeout) does not
//! cancel the load others wait on. Followers wait on the flight's slot for the leader's answer.
//! The leader may answer more than once (first a stale value, then the loaded one); a follower
//! takes whichever answer is there when it looks.
//!
//! The slot is our own (the answer under a mutex, one `Notify` and two flags,
//! in one allocation) rather than a `watch` channel: every L1 miss starts a flight and most
//! have nobody but their own caller waiting, and a `watch` channel's eight notifiers were
//! woken on each answer and again on each drop (BENCHMARKS.md, "A flight's slot, one timer
//! per connection, a smaller miss future").

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use crate::error::Error;
use crate::value::Value;

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// A fresh value found in L2.
    L2,
    /// A value the loader produced.
    Loaded,
    /// A value another instance loaded while this flight waited on its lease.
    Waited,
    /// A stale value: stale-while-revalidate, soft timeout or fail-safe.
    Stale,
}

/// What a flight hands its waiters.
pub(crate) type Outcome = Result<(Value, Source), Error>;

/// What a flight's leader and waiters share.
#[derive(Default)]
struct Slot {
    /// The latest answer.
    answer: Mutex<Option<Outcome>>,
    /// Woken at each answer, and when the leader goes.
    changed: Notify,
    /// The leader is gone: no answer comes after the one there is (if any).
    closed: AtomicBool,
    /// An invalidation overtook the flight.
    poisoned: AtomicBool,
}

impl Slot {
    fn answer(&self) -> MutexGuard<'_, Option<Outcome>> {
        // A poisoned lock still holds a whole answer (it is only ever replaced whole).
        self.answer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn waiter(self: &Arc<Self>) -> Waiter {
        Waiter(self.clone())
    }
}

/// A flight in the map: its id and its slot.
struct Flight {
    id: u64,
    slot: Arc<Slot>,
}

/// One part of the flights map: keyed by the leader's own copy of the key (one allocation for
/// both).
type Part = HashMap<Arc<str>, Flight, foldhash::fast::RandomState>;
type Shard = Mutex<Part>;

/// Parts the map is split into. Every L1 miss takes a part's lock twice (join, end), from
/// every worker thread at once: one lock for all showed as contended waits in a profile of
/// W1 (BENCHMARKS.md, "Fewer locks per flight").
const SHARDS: usize = 16;

/// The flights in progress, by key (hashed as L1's keys are: seeded foldhash, where SipHash
/// was a visible share of a miss).
pub(crate) struct Flights {
    shards: [Shard; SHARDS],
    /// Picks a key's part (its own seed: independent of the buckets inside the part).
    spread: foldhash::fast::RandomState,
    ids: AtomicU64,
}

impl Default for Flights {
    fn default() -> Self {
        Flights {
            shards: std::array::from_fn(|_| Shard::default()),
            spread: foldhash::fast::RandomState::default(),
            ids: AtomicU64::new(0),
        }
    }
}

pub(crate) enum Join {
    Lead(Leader),
    Follow(Waiter),
}

impl Flights {
    /// Joins the flight for `key`, or starts one.
    pub(crate) fn join(self: &Arc<Self>, key: &str) -> Join {
        let mut map = self.lock(key);
        if let Some(flight) = map.get(key) {
            return Join::Follow(flight.slot.waiter());
        }
        let slot = Arc::new(Slot::default());
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let key: Arc<str> = Arc::from(key);
        map.insert(
            key.clone(),
            Flight {
                id,
                slot: slot.clone(),
            },
        );
        Join::Lead(Leader {
            flights: self.clone(),
            key,
            id,
            slot,
            finished: false,
        })
    }

    /// An invalidation of `key` was applied: the flight in progress may carry a value read
    /// before it. It must not fill L1, and no later caller may join it.
    pub(crate) fn poison(&self, key: &str) {
        if let Some(flight) = self.lock(key).remove(key) {
            flight.slot.poisoned.store(true, Ordering::SeqCst);
        }
    }

    /// Ends every flight's taking in of callers, leaving the fill to each flight's own check
    /// (a tag invalidation: only the flights of its entries are overtaken, which their values
    /// will tell; see `TagDrops`).
    pub(crate) fn detach_all(&self) {
        for shard in &self.shards {
            Self::locked(shard).clear();
        }
    }

    /// [`poison`](Self::poison) for every flight (a namespace invalidation, a resync).
    pub(crate) fn poison_all(&self) {
        for shard in &self.shards {
            for (_, flight) in Self::locked(shard).drain() {
                flight.slot.poisoned.store(true, Ordering::SeqCst);
            }
        }
    }

    /// The part holding `key`'s flight, locked.
    fn lock(&self, key: &str) -> MutexGuard<'_, Part> {
        let hash = self.spread.hash_one(key);
        // The top bits: the part's own table indexes by the low bits of its own hash.
        Self::locked(&self.shards[(hash >> (64 - SHARDS.trailing_zeros())) as usize])
    }

    fn locked(shard: &Shard) -> MutexGuard<'_, Part> {
        shard.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The right and duty to answer a key's flight; dropping it ends the flight.
pub(crate) struct Leader {
    flights: Arc<Flights>,
    key: Arc<str>,
    id: u64,
    slot: Arc<Slot>,
    /// Out of the map already (it answered for good): its drop has nothing to take out.
    finished: bool,
}

impl Leader {
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// The key, shared rather than copied (a lease held for the flight names it too).
    pub(crate) fn shared_key(&self) -> Arc<str> {
        self.key.clone()
    }

    /// A waiter for this flight's answers.
    pub(crate) fn waiter(&self) -> Waiter {
        self.slot.waiter()
    }

    /// Whether an answer was given already.
    pub(crate) fn answered(&self) -> bool {
        self.slot.answer().is_some()
    }

    /// Hands an early `outcome` (a stale value) to every waiter, present and future, while the
    /// flight goes on.
    pub(crate) fn answer(&self, outcome: Outcome) {
        *self.slot.answer() = Some(outcome);
        self.slot.changed.notify_waiters();
    }

    /// Ends the flight with `outcome`. The flight leaves the map first, so a caller arriving
    /// after this starts afresh rather than taking an answer that an invalidation may already
    /// have made stale. The leader may still carry on with work nobody waits for (a fill).
    pub(crate) fn finish(&mut self, outcome: Outcome) {
        self.unregister();
        self.answer(outcome);
    }

    /// Whether an invalidation of the key was applied since this flight began.
    pub(crate) fn poisoned(&self) -> bool {
        self.slot.poisoned.load(Ordering::SeqCst)
    }

    fn unregister(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let mut map = self.flights.lock(&self.key);
        if map.get(&*self.key).is_some_and(|f| f.id == self.id) {
            map.remove(&*self.key);
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if self.finished {
            // Answered for good: every waiter finds the answer before it looks at `closed`.
            return;
        }
        self.unregister();
        self.slot.closed.store(true, Ordering::SeqCst);
        self.slot.changed.notify_waiters();
    }
}

/// Waits for a flight's answer.
pub(crate) struct Waiter(Arc<Slot>);

impl Waiter {
    pub(crate) async fn wait(self, key: &str) -> Outcome {
        let slot = &self.0;
        // Most waits are a leader's own caller's, after its flight answered: taken without
        // registering with the `Notify` (two locks of its list).
        if let Some(answer) = slot.answer().as_ref() {
            return answer.clone();
        }
        loop {
            // Registered before looking, so an answer given after the look wakes it.
            let changed = slot.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            if let Some(answer) = slot.answer().as_ref() {
                return answer.clone();
            }
            // The leader's task ended without answering (it panicked, was cancelled, or the
            // runtime shut down).
            if slot.closed.load(Ordering::SeqCst) {
                return Err(Error::Abandoned(key.to_owned()));
            }
            changed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Joins `key`'s flight, which must be new: this caller leads it.
    fn lead(flights: &Arc<Flights>, key: &str) -> Leader {
        match flights.join(key) {
            Join::Lead(leader) => leader,
            Join::Follow(_) => panic!("{key}: expected to lead a new flight"),
        }
    }

    /// Joins `key`'s flight, which must be under way: this caller follows it.
    fn follow(flights: &Arc<Flights>, key: &str) -> Waiter {
        match flights.join(key) {
            Join::Follow(waiter) => waiter,
            Join::Lead(_) => panic!("{key}: expected to follow a flight under way"),
        }
    }

    /// The `u32` a waiter of `k`'s flight is answered with, and where it came from.
    async fn answer(waiter: Waiter) -> (u32, Source) {
        let (value, source) = waiter.wait("k").await.unwrap();
        (*value.unwrap().downcast::<u32>().unwrap(), source)
    }

    #[tokio::test]
    async fn one_leader_many_followers_then_a_new_flight() {
        let flights = Arc::new(Flights::default());
        let mut leader = lead(&flights, "k");
        let followers: Vec<_> = (0..10).map(|_| follow(&flights, "k")).collect();
        assert!(matches!(flights.join("other"), Join::Lead(_)));
        let value: Value = Some(Arc::new(5u32));
        leader.finish(Ok((value, Source::Loaded)));
        assert!(
            matches!(flights.join("k"), Join::Lead(_)),
            "a finished flight takes no one"
        );
        for w in followers {
            assert_eq!(answer(w).await, (5, Source::Loaded));
        }
    }

    #[tokio::test]
    async fn poisoning_marks_the_flight_and_lets_the_next_caller_lead() {
        let flights = Arc::new(Flights::default());
        let old = lead(&flights, "k");
        let other = lead(&flights, "other");
        flights.poison("k");
        assert!(old.poisoned() && !other.poisoned());
        // A poisoned flight takes no one: the next caller leads a new one.
        let new = lead(&flights, "k");
        drop(old);
        assert!(
            matches!(flights.join("k"), Join::Follow(_)),
            "the old leader leaves the new flight alone"
        );
        flights.poison_all();
        assert!(new.poisoned() && other.poisoned());
    }

    /// The map is split in parts: what concerns every flight reaches the flights of every part.
    #[tokio::test]
    async fn every_part_of_the_map_is_poisoned_and_detached() {
        let flights = Arc::new(Flights::default());
        let keys: Vec<String> = (0..200).map(|i| format!("key:{i}")).collect();
        let leaders: Vec<Leader> = keys.iter().map(|k| lead(&flights, k)).collect();
        for k in &keys {
            drop(follow(&flights, k));
        }
        flights.poison_all();
        assert!(leaders.iter().all(Leader::poisoned));
        let again: Vec<Leader> = keys.iter().map(|k| lead(&flights, k)).collect();
        flights.detach_all();
        assert!(
            again.iter().all(|l| !l.poisoned()),
            "detached, not poisoned"
        );
        let third: Vec<Leader> = keys.iter().map(|k| lead(&flights, k)).collect();
        // A finished leader's drop leaves the flight that followed it alone.
        let mut first = lead(&flights, "finished");
        first.finish(Ok((None, Source::Loaded)));
        let next = lead(&flights, "finished");
        drop(first);
        drop(follow(&flights, "finished"));
        drop((leaders, again, third, next));
    }

    #[tokio::test]
    async fn a_waiter_takes_the_latest_answer() {
        let flights = Arc::new(Flights::default());
        let mut leader = lead(&flights, "k");
        let own = leader.waiter();
        // A stale answer first, then the loaded one: a waiter takes what is there.
        leader.answer(Ok((Some(Arc::new(1u32)), Source::Stale)));
        assert!(leader.answered());
        leader.finish(Ok((Some(Arc::new(2u32)), Source::Loaded)));
        assert_eq!(answer(own).await, (2, Source::Loaded));
    }

    /// Waiters already waiting when the answer comes are woken by it. (One thread: the
    /// yield lets every follower run until it waits, before the leader answers.)
    #[tokio::test]
    async fn a_waiting_follower_is_woken_by_the_answer() {
        let flights = Arc::new(Flights::default());
        let mut leader = lead(&flights, "k");
        let followers: Vec<_> = (0..50)
            .map(|_| tokio::spawn(answer(follow(&flights, "k"))))
            .collect();
        tokio::task::yield_now().await;
        assert!(
            followers.iter().all(|f| !f.is_finished()),
            "every follower waits before the answer"
        );
        // The leader stays: the answer alone must wake them (not its drop).
        leader.finish(Ok((Some(Arc::new(7u32)), Source::Loaded)));
        for f in followers {
            let (v, _) = tokio::time::timeout(std::time::Duration::from_secs(5), f)
                .await
                .expect("woken")
                .unwrap();
            assert_eq!(v, 7);
        }
    }

    #[tokio::test]
    async fn a_leader_dropped_without_answer_abandons_its_followers() {
        let flights = Arc::new(Flights::default());
        let leader = lead(&flights, "k");
        let w = follow(&flights, "k");
        drop(leader);
        assert!(matches!(w.wait("k").await, Err(Error::Abandoned(_))));
    }
}
