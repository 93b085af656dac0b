//! The L2 seam: a shared byte store that every instance of a service reads and writes.
//!
//! The cache hands the store opaque bytes (an [`envelope`](crate::envelope) or, in raw mode, the
//! plain encoded value) and a TTL; the store keeps them under the layout of [`keys`](crate::keys).
//!
//! The round trips are the contract: an L2 hit is one ([`L2Store::read`] answers it as a `GET`
//! would), a miss takes its load lease in that same one, a fill is one, and a write or
//! invalidation is one — its log entry appended in the same step when the log lives on the
//! store's server. Elsewhere (a Redis Cluster, the log in another slot) the append follows the
//! data step, beside the step's wait for a replica ([`L2Store::delete_apart`],
//! [`L2Store::set_apart`]).

mod memory;
mod replica_wait;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Error;
use crate::invalidation::{LogAppend, Position, Subscription};
use crate::lease::Lease;

pub use memory::MemoryStore;
pub use replica_wait::ReplicaWait;

/// What a read that may begin a load found ([`L2Store::read`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// A value, fresh or not (the cache decides from its envelope).
    Value(Bytes),
    /// Nothing: the reader now holds the key's load lease under its token and loads. Its fill
    /// is stored only if the lease is still in place — an invalidation or a write since
    /// removed it ([`Fence::Lease`]).
    Leased,
    /// Nothing yet: another reader holds the key's load lease. `waited_on` when its record is
    /// already marked waited on (see [`L2Store::read`]): the end of that load will be
    /// announced, and a reader that waits for it need not mark it again.
    Loading {
        /// Whether the holder's lease record is marked waited on.
        waited_on: bool,
    },
    /// Nothing, and no lease taken (none asked for, or the store keeps none).
    Absent,
}

/// What a fill must find in L2 to be stored: proof that nothing changed the key since the
/// load began, so a load overtaken by an invalidation cannot write its old value back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fence {
    /// The load lease taken by [`L2Store::read`] under this token, still in place.
    Lease(u64),
    /// The entry the load set out to refresh, still in place: its envelope's
    /// [`stamp`](crate::envelope::stamp).
    Stamp(u64),
    /// Exactly these bytes, still in place: an entry the cache could not read (corrupt,
    /// foreign), which the fill replaces.
    Bytes(Bytes),
    /// Nothing to check: a store without leases cannot fence (see [`L2Store::read`]).
    None,
}

/// How a write is ordered against invalidations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteMode {
    /// A fill by a load: stored only if `fence` holds. With `lease`, the refresh lease held
    /// under that token (see [`L2Store::lease`]) is released in the same step, stored or not.
    Fill {
        /// What must still be in place.
        fence: Fence,
        /// The token of a refresh lease to release, if the load holds one.
        lease: Option<u64>,
        /// How long a load lease lives: a store that checks the fence after writing puts a
        /// lease record it displaced back for this long.
        lease_ttl: Duration,
    },
    /// A write-through: always stored; it replaces any lease record, so loads in flight are
    /// refused. With `log`, the store also appends that invalidation to the namespace's log
    /// in the same step, when the log lives beside the data ([`Written::logged`]).
    Replace {
        /// The write's invalidation, as the log would append it.
        log: Option<LogAppend>,
    },
}

impl WriteMode {
    /// A write-through that leaves the log to the caller.
    pub const REPLACE: WriteMode = WriteMode::Replace { log: None };
}

