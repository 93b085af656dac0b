//! The transactional outbox and its relay.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Any, Row, Transaction};
use strata_redis::RedisConnection;
use tokio::sync::Notify;

use crate::db::Db;
use crate::error::Result;
use crate::event::{Event, EventId, Topic, new_id, now_ms};

/// Streams keep about this many events each (`XADD … MAXLEN ~`): consumers that fall further
/// behind than that have lost track anyway and start over from their caches' TTLs.
const STREAM_LENGTH: usize = 100_000;

/// Writes events in the caller's transaction.
#[derive(Debug, Clone, Copy)]
pub struct Outbox;

impl Outbox {
    /// Appends `event` to the outbox within `tx`: it is published if and only if `tx` commits.
    pub async fn append(tx: &mut Transaction<'_, Any>, event: &Event) -> Result<EventId> {
        let now = now_ms();
        let id = new_id(now);
        sqlx::query("INSERT INTO outbox (id, topic, payload, created_ms) VALUES ($1, $2, $3, $4)")
            .bind(&id)
            .bind(event.topic().name())
            .bind(event.encode())
            .bind(now)
            .execute(&mut **tx)
            .await?;
        Ok(id)
    }
}

/// Publishes committed outbox rows to their streams, oldest first, and marks them.
///
/// At least once: a crash between the `XADD` and the mark publishes the row again, which
/// consumers skip by its id. Several instances of a service may each run a relay; they
/// only add such duplicates.
#[derive(Clone)]
pub struct Relay {
    db: Db,
    redis: RedisConnection,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay from `db`'s outbox to `redis`.
    pub fn new(db: Db, redis: RedisConnection) -> Relay {
        Relay {
            db,
            redis,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Call after a commit that appended events: the relay publishes at once rather than at
    /// its next poll.
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// Publishes what is pending (at most 100 rows); returns how many.
    pub async fn publish_pending(&self) -> Result<usize> {
        let rows = sqlx::query(
            "SELECT id, topic, payload FROM outbox WHERE published_ms IS NULL \
             ORDER BY created_ms, id LIMIT 100",
        )
        .fetch_all(self.db.pool())
        .await?;
        let mut redis = self.redis.clone();
        for row in &rows {
            let id: String = row.try_get("id")?;
            let topic: String = row.try_get("topic")?;
            let payload: String = row.try_get("payload")?;
            let Some(topic) = Topic::parse(&topic) else {
                tracing::warn!(
                    id,
                    topic,
                    "outbox row for an unknown topic; left unpublished"
                );
                continue;
            };
            redis::cmd("XADD")
                .arg(topic.stream())
                .arg("MAXLEN")
                .arg("~")
                .arg(STREAM_LENGTH)
                .arg("*")
                .arg("id")
                .arg(&id)
                .arg("payload")
                .arg(&payload)
                .query_async::<String>(&mut redis)
                .await?;
            sqlx::query("UPDATE outbox SET published_ms = $1 WHERE id = $2")
                .bind(now_ms())
                .bind(&id)
                .execute(self.db.pool())
                .await?;
        }
        Ok(rows.len())
    }

    /// Runs until the task is dropped: publishes when notified, and every `poll` anyway (a
    /// commit from another instance, a failed attempt).
    pub async fn run(self, poll: Duration) {
        loop {
            match self.publish_pending().await {
                // More may be waiting: go on at once.
                Ok(100) => continue,
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "outbox relay"),
            }
            let _ = tokio::time::timeout(poll, self.wake.notified()).await;
        }
    }
}
