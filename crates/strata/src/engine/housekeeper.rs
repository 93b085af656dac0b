//! The housekeeper: metrics export and an occasional L1 sweep on a timer, off the request path.

use std::sync::Weak;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::Engine;
use crate::clock::SystemClock;

/// How often the housekeeper runs.
pub(crate) const PERIOD: Duration = Duration::from_secs(1);

/// Every how many runs it sweeps L1 of entries past serving.
const SWEEP_EVERY: u32 = 60;

/// Runs until the cache is dropped.
pub(crate) async fn run(inner: Weak<Engine>, mut shutdown: watch::Receiver<()>) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut swept = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let Some(inner) = inner.upgrade() else { return };
        SystemClock::resync();
        swept += 1;
        if swept == SWEEP_EVERY {
            // Expired entries only take room the bound allows anyway; freeing their memory
            // now and then is enough, and a full pass over a large L1 is not free.
            swept = 0;
            inner.sweep_l1();
        }
        inner.counters.export();
    }
}
