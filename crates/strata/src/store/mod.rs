//! The L2 seam: a shared byte store that every instance of a service reads and writes.
//!
//! The cache hands the store opaque bytes (an [`envelope`](crate::envelope) or, in raw mode, the
//! plain encoded value) and a TTL; the store keeps them under the layout of [`keys`](crate::keys).

mod memory;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Error;
use crate::lease::Lease;

pub use memory::MemoryStore;

/// Where a key stands in the order of changes, as L2 sees it.
///
/// Every invalidation of a key, and every write-through `set`, bumps the key's generation;
/// clearing a namespace bumps the namespace's. A load reads the generation before it reads the
/// source of truth, and its fill is stored only if neither moved meanwhile: a load that began
/// before an invalidation can never write its old value back ("stale set").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Generation {
    /// The key's generation.
    pub key: u64,
    /// The namespace's generation.
    pub namespace: u64,
}

/// How a write is ordered against invalidations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// A fill by a load: stored only if the generation is still `read`, the one the load read.
    /// With `lease`, the store's lease on the key held under that token (taken by
    /// [`L2Store::begin_load`]) is released in the same step, whether the value was stored or
    /// not.
    Fill {
        /// The generation the load read before it began.
        read: Generation,
        /// The token of the store-kept lease the load holds, if any.
        lease: Option<u64>,
    },
    /// A write-through: always stored, and bumps the key's generation so that loads which
    /// began before it cannot overwrite it.
    Replace,
}

/// How a load begins: what [`L2Store::begin_load`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadStart {
    /// The key's generation, to fence the fill with.
    pub generation: Generation,
    /// Whether the store's lease on the key was taken (the caller loads, and its fill releases
    /// it).
    pub lease_taken: bool,
    /// A value that appeared since the caller found none: read it instead of loading.
    pub filled: Option<Bytes>,
}

/// A shared L2 store. Implementations: [`MemoryStore`] (embedded default) and
/// `strata_redis::RedisStore`.
///
/// Every method takes the cache's namespace and the caller's key; implementations map them to
/// their own keys with [`keys`](crate::keys). Errors are [`Error::Store`].
#[async_trait]
pub trait L2Store: Send + Sync + Debug + 'static {
    /// The bytes under `key`, or `None` when absent or expired.
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Bytes>, Error>;

    /// The generation of `key`. A load reads it before it reads the source of truth and
    /// fences its fill with it.
    async fn generation(&self, namespace: &str, key: &str) -> Result<Generation, Error>;

    /// The generations of `keys`, in order, in one round trip where the store allows (a
    /// batch load fences each fill with its key's).
    async fn generations(&self, namespace: &str, keys: &[&str]) -> Result<Vec<Generation>, Error> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.generation(namespace, key).await?);
        }
        Ok(out)
    }

    /// The load leases this store keeps beside its data, if any (default: none). A cache
    /// uses them unless it is given another [`Lease`], and then takes and releases them with
    /// no round trips of their own: in [`begin_load`](Self::begin_load) and in the fill.
    fn lease(&self) -> Option<Arc<dyn Lease>> {
        None
    }

    /// Begins a load of `key`, in one round trip where the store allows: reads its
    /// [`generation`](Self::generation) and, with `lease = Some((token, ttl))`, tries to take
    /// the store's lease on the key. With `absent` (the caller's read found no value), a value
    /// that appeared since — another instance's fill, landed between that read and this call —
    /// is returned in [`LoadStart::filled`] instead, and no lease is taken: without this check
    /// that instance's release would let this one load the key a second time.
    async fn begin_load(
        &self,
        namespace: &str,
        key: &str,
        lease: Option<(u64, Duration)>,
        absent: bool,
    ) -> Result<LoadStart, Error> {
        let generation = self.generation(namespace, key).await?;
        let mut start = LoadStart {
            generation,
            lease_taken: false,
            filled: None,
        };
        let Some(((token, ttl), own)) = lease.zip(self.lease()) else {
            return Ok(start);
        };
        if !own.try_acquire(namespace, key, token, ttl).await? {
            return Ok(start);
        }
        if absent && let Some(bytes) = self.get(namespace, key).await? {
            own.release(namespace, key, token).await?;
            start.filled = Some(bytes);
            return Ok(start);
        }
        start.lease_taken = true;
        Ok(start)
    }

    /// The bytes under each of `keys`, in order, in one round trip where the store allows.
    async fn get_many(&self, namespace: &str, keys: &[&str]) -> Result<Vec<Option<Bytes>>, Error>;

    /// Stores `value` under `key` for `ttl` and records `key` in the index of each tag,
    /// atomically, as `mode` orders it; `Ok(false)` when a fill was refused because the key
    /// or namespace changed since its read.
    async fn set(
        &self,
        namespace: &str,
        key: &str,
        value: Bytes,
        ttl: Duration,
        tags: &[String],
        mode: WriteMode,
    ) -> Result<bool, Error>;

    /// Removes `key` and bumps its generation, atomically.
    async fn delete(&self, namespace: &str, key: &str) -> Result<(), Error>;

    /// Removes every key carrying `tag` (bumping each one's generation) and the tag's index;
    /// returns how many keys it removed.
    async fn delete_by_tag(&self, namespace: &str, tag: &str) -> Result<u64, Error>;

    /// Bumps the namespace's generation, then removes every value and tag index of the
    /// namespace; returns how many keys it removed.
    async fn clear(&self, namespace: &str) -> Result<u64, Error>;
}
