//! `RedisWriteQueue`: the durable write-behind queue, a Redis Stream per namespace
//! (`<namespace>#wb`) read through a consumer group.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use strata::{Error, QueuedWrite, WriteQueue};
use tokio::sync::Mutex;

use crate::config::RedisConfig;
use crate::connection::{Connection, RedisConnection};
use crate::error::classify;

/// The consumer group every flusher of a namespace joins.
const GROUP: &str = "strata-flushers";

/// An entry as `XREADGROUP` and `XAUTOCLAIM` return it: id, then field/value pairs flattened
/// (`None` for an entry deleted while pending).
type RawEntry = (String, Option<Vec<Vec<u8>>>);

/// Write-behind's queue on Redis: `XADD` to append (acknowledged once Redis has it: with
/// `appendonly yes` and `appendfsync always`, once it is on disk), a consumer group for the
/// flushers, `XAUTOCLAIM` to take over what a dead flusher left pending, `XACK` + `XDEL` when
/// applied, and a dead-letter stream (`<namespace>#wb:dead`) for entries that failed every
/// attempt.
///
/// Needs, besides the cache's ACL: `+xgroup|create +xreadgroup +xautoclaim +xack +xdel`.
pub struct RedisWriteQueue {
    writer: Connection,
    config: RedisConfig,
    /// A connection for blocking reads alone (a block holds up no other command).
    reader: Mutex<Option<RedisConnection>>,
}

impl std::fmt::Debug for RedisWriteQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisWriteQueue")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RedisWriteQueue {
    /// Connects with explicit settings.
    pub async fn connect_with(config: &RedisConfig) -> Result<Self, Error> {
        Ok(RedisWriteQueue {
            writer: Connection::open(config).await?,
            config: config.clone(),
            reader: Mutex::new(None),
        })
    }

    /// Connects to the Redis at `url` with default timeouts.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::connect_with(&RedisConfig::from_url(url)?).await
    }

    /// Creates the flushers' group (and the stream), if missing: on first use, and again after
    /// a Redis that lost its data.
    async fn create_group(&self, namespace: &str) -> Result<(), Error> {
        let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.writer.layout().write_queue(namespace))
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .exec_async(&mut self.writer.get())
            .await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(self.writer.failed(e)),
            _ => Ok(()),
        }
    }

    /// Entries another flusher took and left pending for at least `idle`.
    async fn claim(
        &self,
        namespace: &str,
        consumer: &str,
        max: usize,
        idle: Duration,
    ) -> Result<Vec<RawEntry>, redis::RedisError> {
        let (_, claimed, _): (String, Vec<RawEntry>, Vec<String>) = redis::cmd("XAUTOCLAIM")
            .arg(self.writer.layout().write_queue(namespace))
            .arg(GROUP)
            .arg(consumer)
            .arg(u64::try_from(idle.as_millis()).unwrap_or(u64::MAX))
            .arg("0-0")
            .arg("COUNT")
            .arg(max)
            .query_async(&mut self.writer.get())
            .await?;
        Ok(claimed)
    }

    async fn read_new(
        &self,
        namespace: &str,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<RawEntry>, Error> {
        let mut slot = self.reader.lock().await;
        let mut conn = match slot.take() {
            Some(conn) => conn,
            None => self.config.dedicated(wait).await?,
        };
        type Reply = Option<Vec<(String, Vec<RawEntry>)>>;
        let reply: Reply = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(max)
            .arg("BLOCK")
            .arg(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1))
            .arg("STREAMS")
            .arg(self.writer.layout().write_queue(namespace))
            .arg(">")
            .query_async(&mut conn)
            .await
            .map_err(classify)?;
        // Kept only after a good read: a failed one may have left the connection unusable.
        *slot = Some(conn);
        Ok(reply
            .into_iter()
            .flatten()
            .flat_map(|(_, entries)| entries)
            .collect())
    }
}

