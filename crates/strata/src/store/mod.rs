//! The L2 seam: a shared byte store that every instance of a service reads and writes.
//!
//! The cache hands the store opaque bytes (an [`envelope`](crate::envelope) or, in raw mode, the
//! plain encoded value) and a TTL; the store keeps them under the layout of [`keys`](crate::keys).

mod memory;

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Error;

pub use memory::MemoryStore;

/// A shared L2 store. Implementations: [`MemoryStore`] (embedded default) and
/// `strata_redis::RedisStore`.
///
/// Every method takes the cache's namespace and the caller's key; implementations map them to
/// their own keys with [`keys`](crate::keys). Errors are [`Error::Store`].
#[async_trait]
pub trait L2Store: Send + Sync + Debug + 'static {
    /// The bytes under `key`, or `None` when absent or expired.
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Bytes>, Error>;

    /// The bytes under each of `keys`, in order, in one round trip where the store allows.
    async fn get_many(&self, namespace: &str, keys: &[&str]) -> Result<Vec<Option<Bytes>>, Error>;

    /// Stores `value` under `key` for `ttl`, and records `key` in the index of each tag.
    async fn set(
        &self,
        namespace: &str,
        key: &str,
        value: Bytes,
        ttl: Duration,
        tags: &[String],
    ) -> Result<(), Error>;

    /// Removes `key`.
    async fn delete(&self, namespace: &str, key: &str) -> Result<(), Error>;

    /// Removes every key carrying `tag`, and the tag's index; returns how many keys it removed.
    async fn delete_by_tag(&self, namespace: &str, tag: &str) -> Result<u64, Error>;

    /// Removes every key of the namespace; returns how many keys it removed.
    async fn clear(&self, namespace: &str) -> Result<u64, Error>;
}
