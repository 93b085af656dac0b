//! `GuardedStore`: the L2 store as the cache sees it — every call guarded, and keys with a
//! deferred invalidation kept from L2 until it has been replayed.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Call, Guard};
use crate::deferred::Deferred;
use crate::error::{Error, Result};
use crate::invalidation::{LogAppend, Position};
use crate::lease::Lease;
use crate::store::{L2Store, Read, ReplicaWait, WriteMode, Written};

/// The user's store behind the cache's guard.
#[derive(Clone)]
pub(crate) struct GuardedStore {
    store: Arc<dyn L2Store>,
    guard: Arc<Guard>,
    deferred: Arc<Deferred>,
}

impl std::fmt::Debug for GuardedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.store.fmt(f)
    }
}

/// A read of a key whose deferred invalidation has not been replayed yet.
#[derive(Debug, thiserror::Error)]
#[error("L2 may hold a replaced value: an invalidation is waiting to be replayed")]
struct Deferring;

impl GuardedStore {
    pub(crate) fn new(store: Arc<dyn L2Store>, guard: Arc<Guard>, deferred: Arc<Deferred>) -> Self {
        GuardedStore {
            store,
            guard,
            deferred,
        }
    }

    /// A write's replica wait, run once and bounded like a write (the write's own call was
    /// counted by the breaker already).
    fn bounded(&self, replica: Option<ReplicaWait>) -> Option<ReplicaWait> {
        replica.map(|wait| {
            let guard = self.guard.clone();
            ReplicaWait::new(async move { guard.hand_back(Call::Write, wait).await })
        })
    }

    fn check(&self, keys: &[&str]) -> Result<()> {
        if keys.iter().any(|k| self.deferred.blocks(k)) {
            return Err(Error::unavailable(Deferring));
        }
        Ok(())
    }
}

#[async_trait]
impl L2Store for GuardedStore {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Bytes>> {
        self.check(&[key])?;
        self.guard
            .call(Call::Read, || self.store.get(namespace, key))
            .await
    }

    async fn get_many(&self, namespace: &str, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        self.check(keys)?;
        self.guard
            .call(Call::Read, || self.store.get_many(namespace, keys))
            .await
    }

    async fn read(
        &self,
        namespace: &str,
        key: &str,
        lease: Option<(u64, Duration)>,
        wait: bool,
    ) -> Result<Read> {
        self.check(&[key])?;
        // A retry after a lost reply finds its own lease: `Leased` again, never a wait.
        self.guard
            .call(Call::Read, || self.store.read(namespace, key, lease, wait))
            .await
    }

    async fn read_many(
        &self,
        namespace: &str,
        keys: &[&str],
        lease: Option<(u64, Duration)>,
    ) -> Result<Vec<Read>> {
        self.check(keys)?;
        self.guard
            .call(Call::Read, || self.store.read_many(namespace, keys, lease))
            .await
    }

    async fn release(&self, namespace: &str, key: &str, token: u64) -> Result<()> {
        self.guard
            .hand_back(Call::Write, self.store.release(namespace, key, token))
            .await
    }

    fn lease(&self) -> Option<Arc<dyn Lease>> {
        let lease = self.store.lease()?;
        Some(Arc::new(GuardedLease {
            lease,
            guard: self.guard.clone(),
        }))
    }

    async fn set(
        &self,
        namespace: &str,
        key: &str,
        value: Bytes,
        ttl: Duration,
        tags: &[String],
        mode: WriteMode,
    ) -> Result<Written> {
        let apart = self.set_apart(namespace, key, value, ttl, tags, mode);
        ReplicaWait::finish(apart.await?).await
    }

    async fn set_apart(
        &self,
        namespace: &str,
        key: &str,
        value: Bytes,
        ttl: Duration,
        tags: &[String],
        mode: WriteMode,
    ) -> Result<(Written, Option<ReplicaWait>)> {
        if matches!(mode, WriteMode::Fill { .. }) {
            self.check(&[key])?;
        }
        let (written, replica) = self
            .guard
            .call(Call::Write, || {
                self.store
                    .set_apart(namespace, key, value.clone(), ttl, tags, mode.clone())
            })
            .await?;
        Ok((written, self.bounded(replica)))
    }

    async fn delete(
        &self,
        namespace: &str,
        key: &str,
        log: Option<&LogAppend>,
    ) -> Result<Option<Position>> {
        ReplicaWait::finish(self.delete_apart(namespace, key, log).await?).await
    }

    async fn delete_apart(
        &self,
        namespace: &str,
        key: &str,
        log: Option<&LogAppend>,
    ) -> Result<(Option<Position>, Option<ReplicaWait>)> {
        let (logged, replica) = self
            .guard
            .call(Call::Write, || self.store.delete_apart(namespace, key, log))
            .await?;
        Ok((logged, self.bounded(replica)))
    }

    async fn delete_by_tag(&self, namespace: &str, tag: &str) -> Result<u64> {
        self.guard
            .call(Call::Write, || self.store.delete_by_tag(namespace, tag))
            .await
    }

    async fn clear(&self, namespace: &str) -> Result<u64> {
        self.guard
            .call(Call::Admin, || self.store.clear(namespace))
            .await
    }
}

/// The store's lease behind the same guard as its data: one connection, one breaker.
#[derive(Debug)]
struct GuardedLease {
    lease: Arc<dyn Lease>,
    guard: Arc<Guard>,
}

#[async_trait]
impl Lease for GuardedLease {
    async fn try_acquire(
        &self,
        namespace: &str,
        key: &str,
        token: u64,
        ttl: Duration,
    ) -> Result<bool> {
        self.guard
            .call(Call::Read, || {
                self.lease.try_acquire(namespace, key, token, ttl)
            })
            .await
    }

    async fn release(&self, namespace: &str, key: &str, token: u64) -> Result<()> {
        self.guard
            .hand_back(Call::Write, self.lease.release(namespace, key, token))
            .await
    }
}
