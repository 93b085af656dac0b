//! The lease seam: single-flight across instances.
//!
//! Local single-flight collapses a stampede inside one process; with four instances, four
//! loads would still hit the source of truth. On an L2 miss the flight's leader takes the
//! key's load lease in the read itself ([`L2Store::read`](crate::L2Store::read) leaves a lease
//! record in the data key): the one instance that gets it loads and fills L2, the others wait
//! for that fill (woken by its announcement, or re-reading L2 with a backoff), bounded by the
//! lease's TTL. A holder that dies simply lets its lease expire, and the next waiter to ask
//! takes over.
//!
//! A value L2 still holds (stale, or refreshed early) cannot make room for a lease record: its
//! refresh takes a [`Lease`] kept beside it instead. Implementations: [`MemoryLease`] (for
//! caches sharing one [`MemoryStore`](crate::MemoryStore)) and `strata_redis::RedisLease`
//! (`SET NX PX` with an owner token, compare-and-delete release).

mod memory;

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Error;

pub use memory::MemoryLease;

/// The right to load a key, shared by every instance of a namespace.
///
/// Tokens are random per flight, so a release by a holder whose lease expired (and was taken
/// by another) never frees the new holder's lease.
#[async_trait]
pub trait Lease: Send + Sync + Debug + 'static {
    /// Takes the lease on `key` for `ttl` under `token` if no one holds it; `Ok(true)` when
    /// this caller now holds it. Finding it held under the same `token` is `Ok(true)` too: a
    /// retry whose first attempt took the lease but lost the reply must not wait on itself.
    async fn try_acquire(
        &self,
        namespace: &str,
        key: &str,
        token: u64,
        ttl: Duration,
    ) -> Result<bool, Error>;

    /// Gives the lease up if `token` still holds it.
    async fn release(&self, namespace: &str, key: &str, token: u64) -> Result<(), Error>;
}

/// A lease this instance holds. A fill releases it in its own step (it replaces the lease
/// record, or releases the refresh lease it names); otherwise — a failed or cancelled load —
/// dropping it releases the lease in the background, so a caller never waits on the release.
pub(crate) struct Held {
    pub(crate) kind: Kind,
    pub(crate) namespace: std::sync::Arc<str>,
    pub(crate) key: std::sync::Arc<str>,
    pub(crate) token: u64,
    /// Released already (by a fill).
    pub(crate) released: bool,
}

/// Which lease is held, and who gives it back.
pub(crate) enum Kind {
    /// The load lease in the data key, taken by the read.
    Record(std::sync::Arc<dyn crate::L2Store>),
    /// A refresh lease beside a value L2 still holds.
    Refresh(std::sync::Arc<dyn Lease>),
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (namespace, key, token) = (
            std::mem::take(&mut self.namespace),
            std::mem::take(&mut self.key),
            self.token,
        );
        let release = match &self.kind {
            Kind::Record(store) => {
                let store = store.clone();
                Box::pin(async move { store.release(&namespace, &key, token).await })
                    as std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>
            }
            Kind::Refresh(lease) => {
                let lease = lease.clone();
                Box::pin(async move { lease.release(&namespace, &key, token).await })
            }
        };
        // Without a runtime (shutdown) the lease simply expires.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = release.await {
                    tracing::debug!(error = %e, "lease release failed; it will expire");
                }
            });
        }
    }
}
