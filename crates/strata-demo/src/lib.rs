//! The reference e-commerce landscape of `strata demo`: user, product, inventory, order and
//! payment services, each owning its data and caching with Strata, kept coherent through
//! domain events.
//!
//! The parts every service shares:
//! - [`Db`]: its own database — a SQLite file by default, PostgreSQL when given a
//!   `postgres://` URL — migrated at start (portable SQL, one migration set per service).
//! - [`Outbox`]: a domain event is written in the same transaction as the change it
//!   announces; the [`Relay`] publishes it to a Redis Stream and marks it published, so an
//!   event is never lost nor invented by a crash between the two.
//! - [`Consumer`]: reads a stream in a consumer group, skips events it already handled
//!   (by id, so a redelivery is harmless), acknowledges after handling, and records how long
//!   events took to arrive (`strata_event_lag_seconds`). Without Redis, a
//!   [`FeedConsumer`] polls the producers' outboxes over HTTP instead.
//! - [`trace`]: each request a span continuing the caller's trace (`traceparent`), each call
//!   to another service carrying it on — exported over OTLP when configured.

mod consumer;
mod context;
mod db;
mod error;
mod event;
pub mod feed;
mod outbox;
mod remote;
mod run;
pub mod services;
pub mod trace;

pub use consumer::{Consumer, Handled};
pub use context::{Context, STALENESS_BOUND, ServiceConfig};
pub use db::Db;
pub use error::{DemoError, Result};
pub use event::{Event, EventId, Topic};
pub use feed::FeedConsumer;
pub use outbox::{Outbox, Relay};
pub use remote::{Remote, RemoteError};
pub use run::{RunArgs, SEED_PRODUCTS, SERVICES, run, stats};
