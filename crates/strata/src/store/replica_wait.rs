//! `ReplicaWait`: the end of an L2 write that the store hands back for the caller to run
//! beside its next step.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::error::Error;

/// The rest of an L2 write that only makes it outlive a failover — on a Redis Cluster, the
/// wait for a replica to acknowledge what the write changed (`WAIT 1`) — handed back by
/// [`L2Store::delete_apart`](super::L2Store::delete_apart) so that the caller can run it
/// beside its next step rather than before it. The change is made when the store hands it
/// back; awaiting it finishes the write, and dropping it gives up its guarantee.
#[must_use = "a write is not acknowledged by a replica until its wait is awaited"]
pub struct ReplicaWait(Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>);

impl ReplicaWait {
    /// The wait `wait` does.
    pub fn new(wait: impl Future<Output = Result<(), Error>> + Send + 'static) -> Self {
        ReplicaWait(Box::pin(wait))
    }

    /// A write handed back with its wait, finished: the wait awaited, if there is one, then
    /// the write's outcome — what the whole write (`delete`, `set`) returns.
    pub async fn finish<T>((outcome, wait): (T, Option<ReplicaWait>)) -> Result<T, Error> {
        if let Some(wait) = wait {
            wait.await?;
        }
        Ok(outcome)
    }
}

impl Future for ReplicaWait {
    type Output = Result<(), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl std::fmt::Debug for ReplicaWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplicaWait")
    }
}
