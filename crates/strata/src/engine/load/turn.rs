//! Whose turn it is to load a key across instances. The flight's first read of L2 took the
//! key's load lease if nothing was there; here it waits for the instance that holds it
//! (woken by the announcement of its fill, or at its next poll), bounded by the lease's TTL,
//! or takes the refresh lease of a value L2 still holds.

use std::time::{Duration, Instant};

use super::{Load, Step, Turn};
use crate::engine::l2::L2Read;
use crate::l1::L1Entry;
use crate::lease::{Held, Kind};
use crate::single_flight::Source;
use crate::stats::Counter;
use crate::store::Fence;
use crate::value::CacheValue;

/// First and longest pause between L2 reads while another instance holds the lease; the
/// announcement of its fill usually ends the wait first.
const LEASE_POLL_MIN: Duration = Duration::from_millis(1);
const LEASE_POLL_MAX: Duration = Duration::from_millis(10);

/// Returns when the end of `key`'s load is announced (or announcements were lost).
async fn released(filled: &mut tokio::sync::broadcast::Receiver<String>, key: &str) {
    loop {
        match filled.recv().await {
            Ok(k) if k == key => return,
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
            // The cache is going away; the poll ends the wait.
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Load {
    /// What `read` means: a hit, or how the load goes on. Keeps the lease the read took and
    /// the fence the fill will need.
    pub(crate) fn judge(&mut self, read: L2Read) -> Step {
        match read {
            L2Read::Found(found, now) => {
                let newer_than_ours = |s: &L1Entry| s.times.created < found.times.created;
                if now < found.times.fresh_until
                    && (!self.early || self.stale.as_ref().is_none_or(newer_than_ours))
                {
                    return Step::Hit(found, now);
                }
                let fence = found.stamp.map_or(Fence::None, Fence::Stamp);
                if self.stale.as_ref().is_none_or(newer_than_ours) {
                    self.stale = Some(L1Entry::of(&found, 0));
                }
                Step::Refresh(fence)
            }
            L2Read::Unusable(bytes) => Step::Refresh(Fence::Bytes(bytes)),
            L2Read::Leased => {
                self.fence = Some(Fence::Lease(self.token));
                self.lease = Some(self.held(Kind::Record(self.inner.l2.clone())));
                Step::Load
            }
            L2Read::Loading => Step::Wait,
            L2Read::Absent => {
                self.fence = Some(Fence::None);
                Step::Load
            }
            // Nothing to fence with: the fill will leave L2 alone.
            L2Read::Failed => Step::Load,
        }
    }

    /// Waits, if `step` says so, until this flight may load — holding the lease that fences
    /// its fill — or another instance's fill answers it. Waiting is bounded by the lease's
    /// TTL: by then the holder is done or its lease expired (a dead holder), and one waiter
    /// takes over.
    pub(crate) async fn take_turn<T: CacheValue>(&mut self, key: &str, mut step: Step) -> Turn {
        let inner = self.inner.clone();
        // Subscribed before the next read, so no announcement after it is missed.
        let mut filled = inner.filled.subscribe();
        let deadline = Instant::now() + inner.lease_ttl;
        let mut pause = LEASE_POLL_MIN;
        let mut waited = false;
        loop {
            match step {
                Step::Hit(found, now) => return Turn::Filled(found, now),
                Step::Load => return Turn::Load,
                Step::Refresh(fence) => {
                    if self.take_refresh_lease(key).await {
                        self.fence = Some(fence);
                        return Turn::Load;
                    }
                }
                Step::Wait => {}
            }
            if !waited {
                waited = true;
                inner.counters.incr(Counter::lease_waits);
                if let Some(stale) = self.stale.as_ref().filter(|_| !self.leader.answered()) {
                    self.leader.answer(Ok((stale.value.clone(), Source::Stale)));
                }
                // Read again at once, marking the lease waited on: its holder's fill then
                // announces itself.
                step = self.judge(inner.begin_read::<T>(key, self.token, true).await);
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // Waited the lease's whole life: load, leaving L2 to whoever holds it now.
                self.fence = None;
                return Turn::Load;
            }
            tokio::select! {
                () = tokio::time::sleep(pause.min(left)) => {}
                () = released(&mut filled, key) => {}
            }
            pause = (pause * 2).min(LEASE_POLL_MAX);
            step = self.judge(inner.begin_read::<T>(key, self.token, true).await);
        }
    }

    /// Takes the refresh lease of an entry L2 holds; `false` when another instance holds it.
    /// Without refresh leases, or when they cannot be reached, the load goes ahead: its fill
    /// is fenced by the entry all the same.
    async fn take_refresh_lease(&mut self, key: &str) -> bool {
        let inner = self.inner.clone();
        let Some(lease) = inner.lease.clone() else {
            return true;
        };
        match lease
            .try_acquire(&inner.namespace, key, self.token, inner.lease_ttl)
            .await
        {
            Ok(true) => {
                self.lease = Some(self.held(Kind::Refresh(lease)));
                true
            }
            Ok(false) => false,
            Err(e) => {
                inner.counters.incr(Counter::l2_errors);
                tracing::debug!(namespace = %inner.namespace, key, error = %e, "refresh lease unavailable; loading without it");
                true
            }
        }
    }

    fn held(&self, kind: Kind) -> Held {
        Held {
            kind,
            namespace: self.inner.namespace.clone(),
            key: self.leader.key().to_owned(),
            token: self.token,
            released: false,
        }
    }
}
