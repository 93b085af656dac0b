//! The acker: with [acknowledged writes](crate::HybridCacheBuilder::acknowledged_writes), tells
//! the log how far this instance has applied it (see [`Acknowledged`](crate::acks::Acknowledged)),
//! whenever that advances and at every heartbeat.

use std::sync::Weak;
use std::time::Duration;

use tokio::sync::watch;

use super::Engine;
use crate::stats::Counter;

/// How often an idle instance says it is alive, without a log heartbeat.
const DEFAULT_BEAT: Duration = Duration::from_secs(1);

/// Reports what the follower applied whenever it advances, and at least every heartbeat (a
/// sign of life); says goodbye when the cache is dropped.
pub(crate) async fn run(inner: Weak<Engine>, mut shutdown: watch::Receiver<()>) {
    let Some((log, namespace, instance, mut applied, mut leaving, beat)) =
        inner.upgrade().and_then(|i| {
            let ack = i.acknowledged.as_ref()?;
            let beat = i.log.heartbeat().unwrap_or(DEFAULT_BEAT);
            Some((
                i.log.clone(),
                i.namespace.clone(),
                i.instance_id,
                ack.applied(),
                ack.leaving(),
                beat,
            ))
        })
    else {
        return;
    };
    loop {
        // Either closing means the cache is gone; `leaving`, that it is shutting down.
        let gone = tokio::select! {
            changed = applied.changed() => changed.is_err(),
            () = tokio::time::sleep(beat) => false,
            _ = shutdown.changed() => true,
            _ = leaving.changed() => true,
        };
        if gone {
            // The others stop waiting for this instance at once.
            let _ = log.acknowledge(&namespace, instance, &[]).await;
            if let Some(ack) = inner
                .upgrade()
                .as_ref()
                .and_then(|i| i.acknowledged.as_ref())
            {
                ack.mark_left();
            }
            return;
        }
        let now = applied.borrow_and_update().clone();
        if now.is_empty() {
            continue;
        }
        match log.acknowledge(&namespace, instance, &now).await {
            Ok(()) => {
                if let Some(i) = inner.upgrade()
                    && let Some(ack) = &i.acknowledged
                {
                    ack.mark_joined();
                }
            }
            Err(e) => {
                if let Some(i) = inner.upgrade() {
                    i.counters.incr(Counter::log_errors);
                }
                tracing::debug!(namespace = &*namespace, error = %e, "acknowledgement failed");
            }
        }
    }
}
