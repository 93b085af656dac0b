//! The acknowledgement state of a cache with
//! [acknowledged writes](crate::HybridCacheBuilder::acknowledged_writes): how far its follower
//! applied the log, and whether others count it yet. The engine's acker reports it.

use std::time::Duration;

use tokio::sync::watch;

use crate::invalidation::Position;

/// The longest `build` waits for this instance's first acknowledgement, and `shutdown` for
/// its goodbye.
const JOIN_WAIT: Duration = Duration::from_secs(2);

/// Leaving states.
const STAYING: u8 = 0;
const LEAVING: u8 = 1;
const LEFT: u8 = 2;

/// The acknowledgement state of a cache.
pub(crate) struct Acknowledged {
    /// What the follower applied, by part of the log: the acker reports it.
    applied: watch::Sender<Vec<u64>>,
    /// Whether the first acknowledgement went out.
    joined: watch::Sender<bool>,
    /// Where leaving stands: [`STAYING`], [`LEAVING`] (asked), [`LEFT`] (the goodbye went out).
    leaving: watch::Sender<u8>,
    /// How long a write waits for the others.
    pub(crate) within: Duration,
}

impl Acknowledged {
    pub(crate) fn new(within: Duration) -> Self {
        Acknowledged {
            applied: watch::channel(Vec::new()).0,
            joined: watch::channel(false).0,
            leaving: watch::channel(STAYING).0,
            within,
        }
    }

    /// The follower delivered the log up to `position`, and what came before is applied.
    pub(crate) fn record(&self, position: Position) {
        self.applied.send_if_modified(|applied| {
            let new_part = applied.len() <= position.part;
            if new_part {
                applied.resize(position.part + 1, 0);
            }
            let seq = &mut applied[position.part];
            let advanced = position.seq > *seq;
            *seq = (*seq).max(position.seq);
            new_part || advanced
        });
    }

    /// What the follower applied, as the acker watches it.
    pub(crate) fn applied(&self) -> watch::Receiver<Vec<u64>> {
        self.applied.subscribe()
    }

    /// The first acknowledgement went out.
    pub(crate) fn mark_joined(&self) {
        self.joined.send_replace(true);
    }

    /// A receiver for [`joined`](Self::joined), taken before the acker starts.
    pub(crate) fn first(&self) -> watch::Receiver<bool> {
        self.joined.subscribe()
    }

    /// What the acker watches to leave.
    pub(crate) fn leaving(&self) -> watch::Receiver<u8> {
        self.leaving.subscribe()
    }

    /// The acker said goodbye.
    pub(crate) fn mark_left(&self) {
        self.leaving.send_replace(LEFT);
    }

    /// Asks the acker to say goodbye and waits (bounded) until it has: from then on the
    /// others' writes no longer wait for this instance.
    pub(crate) async fn leave(&self) {
        let mut left = self.leaving.subscribe();
        self.leaving.send_if_modified(|state| {
            let staying = *state == STAYING;
            if staying {
                *state = LEAVING;
            }
            staying
        });
        let gone = tokio::time::timeout(JOIN_WAIT, left.wait_for(|s| *s == LEFT)).await;
        if !matches!(gone, Ok(Ok(_))) {
            tracing::warn!(
                "the goodbye did not go out; other instances' writes wait for this one until its last sign of life expires"
            );
        }
    }

    /// Waits (bounded) until the first acknowledgement went out: from then on the others'
    /// writes wait for this instance.
    pub(crate) async fn joined(&self, mut first: watch::Receiver<bool>) {
        let joined = tokio::time::timeout(JOIN_WAIT, first.wait_for(|j| *j)).await;
        if !matches!(joined, Ok(Ok(_))) {
            tracing::warn!(
                "no acknowledgement went out yet; other instances' writes may not wait for this one at first"
            );
        }
    }
}