/// A shared L2 store. Implementations: [`MemoryStore`] (embedded default) and
/// `strata_redis::RedisStore`.
///
/// Every method takes the cache's namespace and the caller's key; implementations map them to
/// their own keys with [`keys`](crate::keys) and keep the bytes of
/// [`envelope`](crate::envelope), lease records included. Errors are [`Error::Store`].
#[async_trait]
pub trait L2Store: Send + Sync + Debug + 'static {
    /// The value under `key`, or `None` when absent, expired or being loaded (a lease record).
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Bytes>, Error>;

    /// The values under each of `keys`, in order, in one round trip where the store allows.
    async fn get_many(&self, namespace: &str, keys: &[&str]) -> Result<Vec<Option<Bytes>>, Error>;

    /// Reads `key` and, with `lease = Some((token, ttl))`, takes its load lease if nothing is
    /// there — in one step (Redis: `SET key <lease record> NX GET PX ttl`, one command, which
    /// answers a hit with the value as `GET` does). Finding its own token there (a retry whose
    /// first attempt took the lease but lost the reply) is [`Read::Leased`] too. With `wait`,
    /// a lease held by another is marked waited on, so that the end of its load is announced
    /// (see [`InvalidationLog`](crate::InvalidationLog)'s `Filled` events).
    ///
    /// The default reads with [`get`](Self::get) and takes no lease: a store without leases
    /// gives no cross-instance single-flight and cannot fence fills ([`Fence::None`]).
    async fn read(
        &self,
        namespace: &str,
        key: &str,
        lease: Option<(u64, Duration)>,
        wait: bool,
    ) -> Result<Read, Error> {
        let _ = (lease, wait);
        Ok(match self.get(namespace, key).await? {
            Some(bytes) => Read::Value(bytes),
            None => Read::Absent,
        })
    }

    /// [`read`](Self::read) for each of `keys`, in one round trip where the store allows.
    async fn read_many(
        &self,
        namespace: &str,
        keys: &[&str],
        lease: Option<(u64, Duration)>,
    ) -> Result<Vec<Read>, Error> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.read(namespace, key, lease, false).await?);
        }
        Ok(out)
    }

    /// Gives up the load lease `token` holds on `key` (its load failed or was dropped): removes
    /// the lease record if it is still that one, and announces it to waiters.
    async fn release(&self, namespace: &str, key: &str, token: u64) -> Result<(), Error> {
        let _ = (namespace, key, token);
        Ok(())
    }

    /// The lease taken to refresh a value L2 still holds (stale-while-revalidate, fail-safe,
    /// early refresh), kept beside the data; `None` (the default) if the store keeps none.
    fn lease(&self) -> Option<Arc<dyn Lease>> {
        None
    }

    /// Stores `value` under `key` for `ttl` and records `key` in the index of each tag,
    /// atomically, as `mode` orders it: a fill whose [`Fence`] no longer holds is not stored
    /// ([`Written::stored`]) and changes nothing.
    async fn set(
        &self,
        namespace: &str,
        key: &str,
        value: Bytes,
        ttl: Duration,
        tags: &[String],
        mode: WriteMode,
    ) -> Result<Written, Error>;

    /// [`set`](Self::set), handing back its [`ReplicaWait`] as
    /// [`delete_apart`](Self::delete_apart) does, for a write whose log entry the caller
    /// appends apart: the value is stored when this returns. The default sets whole.
    async fn set_apart(
        &self,
        namespace: &str,
        key: &str,
        value: Bytes,
        ttl: Duration,
        tags: &[String],
        mode: WriteMode,
    ) -> Result<(Written, Option<ReplicaWait>), Error> {
        Ok((
            self.set(namespace, key, value, ttl, tags, mode).await?,
            None,
        ))
    }

    /// Removes `key` (a lease record too, so the load in flight is refused), and with `log`
    /// appends that invalidation in the same step when the log lives beside the data: where
    /// the entry went if it did ([`LogAppend::at`]).
    async fn delete(
        &self,
        namespace: &str,
        key: &str,
        log: Option<&LogAppend>,
    ) -> Result<Option<Position>, Error>;

    /// [`delete`](Self::delete), handing back the part of it that only makes the removal
    /// outlive a failover — a Redis Cluster's wait for a replica — as a [`ReplicaWait`] for
    /// the caller to run beside its next step instead of before it. The cache appends the
    /// invalidation to its log meanwhile (on a cluster, in another slot): the append must come
    /// after the removal, but need not wait for the removal's replica. The key is removed when
    /// this returns; the write is done once the wait is too. The default deletes whole.
    async fn delete_apart(
        &self,
        namespace: &str,
        key: &str,
        log: Option<&LogAppend>,
    ) -> Result<(Option<Position>, Option<ReplicaWait>), Error> {
        Ok((self.delete(namespace, key, log).await?, None))
    }

    /// Removes every key carrying `tag` and the tag's index; returns how many keys it removed.
    async fn delete_by_tag(&self, namespace: &str, tag: &str) -> Result<u64, Error>;

    /// Removes every value, lease record and tag index of the namespace; returns how many
    /// keys it removed.
    async fn clear(&self, namespace: &str) -> Result<u64, Error>;

    /// Server-assisted invalidation: a feed of the keys of `namespace` that *others* write —
    /// other instances, and writers that do not speak Strata's protocol at all (a legacy
    /// service's `DEL`, an operator's `redis-cli`) — as [`LogEvent::Apply`] of
    /// [`Invalidation::FOREIGN`] origin, and [`LogEvent::Resync`] whenever the store cannot
    /// vouch that it reported every such write (its connection was lost, or the server
    /// flushed the database). This store's own writes are not reported.
    ///
    /// `None` (the default): the store cannot tell.
    ///
    /// [`LogEvent::Apply`]: crate::invalidation::LogEvent::Apply
    /// [`LogEvent::Resync`]: crate::invalidation::LogEvent::Resync
    /// [`Invalidation::FOREIGN`]: crate::invalidation::Invalidation::FOREIGN
    async fn track_writes(&self, namespace: &str) -> Result<Option<Subscription>, Error> {
        let _ = namespace;
        Ok(None)
    }
}

/// What a write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// The value was stored (a fill whose fence no longer held was not).
    pub stored: bool,
    /// Where the log entry the store appended with the write (the invalidation it was
    /// given) went ([`LogAppend::at`]); `None`: the cache publishes it.
    pub logged: Option<Position>,
}
