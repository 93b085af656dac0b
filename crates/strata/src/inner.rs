//! `Inner`: what a cache and its background tasks share.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::Clock;
use crate::codec::Codec;
use crate::deferred::Deferred;
use crate::envelope::Times;
use crate::error::{BoxError, Error, Result};
use crate::fence::Fence;
use crate::invalidation::{Invalidation, InvalidationLog, LogAppend, Position, Target};
use crate::l1::{L1Map, Value};
use crate::lease::Lease;
use crate::options::EntryOptions;
use crate::resilience::{Call, Compartment, Guard};
use crate::single_flight::Flights;
use crate::stats::{Counter, Counters};
use crate::store::L2Store;
use crate::write_behind::WriteQueue;

/// Everything a cache and its background tasks share.
pub(crate) struct Inner {
    pub(crate) namespace: String,
    pub(crate) instance_id: u64,
    pub(crate) l1: Option<L1Map>,
    pub(crate) l2: Arc<dyn L2Store>,
    pub(crate) log: Arc<dyn InvalidationLog>,
    pub(crate) codec: Codec,
    pub(crate) raw: bool,
    pub(crate) defaults: EntryOptions,
    pub(crate) max_key_bytes: usize,
    pub(crate) max_value_bytes: usize,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) flights: Arc<Flights>,
    pub(crate) fence: Fence,
    /// The lease taken to refresh a value L2 still holds (a miss takes its lease in the data
    /// key); `None`: such refreshes are collapsed within this instance only.
    pub(crate) lease: Option<Arc<dyn Lease>>,
    pub(crate) lease_ttl: Duration,
    /// The longest L1 may go unvouched for by the log before its hits are bypassed (ms).
    pub(crate) max_staleness: Option<u64>,
    /// When (clock ms) the log last reported this instance caught up.
    pub(crate) caught_up: AtomicU64,
    /// With acknowledged writes: what this instance applied, and how long writes wait.
    pub(crate) acknowledged: Option<crate::acker::Acknowledged>,
    /// Keys whose lease another instance released, for the flights waiting on them.
    pub(crate) filled: tokio::sync::broadcast::Sender<String>,
    pub(crate) counters: Arc<Counters>,
    /// The guard around L2 calls (inside `l2`, a `GuardedStore`), for its state.
    pub(crate) l2_guard: Arc<Guard>,
    /// The guard around log publishes.
    pub(crate) log_guard: Guard,
    /// Bounds concurrent loader calls.
    pub(crate) loaders: Compartment,
    /// Writes whose shared half waits for the shared tier to come back.
    pub(crate) deferred: Arc<Deferred>,
    /// Where `write_behind` queues writes for the source of truth.
    pub(crate) write_queue: Option<Arc<dyn WriteQueue>>,
    /// Dropped with the cache; its receivers (follower, housekeeper) then stop.
    pub(crate) _shutdown: watch::Sender<()>,
}

/// An entry read from L2.
pub(crate) struct Found {
    pub(crate) value: Value,
    pub(crate) times: Times,
    pub(crate) tags: Vec<String>,
    /// How long the load that produced it took (XFetch's δ).
    pub(crate) load_ms: u32,
    /// Its encoded size in bytes (0 when it was never encoded), for an L1 bounded by bytes.
    pub(crate) size: u32,
    /// The envelope's stamp, when it came from one: what a refresh's fill must still find.
    pub(crate) stamp: Option<u64>,
}

impl Inner {
    /// Whether L1 may answer: the log vouched for it within `max_staleness` (always, without
    /// one). One relaxed load on the hit path, and only when a bound is set.
    #[inline]
    pub(crate) fn l1_trusted(&self, now: u64) -> bool {
        self.max_staleness
            .is_none_or(|max| now.saturating_sub(self.caught_up.load(Ordering::Relaxed)) <= max)
    }

    pub(crate) fn check_key(&self, key: &str) -> Result<()> {
        if key.len() > self.max_key_bytes {
            return Err(Error::KeyTooLong {
                len: key.len(),
                max: self.max_key_bytes,
            });
        }
        Ok(())
    }

    /// `target`'s log entry for the L2 store to append with its change, when the log lives
    /// beside the data; `None` otherwise (or if the log cannot say now: it is published apart).
    pub(crate) async fn log_append(&self, target: &Target) -> Option<LogAppend> {
        let invalidation = Invalidation {
            origin: self.instance_id,
            target: target.clone(),
        };
        self.log
            .beside(&self.namespace, &invalidation)
            .await
            .ok()
            .flatten()
    }

    /// Tells the other instances about `target`: counted if the store logged it already (at
    /// `logged`), published otherwise; with acknowledged writes, returns once they all
    /// applied it (or the wait is over).
    pub(crate) async fn announce(&self, target: Target, logged: Option<Position>) -> Result<()> {
        let position = match logged {
            Some(position) => {
                self.counters.incr(Counter::invalidations_sent);
                Some(position)
            }
            None => self.publish(target).await?,
        };
        if let (Some(ack), Some(position)) = (&self.acknowledged, position) {
            let acknowledged = self
                .log
                .await_acknowledged(&self.namespace, self.instance_id, position, ack.within)
                .await;
            if !matches!(acknowledged, Ok(true)) {
                self.counters.incr(Counter::writes_unacknowledged);
            }
        }
        Ok(())
    }

    pub(crate) async fn publish(&self, target: Target) -> Result<Option<Position>> {
        let invalidation = Invalidation {
            origin: self.instance_id,
            target,
        };
        let published = self
            .log_guard
            .call(Call::Write, || {
                self.log.publish(&self.namespace, &invalidation)
            })
            .await;
        match published {
            Ok(position) => {
                self.counters.incr(Counter::invalidations_sent);
                Ok(position)
            }
            Err(e) => {
                self.counters.incr(Counter::log_errors);
                Err(e)
            }
        }
    }
}

/// Converts a loader's error into a shareable source.
pub(crate) fn box_error<E: Into<Box<dyn std::error::Error + Send + Sync>>>(e: E) -> BoxError {
    Arc::from(e.into())
}
