//! The housekeeper: L1 maintenance and metrics export on a timer, off the request path.

use std::sync::Weak;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::clock::SystemClock;
use crate::inner::Inner;

/// How often the housekeeper runs.
pub(crate) const PERIOD: Duration = Duration::from_secs(1);

/// Runs until the cache is dropped.
pub(crate) async fn run(inner: Weak<Inner>, mut shutdown: watch::Receiver<()>) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let Some(inner) = inner.upgrade() else { return };
        SystemClock::resync();
        if let Some(l1) = &inner.l1 {
            // moka defers evictions and expirations to these calls; without them they would
            // pile up until the next write.
            l1.run_pending_tasks().await;
        }
        inner.counters.export();
    }
}
