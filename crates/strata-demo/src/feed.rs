//! The outbox over HTTP, for a landscape without Redis: each service serves its outbox at
//! `GET /_outbox?topic=…&since_ms=…`, and a [`FeedConsumer`] polls the services it depends
//! on. The same events, the same idempotent handling, no broker — at the price of a poll.
//!
//! An event's id begins with the time it was appended, but a transaction may commit after a
//! later one: each poll re-reads a window of [`OVERLAP`] before the newest event seen, and
//! `processed_events` drops what was handled already, so a late commit is not skipped.

use std::future::Future;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::consumer::{Handled, handle_once};
use crate::db::Db;
use crate::event::{Event, Topic};
use crate::remote::Remote;

/// How far back each poll looks before the newest event seen.
pub const OVERLAP: Duration = Duration::from_secs(5);
/// How often a consumer polls.
const EVERY: Duration = Duration::from_millis(200);
/// Events per page.
const PAGE: i64 = 500;

/// One page of a service's outbox.
#[derive(Debug, Serialize, Deserialize)]
pub struct Page {
    /// Events appended at or after `since_ms`, oldest first.
    pub events: Vec<FeedEvent>,
}

/// An event as the feed carries it.
#[derive(Debug, Serialize, Deserialize)]
pub struct FeedEvent {
    /// Its id.
    pub id: String,
    /// When it was appended (ms since the epoch).
    pub created_ms: i64,
    /// Its encoded form ([`Event::encode`]).
    pub payload: String,
}

#[derive(Deserialize)]
struct Since {
    topic: String,
    #[serde(default)]
    since_ms: i64,
}

/// `GET /_outbox?topic=products&since_ms=…` over `db`'s outbox.
pub fn routes(db: Db) -> Router {
    Router::new().route("/_outbox", get(page)).with_state(db)
}

async fn page(State(db): State<Db>, Query(q): Query<Since>) -> Response {
    let Some(topic) = Topic::parse(&q.topic) else {
        return (StatusCode::BAD_REQUEST, "unknown topic").into_response();
    };
    let rows = sqlx::query(
        "SELECT id, created_ms, payload FROM outbox WHERE topic = $1 AND created_ms >= $2 \
         ORDER BY created_ms, id LIMIT $3",
    )
    .bind(topic.name())
    .bind(q.since_ms)
    .bind(PAGE)
    .fetch_all(db.pool())
    .await;
    let events = rows.and_then(|rows| {
        rows.iter()
            .map(|r| {
                Ok(FeedEvent {
                    id: r.try_get("id")?,
                    created_ms: r.try_get("created_ms")?,
                    payload: r.try_get("payload")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
    });
    match events {
        Ok(events) => Json(Page { events }).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// Polls other services' outboxes and handles their events once each.
pub struct FeedConsumer {
    db: Db,
    sources: Vec<(Topic, Remote, i64)>,
}

impl std::fmt::Debug for FeedConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedConsumer").finish_non_exhaustive()
    }
}

impl FeedConsumer {
    /// Reads `topic` from each `(topic, service)`; `db` keeps what was handled. Starts at
    /// the present (less the overlap): a service that starts has nothing cached to evict.
    pub fn new(db: Db, sources: Vec<(Topic, Remote)>) -> Self {
        let start = crate::event::now_ms() - OVERLAP.as_millis() as i64;
        FeedConsumer {
            db,
            sources: sources.into_iter().map(|(t, r)| (t, r, start)).collect(),
        }
    }

    /// One poll of every source; how many events were handled.
    pub async fn poll<F, Fut>(&mut self, handler: &F) -> crate::Result<usize>
    where
        F: Fn(Event) -> Fut,
        Fut: Future<Output = Handled>,
    {
        let mut handled = 0;
        for (topic, remote, since) in &mut self.sources {
            let path = format!("/_outbox?topic={}&since_ms={since}", topic.name());
            let Some(page) = remote.get::<Page>(&path).await? else {
                continue;
            };
            let mut newest = *since;
            for e in &page.events {
                match handle_once(&self.db, &e.id, e.payload.as_bytes(), handler).await? {
                    // Not now: poll from here again (the overlap would not cover a long wait).
                    Some(Handled::Retry) => break,
                    Some(Handled::Done) => handled += 1,
                    None => {}
                }
                newest = newest.max(e.created_ms);
            }
            // A full page: go on from its newest (events of that very millisecond come again
            // and are dropped as handled); else keep the overlap for late commits.
            let next = if page.events.len() as i64 == PAGE {
                newest
            } else {
                newest - OVERLAP.as_millis() as i64
            };
            *since = next.max(*since);
        }
        Ok(handled)
    }

    /// Runs until dropped.
    pub async fn run<F, Fut>(mut self, handler: F)
    where
        F: Fn(Event) -> Fut,
        Fut: Future<Output = Handled>,
    {
        loop {
            if let Err(error) = self.poll(&handler).await {
                tracing::debug!(%error, "outbox feed");
            }
            tokio::time::sleep(EVERY).await;
        }
    }
}
