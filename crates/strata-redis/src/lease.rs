//! `RedisLease`: the refresh lease on Redis.

use std::time::Duration;

use async_trait::async_trait;
use strata::{Error, Lease};

use crate::config::RedisConfig;
use crate::connection::Connection;
use crate::scripts::{ACQUIRE_LEASE, RELEASE_LEASE};

/// Leases on Redis: `SET <namespace>#lease:<key> <token> NX PX <ttl>` (in a script that also
/// recognises the caller's own token) to take one, a compare-and-delete script to give it
/// back.
///
/// A cache on a [`RedisStore`](crate::RedisStore) uses these to refresh a value L2 still
/// holds (stale-while-revalidate, fail-safe, early refresh), released by the refresh's fill
/// in the same step; a miss needs none (its lease is the record `SET … NX GET` leaves in the
/// data key). Connect one yourself only to keep refresh leases on another Redis than the
/// data.
#[derive(Clone)]
pub struct RedisLease {
    conn: Connection,
}

impl std::fmt::Debug for RedisLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLease").finish_non_exhaustive()
    }
}

impl RedisLease {
    /// Connects with its own connection.
    pub async fn connect_with(config: &RedisConfig) -> Result<Self, Error> {
        Ok(Self::on(Connection::open(config).await?))
    }

    pub(crate) fn on(conn: Connection) -> Self {
        RedisLease { conn }
    }
}

#[async_trait]
impl Lease for RedisLease {
    async fn try_acquire(
        &self,
        namespace: &str,
        key: &str,
        token: u64,
        ttl: Duration,
    ) -> Result<bool, Error> {
        let held: u8 = ACQUIRE_LEASE
            .key(self.conn.layout().lease(namespace, key))
            .arg(token)
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .invoke_async(&mut self.conn.get())
            .await
            .map_err(|e| self.conn.failed(e))?;
        Ok(held == 1)
    }

    async fn release(&self, namespace: &str, key: &str, token: u64) -> Result<(), Error> {
        RELEASE_LEASE
            .key(self.conn.layout().lease(namespace, key))
            .arg(token)
            .invoke_async::<()>(&mut self.conn.get())
            .await
            .map_err(|e| self.conn.failed(e))
    }
}
