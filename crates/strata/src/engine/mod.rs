//! The engine: what a cache and its background tasks share, and, in its child modules, what
//! they do with it — each a set of `impl Engine` (or `impl Load`) blocks over one concern.
//!
//! - [`l1`]: filling L1 (fenced) and applying invalidations to it;
//! - [`l2`]: encoding and decoding entries, reading and writing L2;
//! - [`load`]: a flight — L2, the lease, the loader, the fill — and [`load::turn`], whose
//!   turn it is to load across instances;
//! - [`write`](mod@write): the shared half of a write (the log) and the wait for acknowledgements;
//! - [`replay`]: settling writes, replaying the deferred ones;
//! - the background tasks: [`follower`] (the log), [`acker`] (acknowledgements),
//!   [`housekeeper`] (metrics, sweeps).

pub(crate) mod acker;
pub(crate) mod follower;
pub(crate) mod housekeeper;
pub(crate) mod l1;
pub(crate) mod l2;
pub(crate) mod load;
pub(crate) mod replay;
pub(crate) mod write;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::acks::Acknowledged;
use crate::clock::Clock;
use crate::codec::Codec;
use crate::deferred::Deferred;
use crate::ends::LoadEnds;
use crate::error::{Error, Result};
use crate::fence::Fence;
use crate::hot_keys::HotKeys;
use crate::in_flight::InFlight;
use crate::invalidation::InvalidationLog;
use crate::l1::L1Map;
use crate::lease::Lease;
use crate::options::EntryOptions;
use crate::resilience::{Compartment, Guard};
use crate::single_flight::Flights;
use crate::stats::{Counter, Counters};
use crate::store::L2Store;
use crate::tag_drops::TagDrops;
use crate::write_behind::WriteQueue;

/// Everything a cache and its background tasks share.
pub(crate) struct Engine {
    pub(crate) namespace: Arc<str>,
    pub(crate) instance_id: u64,
    pub(crate) l1: Option<L1Map>,
    pub(crate) l2: Arc<dyn L2Store>,
    pub(crate) log: Arc<dyn InvalidationLog>,
    pub(crate) codec: Codec,
    pub(crate) raw: bool,
    pub(crate) defaults: EntryOptions,
    pub(crate) max_key_bytes: usize,
    pub(crate) max_value_bytes: usize,
    /// The length of the last value encoded: the next one's buffer starts that big rather
    /// than growing by doubling (see `encode`).
    pub(crate) encoded_len: AtomicUsize,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) flights: Arc<Flights>,
    pub(crate) fence: Fence,
    /// The tags invalidated lately, for the loads that began before ([`TagDrops`]).
    pub(crate) tag_drops: TagDrops,
    /// The lease taken to refresh a value L2 still holds (a miss takes its lease in the data
    /// key); `None`: such refreshes are collapsed within this instance only.
    pub(crate) lease: Option<Arc<dyn Lease>>,
    pub(crate) lease_ttl: Duration,
    /// The longest L1 may go unvouched for by the log before its hits are bypassed (ms).
    pub(crate) max_staleness: Option<u64>,
    /// When (clock ms) the log last reported this instance caught up.
    pub(crate) caught_up: AtomicU64,
    /// With acknowledged writes: what this instance applied, and how long writes wait.
    pub(crate) acknowledged: Option<Acknowledged>,
    /// The flights waiting on another instance's load, by key: woken when it ends.
    pub(crate) load_ends: LoadEnds,
    /// The fills of L2 still in flight after their misses were answered.
    pub(crate) fills: Arc<InFlight>,
    pub(crate) counters: Arc<Counters>,
    /// The keys read most, sampled, for operators (`strata top`).
    pub(crate) hot_keys: HotKeys,
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

impl Engine {
    /// Counts a read's outcome, unless its options say it counts nowhere
    /// ([`EntryOptions::uncounted`]).
    #[inline]
    pub(crate) fn count(&self, options: &EntryOptions, counter: Counter) {
        if options.counted {
            self.counters.incr(counter);
        }
    }

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
}
