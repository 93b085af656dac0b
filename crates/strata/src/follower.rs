//! The follower: applies other instances' invalidations from the log to this instance's L1.

use std::sync::Weak;

use tokio::sync::watch;

use crate::inner::Inner;
use crate::invalidation::{LogEvent, Subscription, Target};
use crate::stats::Counter;

/// Applies events until the subscription ends or the cache is dropped.
pub(crate) async fn run(
    inner: Weak<Inner>,
    mut events: Subscription,
    mut shutdown: watch::Receiver<()>,
) {
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = shutdown.changed() => None,
        };
        let (Some(event), Some(inner)) = (event, inner.upgrade()) else {
            return;
        };
        inner.apply(event).await;
    }
}

impl Inner {
    /// Applies an event from the log to L1.
    pub(crate) async fn apply(&self, event: LogEvent) {
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
            LogEvent::CaughtUp { lag, age } => {
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
                let _ = self.filled.send(key);
                return;
            }
        }
        self.counters.incr(Counter::invalidations_received);
    }
}
