//! Acknowledged writes ([`HybridCacheBuilder::acknowledged_writes`]): this instance tells the
//! log how far it has applied it, and its writes wait until every other live instance has
//! applied them.
//!
//! [`HybridCacheBuilder::acknowledged_writes`]: crate::HybridCacheBuilder::acknowledged_writes

use std::sync::Weak;
use std::time::Duration;

use tokio::sync::watch;

use crate::inner::Inner;
use crate::invalidation::Position;
use crate::stats::Counter;

/// The longest `build` waits for this instance's first acknowledgement.
const JOIN_WAIT: Duration = Duration::from_secs(2);

/// How often an idle instance says it is alive, without a log heartbeat.
const DEFAULT_BEAT: Duration = Duration::from_secs(1);

/// The acknowledgement state of a cache.
pub(crate) struct Acknowledged {
    /// What the follower applied, by part of the log: the acker reports it.
    applied: watch::Sender<Vec<u64>>,
    /// Whether the first acknowledgement went out.
    joined: watch::Sender<bool>,
    /// How long a write waits for the others.
    pub(crate) within: Duration,
}

impl Acknowledged {
    pub(crate) fn new(within: Duration) -> Self {
        Acknowledged {
            applied: watch::channel(Vec::new()).0,
            joined: watch::channel(false).0,
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

    /// A receiver for [`joined`](Self::joined), taken before the acker starts.
    pub(crate) fn first(&self) -> watch::Receiver<bool> {
        self.joined.subscribe()
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

/// Reports what the follower applied whenever it advances, and at least every heartbeat (a
/// sign of life); says goodbye when the cache is dropped.
pub(crate) async fn run(inner: Weak<Inner>, mut shutdown: watch::Receiver<()>) {
    let Some((log, namespace, instance, mut applied, beat)) = inner.upgrade().and_then(|i| {
        let ack = i.acknowledged.as_ref()?;
        let beat = i.log.heartbeat().unwrap_or(DEFAULT_BEAT);
        Some((
            i.log.clone(),
            i.namespace.clone(),
            i.instance_id,
            ack.applied.subscribe(),
            beat,
        ))
    }) else {
        return;
    };
    loop {
        // Either closing means the cache is gone.
        let gone = tokio::select! {
            changed = applied.changed() => changed.is_err(),
            () = tokio::time::sleep(beat) => false,
            _ = shutdown.changed() => true,
        };
        if gone {
            // The others stop waiting for this instance at once.
            let _ = log.acknowledge(&namespace, instance, &[]).await;
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
                    ack.joined.send_replace(true);
                }
            }
            Err(e) => {
                if let Some(i) = inner.upgrade() {
                    i.counters.incr(Counter::log_errors);
                }
                tracing::debug!(namespace, error = %e, "acknowledgement failed");
            }
        }
    }
}
