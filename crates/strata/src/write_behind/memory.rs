//! `MemoryWriteQueue`: the write-behind queue in this process — for tests and the embedded
//! default. Not durable: what it holds dies with the process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;

use super::{QueuedWrite, WriteQueue};
use crate::error::Error;

/// An in-process [`WriteQueue`]. Clones share the queue.
#[derive(Clone, Debug, Default)]
pub struct MemoryWriteQueue {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<HashMap<String, Queue>>,
    arrived: Notify,
}

#[derive(Debug, Default)]
struct Queue {
    next_id: u64,
    /// Not yet taken, in order (ids are increasing).
    new: BTreeMap<u64, (String, Bytes)>,
    /// Taken, not yet acknowledged: by whom and when.
    pending: BTreeMap<u64, (String, Bytes, Instant)>,
    dead: Vec<(QueuedWrite, String)>,
}

impl MemoryWriteQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries not yet acknowledged (new or taken) in `namespace`.
    pub fn len(&self, namespace: &str) -> usize {
        self.lock()
            .get(namespace)
            .map_or(0, |q| q.new.len() + q.pending.len())
    }

    /// Whether `namespace` has nothing left to apply.
    pub fn is_empty(&self, namespace: &str) -> bool {
        self.len(namespace) == 0
    }

    /// The dead letters of `namespace`, with their errors.
    pub fn dead_letters(&self, namespace: &str) -> Vec<(QueuedWrite, String)> {
        self.lock()
            .get(namespace)
            .map(|q| q.dead.clone())
            .unwrap_or_default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Queue>> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn parse_id(id: &str) -> Result<u64, Error> {
    id.parse()
        .map_err(|_| Error::Decode(format!("not an id of this queue: {id:?}")))
}

#[async_trait]
impl WriteQueue for MemoryWriteQueue {
    async fn append(&self, namespace: &str, key: &str, value: Bytes) -> Result<String, Error> {
        let id = {
            let mut state = self.lock();
            let q = state.entry(namespace.to_owned()).or_default();
            q.next_id += 1;
            q.new.insert(q.next_id, (key.to_owned(), value));
            q.next_id
        };
        self.shared.arrived.notify_waiters();
        Ok(id.to_string())
    }

    async fn take(
        &self,
        namespace: &str,
        _consumer: &str,
        max: usize,
        idle: Duration,
        wait: Duration,
    ) -> Result<Vec<QueuedWrite>, Error> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let arrived = self.shared.arrived.notified();
            {
                let mut state = self.lock();
                let q = state.entry(namespace.to_owned()).or_default();
                let now = Instant::now();
                let mut out = Vec::new();
                for (id, (key, value, taken)) in &mut q.pending {
                    if out.len() < max && now.duration_since(*taken) >= idle {
                        *taken = now;
                        out.push(QueuedWrite {
                            id: id.to_string(),
                            key: key.clone(),
                            value: value.clone(),
                        });
                    }
                }
                while out.len() < max {
                    let Some((id, (key, value))) = q.new.pop_first() else {
                        break;
                    };
                    q.pending.insert(id, (key.clone(), value.clone(), now));
                    out.push(QueuedWrite {
                        id: id.to_string(),
                        key,
                        value,
                    });
                }
                if !out.is_empty() {
                    return Ok(out);
                }
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn ack(&self, namespace: &str, id: &str) -> Result<(), Error> {
        let id = parse_id(id)?;
        if let Some(q) = self.lock().get_mut(namespace) {
            q.pending.remove(&id);
        }
        Ok(())
    }

    async fn dead_letter(
        &self,
        namespace: &str,
        write: &QueuedWrite,
        error: &str,
    ) -> Result<(), Error> {
        let id = parse_id(&write.id)?;
        let mut state = self.lock();
        let q = state.entry(namespace.to_owned()).or_default();
        q.pending.remove(&id);
        q.dead.push((write.clone(), error.to_owned()));
        Ok(())
    }
}
