//! The in-process backplane: the default when no shared log is configured.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, mpsc};

use super::{Invalidation, InvalidationLog, LogEvent, Position, Subscription};
use crate::error::Error;

/// An in-process [`InvalidationLog`]. Clones share their followers, so caches built on clones of
/// one `MemoryLog` see each other's invalidations, like instances sharing one Redis.
///
/// Delivery is lossless and in publish order: each follower has its own unbounded queue.
/// Entries are numbered per namespace, and instances acknowledge what they applied, so
/// writes can wait for every instance (see
/// [`acknowledged_writes`](crate::HybridCacheBuilder::acknowledged_writes)).
#[derive(Debug, Clone, Default)]
pub struct MemoryLog {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    acknowledged: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// Each follower: its namespace and its queue.
    followers: Vec<(String, mpsc::UnboundedSender<LogEvent>)>,
    /// The last entry's number, by namespace.
    sequences: HashMap<String, u64>,
    /// What each instance acknowledged, by namespace and instance.
    acks: HashMap<(String, u64), u64>,
}

impl MemoryLog {
    /// A log with no followers yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Each change below is one insert or removal: a panic elsewhere leaves it valid.
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl InvalidationLog for MemoryLog {
    async fn publish(
        &self,
        namespace: &str,
        invalidation: &Invalidation,
    ) -> Result<Option<Position>, Error> {
        let mut state = self.lock();
        let seq = state.sequences.entry(namespace.to_owned()).or_default();
        *seq += 1;
        let position = Position { part: 0, seq: *seq };
        let caught_up = LogEvent::CaughtUp {
            lag: None,
            age: Duration::ZERO,
            position: Some(position),
        };
        // Sending fails only when the follower is gone: forget it.
        state.followers.retain(|(ns, tx)| {
            ns != namespace
                || (tx.send(LogEvent::Apply(invalidation.clone())).is_ok()
                    && tx.send(caught_up.clone()).is_ok())
        });
        Ok(Some(position))
    }

    async fn follow(&self, namespace: &str) -> Result<Subscription, Error> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.lock();
        // Where it starts: everything before is (vacuously) applied.
        let seq = state.sequences.get(namespace).copied().unwrap_or(0);
        let _ = tx.send(LogEvent::CaughtUp {
            lag: None,
            age: Duration::ZERO,
            position: Some(Position { part: 0, seq }),
        });
        state.followers.push((namespace.to_owned(), tx));
        Ok(rx)
    }

    fn acknowledges(&self) -> bool {
        true
    }

    async fn acknowledge(
        &self,
        namespace: &str,
        instance: u64,
        applied: &[u64],
    ) -> Result<(), Error> {
        let id = (namespace.to_owned(), instance);
        match applied.first() {
            Some(seq) => drop(self.lock().acks.insert(id, *seq)),
            // An instance leaving.
            None => drop(self.lock().acks.remove(&id)),
        }
        self.shared.acknowledged.notify_waiters();
        Ok(())
    }

    async fn await_acknowledged(
        &self,
        namespace: &str,
        origin: u64,
        position: Position,
        within: Duration,
    ) -> Result<bool, Error> {
        let all = || {
            self.lock()
                .acks
                .iter()
                .filter(|((ns, instance), _)| ns == namespace && *instance != origin)
                .all(|(_, seq)| *seq >= position.seq)
        };
        let wait = async {
            loop {
                // Registered before the check, so no acknowledgement after it is missed.
                let acknowledged = self.shared.acknowledged.notified();
                if all() {
                    return;
                }
                acknowledged.await;
            }
        };
        Ok(tokio::time::timeout(within, wait).await.is_ok())
    }
}
