//! The follower: applies other instances' invalidations from the log to this instance's L1.

use std::sync::Weak;

use tokio::sync::watch;

use super::Engine;
use crate::invalidation::{LogEvent, Subscription, Target};
use crate::stats::Counter;

/// Most events applied per wake-up before the task yields.
const BATCH: usize = 256;

/// Applies events until the subscription ends or the cache is dropped: every event waiting
/// at each wake-up, so a burst of invalidations costs one wake-up, not one each.
pub(crate) async fn run(
    inner: Weak<Engine>,
    mut events: Subscription,
    mut shutdown: watch::Receiver<()>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let received = tokio::select! {
            n = events.recv_many(&mut batch, BATCH) => n,
            _ = shutdown.changed() => 0,
        };
        let Some(inner) = inner.upgrade().filter(|_| received > 0) else {
            return;
        };
        for event in batch.drain(..) {
            inner.apply(event);
        }
    }
}

impl Engine {
    /// Applies an event from the log to L1.
    pub(crate) fn apply(&self, event: LogEvent) {
        match event {
            LogEvent::Apply(inv) if inv.origin == self.instance_id => return,
            LogEvent::Apply(inv) => match inv.target {
                Target::Key(key) => self.drop_l1(&key),
                Target::Tag(tag) => self.drop_tag(&tag),
                Target::Clear => self.drop_all(),
            },
            LogEvent::Resync => {
                self.counters.incr(Counter::resyncs);
                self.drop_all();
            }
            LogEvent::CaughtUp { lag, age, position } => {
                // Everything before this report is applied: acknowledge that far.
                if let (Some(ack), Some(position)) = (&self.acknowledged, position) {
                    ack.record(position);
                }
                let as_of = self
                    .clock
                    .now_ms()
                    .saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
                self.caught_up
                    .fetch_max(as_of, std::sync::atomic::Ordering::Relaxed);
                if let Some(lag) = lag {
                    self.counters.record_lag(lag);
                }
                return;
            }
            LogEvent::Filled(key) => {
                // No one waiting is the common case; a send with no receivers is a no-op.
                self.load_ends.announce(&key);
                return;
            }
        }
        self.counters.incr(Counter::invalidations_received);
    }
}
