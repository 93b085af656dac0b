//! Writes whose shared half had to wait (see [`Deferred`](crate::deferred::Deferred)):
//! settling a write's outcome, and replaying what was deferred once the shared tier is back.

use std::sync::Weak;
use std::time::Duration;

use tokio::sync::watch;

use super::Engine;
use crate::error::Result;
use crate::invalidation::Target;
use crate::stats::Counter;

/// How often a replay is tried while there is something to replay (with jitter).
const REPLAY_EVERY: Duration = Duration::from_millis(250);

impl Engine {
    /// The end of a write: an unreachable shared tier defers its shared half; any other
    /// failure is the caller's.
    ///
    /// A deferred write succeeds (its local half is done, as FusionCache's auto-recovery
    /// does) — unless the cache promises more: bounded staleness, or writes acknowledged by
    /// every instance. Such a write returns only once every instance can be told, so the
    /// caller gets [`crate::Error::Unavailable`] (and the replay still happens): until then
    /// the others may serve the old value, for as long as this instance cannot reach them.
    pub(crate) fn settle(&self, target: Target, result: Result<()>) -> Result<()> {
        match result {
            Err(e) if e.is_retryable() => {
                tracing::debug!(namespace = %self.namespace, ?target, error = %e, "shared tier unreachable; write deferred");
                self.counters.incr(Counter::writes_deferred);
                self.deferred.defer(target);
                if self.max_staleness.is_some() || self.acknowledged.is_some() {
                    Err(e)
                } else {
                    Ok(())
                }
            }
            other => other,
        }
    }

    /// Replays what is pending, in order, until done or the shared tier fails again.
    async fn replay(&self) {
        for (target, seq) in self.deferred.snapshot() {
            let ns = &self.namespace;
            let l2 = match &target {
                Target::Key(key) => {
                    let log = self.log_append(&target).await;
                    self.l2.delete(ns, key, log.as_ref()).await
                }
                Target::Tag(tag) => self.l2.delete_by_tag(ns, tag).await.map(|_| None),
                Target::Clear => self.l2.clear(ns).await.map(|_| None),
            };
            let result = match l2 {
                Ok(logged) => self.announce(target.clone(), logged).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => self.counters.incr(Counter::writes_replayed),
                Err(e) if e.is_retryable() => return,
                Err(e) => {
                    // Trying again will not help (e.g. a permission was revoked): say so once
                    // and let the entry's TTL end it.
                    tracing::error!(namespace = %ns, ?target, error = %e, "deferred write dropped");
                }
            }
            self.deferred.done(&target, seq);
        }
    }
}

/// Replays deferred writes while there are any, until the cache is dropped.
pub(crate) async fn run(inner: Weak<Engine>, mut shutdown: watch::Receiver<()>) {
    let Some(deferred) = inner.upgrade().map(|i| i.deferred.clone()) else {
        return;
    };
    loop {
        if deferred.len() == 0 {
            tokio::select! {
                () = deferred.wake.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
        let pause = REPLAY_EVERY.mul_f64(0.5 + fastrand::f64());
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => return,
        }
        let Some(inner) = inner.upgrade() else { return };
        inner.replay().await;
    }
}
