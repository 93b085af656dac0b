//! The embedded L2: an in-process map, for bare machines, examples and tests.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::{Fence, L2Store, Read, WriteMode, Written};
use crate::envelope::{lease_holder, lease_record, lease_waited, stamp};
use crate::error::Error;
use crate::invalidation::{LogAppend, Position};
use crate::keys::{data_key, tag_key};
use crate::lease::{Lease, MemoryLease};

/// An in-process [`L2Store`]: the embedded default when no Redis is configured.
///
/// Cloning shares the map (and the store's leases), so several caches built on clones of one
/// `MemoryStore` behave like instances sharing one Redis: a miss takes its load lease in the
/// data key as on Redis, and a fill is stored only if it is still there. Bounded by entry
/// count: when full, expired entries are dropped first, then arbitrary ones (like Redis'
/// `allkeys-random`).
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<State>>,
    lease: MemoryLease,
}

#[derive(Debug)]
struct State {
    capacity: usize,
    /// What each data key holds — a value or a lease record — and until when.
    entries: HashMap<String, (Bytes, Instant)>,
    tags: HashMap<String, HashSet<String>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::with_capacity(1_000_000)
    }
}

impl MemoryStore {
    /// A store holding at most `capacity` entries.
    pub fn with_capacity(capacity: usize) -> Self {
        MemoryStore {
            inner: Arc::new(Mutex::new(State {
                capacity: capacity.max(1),
                entries: HashMap::new(),
                tags: HashMap::new(),
            })),
            lease: MemoryLease::new(),
        }
    }

    /// Number of live values (lease records not counted).
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.lock()
            .entries
            .values()
            .filter(|(v, e)| *e > now && lease_holder(v).is_none())
            .count()
    }

    /// Whether the store holds no live value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code path panics while holding the lock, but if one ever did, the map is still
        // consistent (every mutation is a single insert/remove), so keep serving.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl State {
    /// What `full` holds, unexpired: a value or a lease record.
    fn raw(&self, full: &str) -> Option<&Bytes> {
        match self.entries.get(full) {
            Some((v, expires)) if *expires > Instant::now() => Some(v),
            _ => None,
        }
    }

    /// The value under `full`; a lease record reads as nothing.
    fn get(&self, full: &str) -> Option<Bytes> {
        self.raw(full)
            .filter(|v| lease_holder(v).is_none())
            .cloned()
    }

    fn holds(&self, full: &str, fence: Fence) -> bool {
        let now = self.raw(full);
        match fence {
            Fence::Lease(token) => now.is_some_and(|v| lease_holder(v) == Some(token)),
            Fence::Stamp(s) => now.and_then(|v| stamp(v)) == Some(s),
            Fence::Bytes(b) => now == Some(&b),
            Fence::None => true,
        }
    }

    fn put(&mut self, full: String, bytes: Bytes, ttl: Duration) {
        if !self.entries.contains_key(&full) {
            self.make_room();
        }
        self.entries.insert(full, (bytes, Instant::now() + ttl));
    }

    fn make_room(&mut self) {
        if self.entries.len() < self.capacity {
            return;
        }
        let now = Instant::now();
        self.entries.retain(|_, (_, e)| *e > now);
        let excess = (self.entries.len() + 1).saturating_sub(self.capacity);
        let victims: Vec<String> = self.entries.keys().take(excess).cloned().collect();
        for k in victims {
            self.entries.remove(&k);
        }
    }
}

#[async_trait]
impl L2Store for MemoryStore {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Bytes>, Error> {
        Ok(self.lock().get(&data_key(namespace, key)))
    }

    async fn get_many(&self, namespace: &str, keys: &[&str]) -> Result<Vec<Option<Bytes>>, Error> {
        let state = self.lock();
        Ok(keys
            .iter()
            .map(|k| state.get(&data_key(namespace, k)))
            .collect())
    }

    async fn read(
        &self,
        namespace: &str,
        key: &str,
        lease: Option<(u64, Duration)>,
        _wait: bool,
    ) -> Result<Read, Error> {
        // No announcements in memory: waiters poll, which is cheap here.
        let full = data_key(namespace, key);
        let mut state = self.lock();
        Ok(match state.raw(&full) {
            Some(v) => match lease_holder(v) {
                Some(holder) if Some(holder) == lease.map(|l| l.0) => Read::Leased,
                Some(_) => Read::Loading {
                    waited_on: lease_waited(v),
                },
                None => Read::Value(v.clone()),
            },
            None => match lease {
                Some((token, ttl)) => {
                    state.put(full, Bytes::copy_from_slice(&lease_record(token)), ttl);
                    Read::Leased
                }
                None => Read::Absent,
            },
        })
    }

    async fn release(&self, namespace: &str, key: &str, token: u64) -> Result<(), Error> {
        let full = data_key(namespace, key);
        let mut state = self.lock();
        if state.holds(&full, Fence::Lease(token)) {
            state.entries.remove(&full);
        }
        Ok(())
    }

    fn lease(&self) -> Option<Arc<dyn Lease>> {
        Some(Arc::new(self.lease.clone()))
    }

    async fn set(
        &self,
        namespace: &str,
        key: &str,
        value: Bytes,
        ttl: Duration,
        tags: &[String],
        mode: WriteMode,
    ) -> Result<Written, Error> {
        let full = data_key(namespace, key);
        let mut state = self.lock();
        if let WriteMode::Fill { fence, lease, .. } = mode {
            if let Some(token) = lease {
                self.lease.give_back(namespace, key, token);
            }
            if !state.holds(&full, fence) {
                return Ok(Written::default());
            }
        }
        for tag in tags {
            state
                .tags
                .entry(tag_key(namespace, tag))
                .or_default()
                .insert(full.clone());
        }
        state.put(full, value, ttl);
        Ok(Written {
            stored: true,
            logged: None,
        })
    }

    async fn delete(
        &self,
        namespace: &str,
        key: &str,
        _log: Option<&LogAppend>,
    ) -> Result<Option<Position>, Error> {
        self.lock().entries.remove(&data_key(namespace, key));
        Ok(None)
    }

    async fn delete_by_tag(&self, namespace: &str, tag: &str) -> Result<u64, Error> {
        let mut state = self.lock();
        let members = state
            .tags
            .remove(&tag_key(namespace, tag))
            .unwrap_or_default();
        let mut removed = 0;
        for full in members {
            removed += u64::from(state.entries.remove(&full).is_some());
        }
        Ok(removed)
    }

    async fn clear(&self, namespace: &str) -> Result<u64, Error> {
        let data_prefix = format!("{namespace}:");
        let index_prefix = format!("{namespace}#tag:");
        let mut state = self.lock();
        let before = state.entries.len();
        state.entries.retain(|k, _| !k.starts_with(&data_prefix));
        state.tags.retain(|k, _| !k.starts_with(&index_prefix));
        Ok((before - state.entries.len()) as u64)
    }
}
