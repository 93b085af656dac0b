//! The embedded L2: an in-process map, for bare machines, examples and tests.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::{Generation, L2Store, LoadStart, WriteMode};
use crate::error::Error;
use crate::keys::{data_key, generation_key, namespace_generation_key, tag_key};
use crate::lease::{Lease, MemoryLease};

/// An in-process [`L2Store`]: the embedded default when no Redis is configured.
///
/// Cloning shares the map (and the store's load leases), so several caches built on clones of
/// one `MemoryStore` behave like instances sharing one Redis. Bounded by entry count: when full, expired entries are dropped
/// first, then arbitrary ones (like Redis' `allkeys-random`).
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<State>>,
    lease: MemoryLease,
}

#[derive(Debug)]
struct State {
    capacity: usize,
    entries: HashMap<String, (Bytes, Instant)>,
    tags: HashMap<String, HashSet<String>>,
    /// Generation counters, by [`generation_key`] / [`namespace_generation_key`]. Never
    /// dropped: forgetting one would let a fill that read it before a bump pass again.
    generations: HashMap<String, u64>,
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
                generations: HashMap::new(),
            })),
            lease: MemoryLease::new(),
        }
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.lock()
            .entries
            .values()
            .filter(|(_, e)| *e > now)
            .count()
    }

    /// Whether the store holds no live entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code path panics while holding the lock, but if one ever did, the map is still
        // consistent (every mutation is a single insert/remove), so keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn generation(&self, namespace: &str, key: &str) -> Generation {
        let read = |k: String| self.generations.get(&k).copied().unwrap_or(0);
        Generation {
            key: read(generation_key(namespace, key)),
            namespace: read(namespace_generation_key(namespace)),
        }
    }

    fn bump(&mut self, counter: String) {
        *self.generations.entry(counter).or_default() += 1;
    }

    fn get(&self, full: &str) -> Option<Bytes> {
        match self.entries.get(full) {
            Some((v, expires)) if *expires > Instant::now() => Some(v.clone()),
            _ => None,
        }
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

    async fn generation(&self, namespace: &str, key: &str) -> Result<Generation, Error> {
        Ok(self.lock().generation(namespace, key))
    }

    async fn generations(&self, namespace: &str, keys: &[&str]) -> Result<Vec<Generation>, Error> {
        let state = self.lock();
        Ok(keys
            .iter()
            .map(|k| state.generation(namespace, k))
            .collect())
    }

    fn lease(&self) -> Option<Arc<dyn Lease>> {
        Some(Arc::new(self.lease.clone()))
    }

    async fn begin_load(
        &self,
        namespace: &str,
        key: &str,
        lease: Option<(u64, Duration)>,
        absent: bool,
    ) -> Result<LoadStart, Error> {
        let state = self.lock();
        let generation = state.generation(namespace, key);
        let filled = if absent {
            state.get(&data_key(namespace, key))
        } else {
            None
        };
        // Under the store's lock, so no fill lands between the check and the lease.
        let lease_taken = filled.is_none()
            && lease.is_some_and(|(token, ttl)| self.lease.take(namespace, key, token, ttl));
        Ok(LoadStart {
            generation,
            lease_taken,
            filled,
        })
    }

    async fn get_many(&self, namespace: &str, keys: &[&str]) -> Result<Vec<Option<Bytes>>, Error> {
        let state = self.lock();
        Ok(keys
            .iter()
            .map(|k| state.get(&data_key(namespace, k)))
            .collect())
    }

    async fn set(
        &self,
        namespace: &str,
        key: &str,
        value: Bytes,
        ttl: Duration,
        tags: &[String],
        mode: WriteMode,
    ) -> Result<bool, Error> {
        let full = data_key(namespace, key);
        let mut state = self.lock();
        match mode {
            WriteMode::Fill { read, lease } => {
                if let Some(token) = lease {
                    self.lease.give_back(namespace, key, token);
                }
                if state.generation(namespace, key) != read {
                    return Ok(false);
                }
            }
            WriteMode::Replace => state.bump(generation_key(namespace, key)),
        }
        if !state.entries.contains_key(&full) {
            state.make_room();
        }
        for tag in tags {
            state
                .tags
                .entry(tag_key(namespace, tag))
                .or_default()
                .insert(full.clone());
        }
        state.entries.insert(full, (value, Instant::now() + ttl));
        Ok(true)
    }

    async fn delete(&self, namespace: &str, key: &str) -> Result<(), Error> {
        let mut state = self.lock();
        state.entries.remove(&data_key(namespace, key));
        state.bump(generation_key(namespace, key));
        Ok(())
    }

    async fn delete_by_tag(&self, namespace: &str, tag: &str) -> Result<u64, Error> {
        let mut state = self.lock();
        let members = state
            .tags
            .remove(&tag_key(namespace, tag))
            .unwrap_or_default();
        let data_prefix = format!("{namespace}:");
        let mut removed = 0;
        for full in members {
            removed += u64::from(state.entries.remove(&full).is_some());
            if let Some(key) = full.strip_prefix(&data_prefix) {
                state.bump(generation_key(namespace, key));
            }
        }
        Ok(removed)
    }

    async fn clear(&self, namespace: &str) -> Result<u64, Error> {
        let data_prefix = format!("{namespace}:");
        let index_prefix = format!("{namespace}#tag:");
        let mut state = self.lock();
        state.bump(namespace_generation_key(namespace));
        let before = state.entries.len();
        state.entries.retain(|k, _| !k.starts_with(&data_prefix));
        state.tags.retain(|k, _| !k.starts_with(&index_prefix));
        Ok((before - state.entries.len()) as u64)
    }
}
