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

/// First and longest pause between L2 reads while another instance holds the lease, when the
/// log announces the ends of loads: a fallback, the announcement wakes the waiter first.
const ANNOUNCED_POLL: (Duration, Duration) =
    (Duration::from_millis(50), Duration::from_millis(200));
/// The same when nothing announces them (the in-process log): polling is how waiters learn.
const POLL: (Duration, Duration) = (Duration::from_millis(1), Duration::from_millis(10));

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
            L2Read::Loading { waited_on } => Step::Wait { waited_on },
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
    pub(crate) async fn take_turn<T: CacheValue>(&mut self, key: &str, step: Step) -> Turn {
        if let Step::Load = step {
            return Turn::Load; // the common miss: the read took the lease
        }
        let inner = self.inner.clone();
        let end = inner.load_ends.waiter(key);
        let turn = self.wait_turn::<T>(key, step, &end).await;
        inner.load_ends.leave(key, end);
        turn
    }

    async fn wait_turn<T: CacheValue>(
        &mut self,
        key: &str,
        mut step: Step,
        end: &tokio::sync::Notify,
    ) -> Turn {
        let inner = self.inner.clone();
        let deadline = Instant::now() + inner.lease_ttl;
        let announced = inner.log.announces_load_ends();
        let (mut pause, longest) = if announced { ANNOUNCED_POLL } else { POLL };
        // Registered before each read of L2, so an announcement after it is not missed.
        let mut ended = std::pin::pin!(end.notified());
        ended.as_mut().enable();
        let (mut first, mut marked) = (true, false);
        loop {
            // The holder just found will not announce its fill unless its record is marked
            // waited on: by another waiter before (the read says so), or by this flight's last
            // read. Marking takes a script on the server, so only such a record gets it; any
            // other read is the plain one.
            let mark = announced && matches!(step, Step::Wait { waited_on: false }) && !marked;
            match step {
                Step::Hit(found, now) => return Turn::Filled(found, now),
                Step::Load => return Turn::Load,
                Step::Refresh(fence) => {
                    if self.take_refresh_lease(key).await {
                        self.fence = Some(fence);
                        return Turn::Load;
                    }
                }
                Step::Wait { .. } => {}
            }
            if first {
                first = false;
                inner.counters.incr(Counter::lease_waits);
                if let Some(stale) = self.stale.as_ref().filter(|_| !self.leader.answered()) {
                    self.leader.answer(Ok((stale.value.clone(), Source::Stale)));
                }
                // Read again at once: the flight's read came before this waiter was
                // registered, and an announcement between the two would be missed.
            } else if !mark {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    // Waited the lease's whole life: load, leaving L2 to whoever holds it now.
                    self.fence = None;
                    return Turn::Load;
                }
                tokio::select! {
                    () = tokio::time::sleep(pause.min(left)) => {}
                    () = ended.as_mut() => {}
                }
                ended.set(end.notified());
                ended.as_mut().enable();
                pause = (pause * 2).min(longest);
            }
            marked = mark;
            step = self.judge(inner.begin_read::<T>(key, self.token, mark).await);
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
            key: self.leader.shared_key(),
            token: self.token,
            released: false,
        }
    }
}