/// Field/value pairs → a queued write; `None` for a deleted or foreign entry.
fn parse(id: String, fields: Option<Vec<Vec<u8>>>) -> Option<QueuedWrite> {
    let fields = fields?;
    let (mut key, mut value) = (None, None);
    for pair in fields.chunks_exact(2) {
        match pair[0].as_slice() {
            b"k" => key = String::from_utf8(pair[1].clone()).ok(),
            b"v" => value = Some(Bytes::from(pair[1].clone())),
            _ => {}
        }
    }
    Some(QueuedWrite {
        id,
        key: key?,
        value: value?,
    })
}

#[async_trait]
impl WriteQueue for RedisWriteQueue {
    async fn append(&self, namespace: &str, key: &str, value: Bytes) -> Result<String, Error> {
        let queue = self.writer.layout().write_queue(namespace);
        let id: String = redis::cmd("XADD")
            .arg(&queue)
            .arg("*")
            .arg("k")
            .arg(key)
            .arg("v")
            .arg(value.as_ref())
            .query_async(&mut self.writer.get())
            .await
            .map_err(|e| self.writer.failed(e))?;
        // On a cluster, an acknowledged write-behind entry is on a replica too.
        self.writer.replicated(&queue).await?;
        Ok(id)
    }

    async fn take(
        &self,
        namespace: &str,
        consumer: &str,
        max: usize,
        idle: Duration,
        wait: Duration,
    ) -> Result<Vec<QueuedWrite>, Error> {
        // First what a dead flusher left pending. No group (first use, or a Redis that lost
        // its data) is made, not kept track of: the error says when.
        let claimed = match self.claim(namespace, consumer, max, idle).await {
            Err(e) if e.code() == Some("NOGROUP") => {
                self.create_group(namespace).await?;
                self.claim(namespace, consumer, max, idle).await
            }
            claimed => claimed,
        }
        .map_err(|e| self.writer.failed(e))?;
        let entries = if claimed.is_empty() {
            self.read_new(namespace, consumer, max, wait).await?
        } else {
            claimed
        };
        let mut writes = Vec::with_capacity(entries.len());
        for (id, fields) in entries {
            match parse(id.clone(), fields) {
                Some(write) => writes.push(write),
                None => {
                    // Not ours to apply (deleted, or written by someone else): out of the way.
                    tracing::warn!(namespace, id, "foreign write-behind entry skipped");
                    self.ack(namespace, &id).await?;
                }
            }
        }
        Ok(writes)
    }

    async fn ack(&self, namespace: &str, id: &str) -> Result<(), Error> {
        let key = self.writer.layout().write_queue(namespace);
        redis::pipe()
            .atomic()
            .cmd("XACK")
            .arg(&key)
            .arg(GROUP)
            .arg(id)
            .ignore()
            .cmd("XDEL")
            .arg(&key)
            .arg(id)
            .ignore()
            .exec_async(&mut self.writer.get())
            .await
            .map_err(|e| self.writer.failed(e))
    }

    async fn dead_letter(
        &self,
        namespace: &str,
        write: &QueuedWrite,
        error: &str,
    ) -> Result<(), Error> {
        let key = self.writer.layout().write_queue(namespace);
        redis::pipe()
            .atomic()
            .cmd("XADD")
            .arg(self.writer.layout().dead_letters(namespace))
            .arg("*")
            .arg("id")
            .arg(&write.id)
            .arg("k")
            .arg(&write.key)
            .arg("v")
            .arg(write.value.as_ref())
            .arg("error")
            .arg(error)
            .ignore()
            .cmd("XACK")
            .arg(&key)
            .arg(GROUP)
            .arg(&write.id)
            .ignore()
            .cmd("XDEL")
            .arg(&key)
            .arg(&write.id)
            .ignore()
            .exec_async(&mut self.writer.get())
            .await
            .map_err(|e| self.writer.failed(e))
    }
}
