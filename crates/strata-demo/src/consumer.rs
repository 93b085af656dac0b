//! Consuming events: a consumer group per service, redeliveries skipped by event id.

use std::future::Future;
use std::time::Duration;

use strata_redis::{RedisConfig, RedisConnection};

use crate::db::Db;
use crate::error::{DemoError, Result};
use crate::event::{Event, Topic, now_ms};

/// What a handler did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Done: acknowledge it.
    Done,
    /// Not now: leave it pending, to be delivered again.
    Retry,
}

/// One `XREADGROUP` entry: stream entry id, then field/value pairs (`None` if deleted).
type RawEntry = (String, Option<Vec<Vec<u8>>>);

/// An `XREADGROUP` reply: per stream, its entries (`None` when the read timed out).
type ReadReply = Option<Vec<(String, Vec<RawEntry>)>>;

/// Reads `topics` as member `name` of consumer group `group`.
pub struct Consumer {
    db: Db,
    config: RedisConfig,
    group: String,
    name: String,
    topics: Vec<Topic>,
    conn: Option<RedisConnection>,
    /// Read our own pending entries first (after a restart, or a `Retry`).
    backlog: bool,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("group", &self.group)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// How long one read blocks.
const BLOCK: Duration = Duration::from_millis(500);

impl Consumer {
    /// A consumer for `topics` in `group` (one group per service: each service sees every
    /// event once; its instances share them).
    pub fn new(db: Db, config: RedisConfig, group: &str, name: &str, topics: &[Topic]) -> Self {
        Consumer {
            db,
            config,
            group: group.to_owned(),
            name: name.to_owned(),
            topics: topics.to_vec(),
            conn: None,
            backlog: true,
        }
    }

    async fn connection(&mut self) -> Result<&mut RedisConnection> {
        if self.conn.is_none() {
            let mut conn = self.config.dedicated(BLOCK).await?;
            for topic in &self.topics {
                // From now on ("$"): a service that starts has nothing cached to evict.
                let created: redis::RedisResult<()> = redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(topic.stream())
                    .arg(&self.group)
                    .arg("$")
                    .arg("MKSTREAM")
                    .query_async(&mut conn)
                    .await;
                match created {
                    Err(e) if e.code() != Some("BUSYGROUP") => return Err(e.into()),
                    _ => {}
                }
            }
            self.conn = Some(conn);
        }
        // Just set when it was empty.
        self.conn
            .as_mut()
            .ok_or_else(|| DemoError::Config("no connection".into()))
    }

    /// One read: handles what arrives (at most 100 entries, waiting up to 500 ms for some);
    /// returns how many events were handled (duplicates and foreign entries not counted).
    pub async fn poll<F, Fut>(&mut self, handler: &F) -> Result<usize>
    where
        F: Fn(Event) -> Fut,
        Fut: Future<Output = Handled>,
    {
        let start = if self.backlog { "0" } else { ">" };
        let (group, name) = (self.group.clone(), self.name.clone());
        let streams: Vec<&'static str> = self.topics.iter().map(|t| t.stream()).collect();
        let conn = self.connection().await?;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&group)
            .arg(&name)
            .arg("COUNT")
            .arg(100);
        if start == ">" {
            cmd.arg("BLOCK").arg(BLOCK.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(&streams);
        for _ in &streams {
            cmd.arg(start);
        }
        let reply: redis::RedisResult<ReadReply> = cmd.query_async(conn).await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                // The connection may be unusable (or the stream gone with its group): start
                // over with a new one, which recreates the groups.
                self.conn = None;
                return Err(e.into());
            }
        };
        let entries: Vec<(String, RawEntry)> = reply
            .into_iter()
            .flatten()
            .flat_map(|(stream, entries)| entries.into_iter().map(move |e| (stream.clone(), e)))
            .collect();
        if self.backlog && entries.is_empty() {
            self.backlog = false;
        }
        let mut handled = 0;
        for (stream, (entry_id, fields)) in entries {
            match self.take(&entry_id, fields, handler).await? {
                Some(Handled::Retry) => {
                    // Leave it pending; read the backlog again next time.
                    self.backlog = true;
                    continue;
                }
                Some(Handled::Done) => handled += 1,
                None => {}
            }
            let conn = self.connection().await?;
            redis::cmd("XACK")
                .arg(&stream)
                .arg(&group)
                .arg(&entry_id)
                .query_async::<i64>(conn)
                .await?;
        }
        Ok(handled)
    }

    /// Handles one entry unless it was handled before; `None` for a duplicate or an entry
    /// that is not an event of ours (acknowledged, so it does not come back forever).
    async fn take<F, Fut>(
        &mut self,
        entry_id: &str,
        fields: Option<Vec<Vec<u8>>>,
        handler: &F,
    ) -> Result<Option<Handled>>
    where
        F: Fn(Event) -> Fut,
        Fut: Future<Output = Handled>,
    {
        let Some((id, payload)) = fields.and_then(|f| fields_of(&f)) else {
            tracing::warn!(entry_id, "stream entry without an event id; skipped");
            return Ok(None);
        };
        handle_once(&self.db, &id, &payload, handler).await
    }

    /// Runs until dropped, handling every event with `handler`.
    pub async fn run<F, Fut>(mut self, handler: F)
    where
        F: Fn(Event) -> Fut,
        Fut: Future<Output = Handled>,
    {
        loop {
            if let Err(error) = self.poll(&handler).await {
                tracing::warn!(%error, group = %self.group, "event consumer");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// Handles the event `id` unless this service handled it before (its `processed_events`);
/// `None` for a duplicate or bytes that are not an event of ours.
pub(crate) async fn handle_once<F, Fut>(
    db: &Db,
    id: &str,
    payload: &[u8],
    handler: &F,
) -> Result<Option<Handled>>
where
    F: Fn(Event) -> Fut,
    Fut: Future<Output = Handled>,
{
    let seen = sqlx::query("SELECT 1 AS one FROM processed_events WHERE id = $1")
        .bind(id)
        .fetch_optional(db.pool())
        .await?;
    if seen.is_some() {
        metrics::counter!("strata_events_duplicates_total").increment(1);
        return Ok(None);
    }
    let event = match Event::decode(id, payload) {
        Ok(event) => event,
        Err(error) => {
            tracing::warn!(%error, "foreign event skipped");
            return Ok(None);
        }
    };
    // The id starts with its creation time (ms).
    if let Some(created) = id.split('-').next().and_then(|t| t.parse::<i64>().ok()) {
        let lag = (now_ms() - created).max(0) as f64 / 1000.0;
        metrics::histogram!("strata_event_lag_seconds", "topic" => event.topic().name())
            .record(lag);
    }
    let outcome = handler(event).await;
    if outcome == Handled::Done {
        // After the effect: a crash in between redelivers, and handlers are idempotent.
        sqlx::query(
            "INSERT INTO processed_events (id, processed_ms) VALUES ($1, $2) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(now_ms())
        .execute(db.pool())
        .await?;
    }
    Ok(Some(outcome))
}

/// The event id and payload of an entry's field/value pairs.
fn fields_of(fields: &[Vec<u8>]) -> Option<(String, Vec<u8>)> {
    let (mut id, mut payload) = (None, None);
    for pair in fields.chunks_exact(2) {
        match pair[0].as_slice() {
            b"id" => id = String::from_utf8(pair[1].clone()).ok(),
            b"payload" => payload = Some(pair[1].clone()),
            _ => {}
        }
    }
    Some((id?, payload?))
}
