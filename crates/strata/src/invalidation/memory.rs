//! The in-process backplane: the default when no shared log is configured.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{Invalidation, InvalidationLog, LogEvent, Subscription};
use crate::error::Error;

/// An in-process [`InvalidationLog`]. Clones share their followers, so caches built on clones of
/// one `MemoryLog` see each other's invalidations, like instances sharing one Redis.
///
/// Delivery is lossless and in publish order: each follower has its own unbounded queue.
#[derive(Debug, Clone, Default)]
pub struct MemoryLog {
    followers: Arc<Mutex<Vec<Follower>>>,
}

/// A follower: its namespace and its queue.
type Follower = (String, mpsc::UnboundedSender<LogEvent>);

impl MemoryLog {
    /// A log with no followers yet.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl InvalidationLog for MemoryLog {
    async fn publish(&self, namespace: &str, invalidation: &Invalidation) -> Result<(), Error> {
        let mut followers = self.followers.lock().unwrap_or_else(|e| e.into_inner());
        // Sending fails only when the follower is gone: forget it.
        followers.retain(|(ns, tx)| {
            ns != namespace || tx.send(LogEvent::Apply(invalidation.clone())).is_ok()
        });
        Ok(())
    }

    async fn follow(&self, namespace: &str) -> Result<Subscription, Error> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.followers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((namespace.to_owned(), tx));
        Ok(rx)
    }
}
