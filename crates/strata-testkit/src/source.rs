//! A source of truth for tests: records whose loads are counted, slowed or failed on demand.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A cached record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// Id.
    pub id: u64,
    /// Bumped by every [`Db::update`].
    pub version: u64,
    /// Name.
    pub name: String,
}

/// The future a [`Db::loader`] returns.
pub type LoadFuture = Pin<Box<dyn Future<Output = io::Result<Product>> + Send>>;

/// The "database": every load is counted; loads can be made slow or failing.
#[derive(Debug, Clone, Default)]
pub struct Db {
    calls: Arc<AtomicUsize>,
    version: Arc<AtomicU64>,
    failing: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
}

impl Db {
    /// A database at version 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many loads ran (started).
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Bumps the version of every record; returns the new version.
    pub fn update(&self) -> u64 {
        self.version.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Makes loads fail (`true`) or succeed.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Makes every load take `delay` (on the Tokio clock, so paused-time tests run instantly).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Loads a record.
    pub async fn fetch(&self, id: u64) -> io::Result<Product> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err(io::Error::other("database unavailable"));
        }
        Ok(Product {
            id,
            version: self.version.load(Ordering::SeqCst),
            name: format!("product {id}"),
        })
    }

    /// A loader for `get_or_load`: owns a handle to the database, so it is `'static`.
    pub fn loader(&self, id: u64) -> impl FnOnce() -> LoadFuture + Send + 'static {
        let db = self.clone();
        move || Box::pin(async move { db.fetch(id).await })
    }
}
