//! The lease seam: single-flight across instances.
//!
//! Local single-flight collapses a stampede inside one process; with four instances, four
//! loads would still hit the source of truth. On an L2 miss the flight's leader asks for the
//! key's lease: the one instance that gets it loads and fills L2, the others wait for that fill
//! (re-reading L2 with a short backoff), bounded by the lease's TTL. A holder that dies simply
//! lets its lease expire, and the next waiter to ask takes over.
//!
//! Implementations: [`MemoryLease`] (for caches sharing one [`MemoryStore`](crate::MemoryStore))
//! and `strata_redis::RedisLease` (`SET NX PX` with an owner token, compare-and-delete release).

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

/// A lease this instance holds. A fill releases a store-kept lease in its own step; otherwise
/// (another kind of lease, a failed or cancelled load) dropping it releases the lease in the
/// background, so a caller never waits on the release.
pub(crate) struct Held {
    pub(crate) lease: std::sync::Arc<dyn Lease>,
    pub(crate) namespace: String,
    pub(crate) key: String,
    pub(crate) token: u64,
    /// Kept by the L2 store, so a fill can release it.
    pub(crate) in_store: bool,
    /// Released already (by a fill).
    pub(crate) released: bool,
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (lease, namespace, key) = (
            self.lease.clone(),
            std::mem::take(&mut self.namespace),
            std::mem::take(&mut self.key),
        );
        let token = self.token;
        // Without a runtime (shutdown) the lease simply expires.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = lease.release(&namespace, &key, token).await {
                    tracing::debug!(namespace, key, error = %e, "lease release failed; it will expire");
                }
            });
        }
    }
}
