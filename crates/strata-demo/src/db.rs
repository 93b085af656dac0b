//! A service's own database: SQLite by default, PostgreSQL on request, through sqlx's `Any`
//! driver so that one set of portable queries serves both.

use std::path::Path;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;

use crate::error::{DemoError, Result};

/// One migration set per service, embedded at build time.
static PRODUCT: Migrator = sqlx::migrate!("migrations/product");
static INVENTORY: Migrator = sqlx::migrate!("migrations/inventory");
static ORDER: Migrator = sqlx::migrate!("migrations/order");
static USER: Migrator = sqlx::migrate!("migrations/user");
static PAYMENT: Migrator = sqlx::migrate!("migrations/payment");

/// A service's database.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
}

impl Db {
    /// Opens `url` (`sqlite://path`, created when missing, or `postgres://…`) and applies
    /// `service`'s migrations.
    pub async fn open(url: &str, service: &str) -> Result<Db> {
        sqlx::any::install_default_drivers();
        let url = if let Some(path) = url.strip_prefix("sqlite://") {
            // Create the file when missing; WAL so the relay and requests do not block each other.
            format!("sqlite://{path}?mode=rwc")
        } else {
            url.to_owned()
        };
        let sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            // One writer at a time is all SQLite allows anyway.
            .max_connections(if sqlite { 4 } else { 16 })
            .connect(&url)
            .await?;
        if sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
            sqlx::query("PRAGMA busy_timeout = 5000")
                .execute(&pool)
                .await?;
        }
        migrator(service)?.run(&pool).await?;
        Ok(Db { pool })
    }

    /// A SQLite database in `dir` named for `service`.
    pub async fn sqlite_in(dir: &Path, service: &str) -> Result<Db> {
        let path = dir.join(format!("{service}.db"));
        Db::open(&format!("sqlite://{}", path.display()), service).await
    }

    /// Whether `table` has no rows (seeding runs once). `table` is one of ours, never input.
    pub async fn is_empty(&self, table: &'static str) -> Result<bool> {
        let row = sqlx::query(&format!("SELECT 1 AS one FROM {table} LIMIT 1"))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_none())
    }

    /// The pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

fn migrator(service: &str) -> Result<&'static Migrator> {
    match service {
        "product" => Ok(&PRODUCT),
        "inventory" => Ok(&INVENTORY),
        "order" => Ok(&ORDER),
        "user" => Ok(&USER),
        "payment" => Ok(&PAYMENT),
        other => Err(DemoError::Config(format!(
            "no migrations for service {other:?}"
        ))),
    }
}
