//! The follower: applies other instances' invalidations from the log to this instance's L1.

use std::sync::Weak;

use tokio::sync::watch;

use crate::cache::Inner;
use crate::invalidation::Subscription;

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
