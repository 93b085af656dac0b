//! Single-flight per key: concurrent misses of one key share one L2 read and one load.
//!
//! The first caller becomes the leader and gets a [`Leader`]; the work runs in its own task, so a
//! caller that gives up (is cancelled, or returns a stale value at its soft timeout) does not
//! cancel the load others wait on. Followers wait on a `watch` channel for the leader's answer.
//! The leader may answer more than once (first a stale value, then the loaded one); a follower
//! takes whichever answer is there when it looks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

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

type Slot = watch::Receiver<Option<Outcome>>;

/// A flight in the map: its id, where its answers go, and whether an invalidation overtook it.
struct Flight {
    id: u64,
    slot: Slot,
    poisoned: Arc<AtomicBool>,
}

/// The flights in progress, by key.
#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<String, Flight>>,
    ids: AtomicU64,
}

pub(crate) enum Join {
    Lead(Leader),
    Follow(Waiter),
}

impl Flights {
    /// Joins the flight for `key`, or starts one.
    pub(crate) fn join(self: &Arc<Self>, key: &str) -> Join {
        let mut map = self.lock();
        if let Some(flight) = map.get(key) {
            return Join::Follow(Waiter(flight.slot.clone()));
        }
        let (tx, slot) = watch::channel(None);
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let poisoned = Arc::new(AtomicBool::new(false));
        let flight = Flight {
            id,
            slot,
            poisoned: poisoned.clone(),
        };
        map.insert(key.to_owned(), flight);
        Join::Lead(Leader {
            flights: self.clone(),
            key: key.to_owned(),
            id,
            tx,
            poisoned,
        })
    }

    /// An invalidation of `key` was applied: the flight in progress may carry a value read
    /// before it. It must not fill L1, and no later caller may join it.
    pub(crate) fn poison(&self, key: &str) {
        if let Some(flight) = self.lock().remove(key) {
            flight.poisoned.store(true, Ordering::SeqCst);
        }
    }

    /// Ends every flight's taking in of callers, leaving the fill to each flight's own check
    /// (a tag invalidation: only the flights of its entries are overtaken, which their values
    /// will tell; see `TagDrops`).
    pub(crate) fn detach_all(&self) {
        self.lock().clear();
    }

    /// [`poison`](Self::poison) for every flight (a namespace invalidation, a resync).
    pub(crate) fn poison_all(&self) {
        for (_, flight) in self.lock().drain() {
            flight.poisoned.store(true, Ordering::SeqCst);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Flight>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The right and duty to answer a key's flight; dropping it ends the flight.
pub(crate) struct Leader {
    flights: Arc<Flights>,
    key: String,
    id: u64,
    tx: watch::Sender<Option<Outcome>>,
    poisoned: Arc<AtomicBool>,
}

impl Leader {
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// A waiter for this flight's answers.
    pub(crate) fn waiter(&self) -> Waiter {
        Waiter(self.tx.subscribe())
    }

    /// Whether callers other than the leader's own wait on this flight.
    pub(crate) fn followed(&self) -> bool {
        // The leader's caller holds one receiver; the flight in the map holds another
        // until the flight leaves it.
        self.tx.receiver_count() > 2
    }

    /// Whether an answer was given already.
    pub(crate) fn answered(&self) -> bool {
        self.tx.borrow().is_some()
    }

    /// Hands an early `outcome` (a stale value) to every waiter, present and future, while the
    /// flight goes on.
    pub(crate) fn answer(&self, outcome: Outcome) {
        self.tx.send_replace(Some(outcome));
    }

    /// Ends the flight with `outcome`. The flight leaves the map first, so a caller arriving
    /// after this starts afresh rather than taking an answer that an invalidation may already
    /// have made stale. The leader may still carry on with work nobody waits for (a fill).
    pub(crate) fn finish(&self, outcome: Outcome) {
        self.unregister();
        self.tx.send_replace(Some(outcome));
    }

    /// Whether an invalidation of the key was applied since this flight began.
    pub(crate) fn poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst)
    }

    fn unregister(&self) {
        let mut map = self.flights.lock();
        if map.get(&self.key).is_some_and(|f| f.id == self.id) {
            map.remove(&self.key);
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.unregister();
    }
}

/// Waits for a flight's answer.
pub(crate) struct Waiter(Slot);

impl Waiter {
    pub(crate) async fn wait(mut self, key: &str) -> Outcome {
        match self.0.wait_for(Option::is_some).await {
            Ok(answer) => answer
                .clone()
                .unwrap_or_else(|| Err(Error::Abandoned(key.to_owned()))),
            // The leader's task ended without answering (it panicked or the runtime shut down).
            Err(_) => Err(Error::Abandoned(key.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_leader_many_followers_then_a_new_flight() {
        let flights = Arc::new(Flights::default());
        let Join::Lead(leader) = flights.join("k") else {
            panic!("first caller leads")
        };
        let followers: Vec<_> = (0..10)
            .map(|_| match flights.join("k") {
                Join::Follow(w) => w,
                Join::Lead(_) => panic!("second caller must follow"),
            })
            .collect();
        assert!(matches!(flights.join("other"), Join::Lead(_)));
        let value: Value = Some(Arc::new(5u32));
        leader.finish(Ok((value, Source::Loaded)));
        assert!(
            matches!(flights.join("k"), Join::Lead(_)),
            "a finished flight takes no one"
        );
        for w in followers {
            let (v, src) = w.wait("k").await.unwrap();
            assert_eq!(src, Source::Loaded);
            assert_eq!(*v.unwrap().downcast::<u32>().unwrap(), 5);
        }
    }

    #[tokio::test]
    async fn poisoning_marks_the_flight_and_lets_the_next_caller_lead() {
        let flights = Arc::new(Flights::default());
        let Join::Lead(old) = flights.join("k") else {
            panic!()
        };
        let Join::Lead(other) = flights.join("other") else {
            panic!()
        };
        flights.poison("k");
        assert!(old.poisoned() && !other.poisoned());
        let Join::Lead(new) = flights.join("k") else {
            panic!("a poisoned flight takes no one")
        };
        drop(old);
        assert!(
            matches!(flights.join("k"), Join::Follow(_)),
            "the old leader leaves the new flight alone"
        );
        flights.poison_all();
        assert!(new.poisoned() && other.poisoned());
    }

    #[tokio::test]
    async fn a_leader_dropped_without_answer_abandons_its_followers() {
        let flights = Arc::new(Flights::default());
        let Join::Lead(leader) = flights.join("k") else {
            panic!()
        };
        let Join::Follow(w) = flights.join("k") else {
            panic!()
        };
        drop(leader);
        assert!(matches!(w.wait("k").await, Err(Error::Abandoned(_))));
    }
}
