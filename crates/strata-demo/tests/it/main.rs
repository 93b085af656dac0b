//! The demo's plumbing against real Redis and SQLite files.

mod events;
mod order;
mod people_and_payments;
mod postgres;
mod product;

use strata_demo::{Context, ServiceConfig};
use strata_testkit::RedisServer;

/// A service's context: its SQLite file in `dir`, the shared `redis`.
pub(crate) async fn context(name: &str, redis: &RedisServer, dir: &tempfile::TempDir) -> Context {
    Context::start(&ServiceConfig {
        name: name.into(),
        database_url: format!(
            "sqlite://{}",
            dir.path().join(format!("{name}.db")).display()
        ),
        redis_url: Some(redis.url()),
    })
    .await
    .unwrap()
}
