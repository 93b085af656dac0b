//! An in-process [`Lease`]: the one a [`MemoryStore`](crate::MemoryStore) keeps, shared by the
//! caches built on clones of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::Lease;
use crate::error::Error;
use crate::keys::lease_key;

/// Leases in an in-process map. Cloning shares the map, so caches using clones behave like
/// instances sharing one Redis. Every [`MemoryStore`](crate::MemoryStore) keeps one.
#[derive(Debug, Clone, Default)]
pub struct MemoryLease {
    held: Arc<Mutex<HashMap<String, (u64, Instant)>>>,
}

impl MemoryLease {
    /// An empty lease table.
    pub fn new() -> Self {
        Self::default()
    }
}

impl MemoryLease {
    /// Takes the lease on `key` of `namespace` if it is free or expired.
    pub(crate) fn take(&self, namespace: &str, key: &str, token: u64, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Expired leases are swept as they are met, so the map stays as small as the set of
        // keys loading right now.
        held.retain(|_, (_, until)| *until > now);
        let full = lease_key(namespace, key);
        if let Some((owner, _)) = held.get(&full) {
            // Already ours: a retry after a lost reply must not wait on itself.
            return *owner == token;
        }
        held.insert(full, (token, now + ttl));
        true
    }

    /// Frees the lease on `key` of `namespace` if `token` holds it.
    pub(crate) fn give_back(&self, namespace: &str, key: &str, token: u64) {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let full = lease_key(namespace, key);
        if held.get(&full).is_some_and(|(owner, _)| *owner == token) {
            held.remove(&full);
        }
    }
}

#[async_trait]
impl Lease for MemoryLease {
    async fn try_acquire(
        &self,
        namespace: &str,
        key: &str,
        token: u64,
        ttl: Duration,
    ) -> Result<bool, Error> {
        Ok(self.take(namespace, key, token, ttl))
    }

    async fn release(&self, namespace: &str, key: &str, token: u64) -> Result<(), Error> {
        self.give_back(namespace, key, token);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_at_a_time_and_only_the_holder_releases() {
        let lease = MemoryLease::new();
        let ttl = Duration::from_secs(60);
        assert!(lease.try_acquire("ns", "k", 1, ttl).await.unwrap());
        assert!(!lease.try_acquire("ns", "k", 2, ttl).await.unwrap());
        assert!(lease.try_acquire("other", "k", 2, ttl).await.unwrap());
        lease.release("ns", "k", 2).await.unwrap();
        assert!(
            !lease.try_acquire("ns", "k", 2, ttl).await.unwrap(),
            "not 2's to free"
        );
        lease.release("ns", "k", 1).await.unwrap();
        assert!(lease.try_acquire("ns", "k", 2, ttl).await.unwrap());
    }

    #[tokio::test]
    async fn an_expired_lease_can_be_taken_over() {
        let lease = MemoryLease::new();
        assert!(
            lease
                .try_acquire("ns", "k", 1, Duration::ZERO)
                .await
                .unwrap()
        );
        assert!(
            lease
                .try_acquire("ns", "k", 2, Duration::from_secs(60))
                .await
                .unwrap()
        );
    }
}
