//! Write-behind without its data-loss risk: a write is acknowledged once it is in a durable
//! queue (a Redis Stream), then applied to the cache; a [`Flusher`] applies the queue to the
//! source of truth later, in order, and acknowledges each entry only after the persist
//! function succeeded.
//!
//! - **Nothing acknowledged is lost**: a flusher that dies mid-flush leaves its entries
//!   pending in the queue; the next flusher (or the same one restarted) claims those left idle
//!   for [`Flusher::claim_after`] and applies them.
//! - **At least once, so persist idempotently**: an entry whose persist succeeded but whose
//!   acknowledgement was lost with the process is applied again. Each [`QueuedWrite`] carries
//!   the queue's id for it — unique and stable across deliveries — to deduplicate on (an
//!   upsert keyed by it, a processed-ids table).
//! - **Retries, then dead letters**: a failed persist is retried with capped exponential
//!   backoff; after [`Flusher::max_attempts`] the entry moves to the dead-letter stream
//!   (`<namespace>#wb:dead`, with the error) so it neither blocks the queue nor disappears.
//! - **Order**: one flusher applies entries in queue order, one at a time (head-of-line:
//!   an entry is retried before the next is tried). Several flushers share the work, and then
//!   order holds per flusher only.
//!
//! ```no_run
//! # async fn demo(cache: strata::HybridCache, queue: strata::MemoryWriteQueue) -> strata::Result<()> {
//! use strata::{EntryOptions, Flusher};
//! cache.write_behind("cart:7", vec![1u32, 2], &EntryOptions::default()).await?;
//! let flusher = Flusher::new(queue, "carts");
//! tokio::spawn(flusher.run(|write: strata::QueuedWrite<Vec<u32>>| async move {
//!     // e.g. INSERT … ON CONFLICT (write_id) DO NOTHING
//!     Ok::<(), std::io::Error>(())
//! }));
//! # Ok(()) }
//! ```

mod flusher;
mod memory;

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Error;

pub use flusher::Flusher;
pub use memory::MemoryWriteQueue;

/// One entry of a write-behind queue, as a flusher hands it to the persist function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedWrite<T = Bytes> {
    /// The queue's id for the entry: unique, stable across redeliveries — the key to persist
    /// idempotently with.
    pub id: String,
    /// The cache key written.
    pub key: String,
    /// The value written.
    pub value: T,
}

/// The durable queue behind write-behind. Implementations: [`MemoryWriteQueue`] (in-process,
/// for tests and the embedded default; not durable) and `strata_redis::RedisWriteQueue` (a
/// Redis Stream with a consumer group).
#[async_trait]
pub trait WriteQueue: Send + Sync + Debug + 'static {
    /// Appends a write; returns its id once the queue holds it durably.
    async fn append(&self, namespace: &str, key: &str, value: Bytes) -> Result<String, Error>;

    /// Up to `max` entries for `consumer` to apply: first entries another consumer took and
    /// left unacknowledged for at least `idle` (it died), else new ones, waiting up to `wait`
    /// for some to arrive.
    async fn take(
        &self,
        namespace: &str,
        consumer: &str,
        max: usize,
        idle: Duration,
        wait: Duration,
    ) -> Result<Vec<QueuedWrite>, Error>;

    /// The entry was applied: remove it from the queue.
    async fn ack(&self, namespace: &str, id: &str) -> Result<(), Error>;

    /// The entry failed every attempt: keep it, with `error`, among the dead letters and
    /// remove it from the queue.
    async fn dead_letter(
        &self,
        namespace: &str,
        write: &QueuedWrite,
        error: &str,
    ) -> Result<(), Error>;
}
