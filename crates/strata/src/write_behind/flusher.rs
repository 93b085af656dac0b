//! `Flusher`: applies a write-behind queue to the source of truth.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::{QueuedWrite, WriteQueue};
use crate::codec::Codec;
use crate::resilience::full_jitter;

/// Takes entries from a [`WriteQueue`] and applies each with a persist function, acknowledging
/// it only once that succeeded. See the [module documentation](crate::write_behind).
#[derive(Debug)]
pub struct Flusher {
    queue: Arc<dyn WriteQueue>,
    namespace: String,
    consumer: String,
    batch: usize,
    claim_after: Duration,
    max_attempts: u32,
    min_delay: Duration,
    max_delay: Duration,
}

impl Flusher {
    /// A flusher of `namespace`'s queue, named `flusher-<pid>-<random>`: unique even where
    /// every container's process is pid 1.
    pub fn new(queue: impl WriteQueue, namespace: impl Into<String>) -> Self {
        Flusher {
            queue: Arc::new(queue),
            namespace: namespace.into(),
            consumer: format!("flusher-{}-{:08x}", std::process::id(), fastrand::u32(..)),
            batch: 100,
            claim_after: Duration::from_secs(30),
            max_attempts: 5,
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        }
    }

    /// The consumer name (default `flusher-<pid>-<random>`): entries taken are pending under
    /// it until acknowledged.
    pub fn consumer(mut self, name: impl Into<String>) -> Self {
        self.consumer = name.into();
        self
    }

    /// Entries taken at a time (default 100).
    pub fn batch(mut self, n: usize) -> Self {
        self.batch = n.max(1);
        self
    }

    /// How long an entry taken by another flusher may stay unacknowledged before this one
    /// takes it over (default 30 s): above the slowest persist, or entries are applied twice.
    pub fn claim_after(mut self, idle: Duration) -> Self {
        self.claim_after = idle;
        self
    }

    /// Attempts per entry before it becomes a dead letter (default 5).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// The backoff between attempts: `min` doubling to `max`, with full jitter (default 100 ms to
    /// 5 s).
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_delay = min;
        self.max_delay = max.max(min);
        self
    }

    /// Applies the queue with `persist` until the future is dropped. Values are decoded as
    /// `T`; an entry that does not decode becomes a dead letter at once.
    pub async fn run<T, F, Fut, E>(self, persist: F)
    where
        T: DeserializeOwned,
        F: Fn(QueuedWrite<T>) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        // While the queue itself is unreachable, ask again with backoff.
        let mut outage = self.backoff_delays();
        loop {
            let taken = self
                .queue
                .take(
                    &self.namespace,
                    &self.consumer,
                    self.batch,
                    self.claim_after,
                    Duration::from_secs(1),
                )
                .await;
            match taken {
                Ok(writes) => {
                    outage = self.backoff_delays();
                    for write in writes {
                        self.apply(write, &persist).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(namespace = %self.namespace, error = %e, "write-behind queue unreachable");
                    let delay = outage.next().unwrap_or(self.max_delay);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// One entry: persist (retrying), then acknowledge or dead-letter.
    async fn apply<T, F, Fut, E>(&self, write: QueuedWrite, persist: &F)
    where
        T: DeserializeOwned,
        F: Fn(QueuedWrite<T>) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let ns = &self.namespace;
        let mut delays = self.backoff_delays();
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Decoded for each attempt (cheap next to a persist), so `T` need not be `Clone`.
            let value = match Codec::Json.decode::<T>(&write.value) {
                Ok(value) => value,
                Err(e) => return self.bury(write, &format!("undecodable: {e}")).await,
            };
            let this = QueuedWrite {
                id: write.id.clone(),
                key: write.key.clone(),
                value,
            };
            match persist(this).await {
                Ok(()) => {
                    metrics::counter!("strata_write_behind_persisted_total", "namespace" => ns.clone()).increment(1);
                    // If this fails the entry stays pending and is applied again later:
                    // at least once, which idempotent persists absorb.
                    if let Err(e) = self.queue.ack(ns, &write.id).await {
                        tracing::warn!(namespace = %ns, id = %write.id, error = %e, "write-behind ack failed; the entry will be applied again");
                    }
                    return;
                }
                Err(e) if attempt >= self.max_attempts => {
                    return self.bury(write, &e.to_string()).await;
                }
                Err(e) => {
                    metrics::counter!("strata_write_behind_retries_total", "namespace" => ns.clone()).increment(1);
                    tracing::debug!(namespace = %ns, id = %write.id, attempt, error = %e, "persist failed; retrying");
                    tokio::time::sleep(delays.next().unwrap_or(self.max_delay)).await;
                }
            }
        }
    }

    async fn bury(&self, write: QueuedWrite, error: &str) {
        let ns = &self.namespace;
        tracing::error!(namespace = %ns, id = %write.id, key = %write.key, error, "write-behind entry dead-lettered");
        metrics::counter!("strata_write_behind_dead_letters_total", "namespace" => ns.clone())
            .increment(1);
        if let Err(e) = self.queue.dead_letter(ns, &write, error).await {
            tracing::warn!(namespace = %ns, id = %write.id, error = %e, "dead-lettering failed; the entry will be tried again");
        }
    }

    fn backoff_delays(&self) -> impl Iterator<Item = Duration> + use<> {
        full_jitter(self.min_delay, self.max_delay)
    }
}
