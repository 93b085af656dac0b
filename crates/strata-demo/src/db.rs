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

    /// On the PostgreSQL server at `server_url` (`postgres://user:password@host:port/db`),
    /// `service`'s own database `strata_<service>`, created when missing; its URL. One server
    /// can so hold the whole landscape, each service still owning its database.
    pub async fn provision(server_url: &str, service: &str) -> Result<String> {
        sqlx::any::install_default_drivers();
        if !(server_url.starts_with("postgres://") || server_url.starts_with("postgresql://")) {
            return Err(DemoError::Config(format!(
                "a PostgreSQL server URL (postgres://…) is needed, not {server_url:?}"
            )));
        }
        migrator(service)?; // a service we know: its name is safe in SQL below
        let database = format!("strata_{service}");
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect(server_url)
            .await?;
        let exists = || async {
            sqlx::query("SELECT 1 AS one FROM pg_database WHERE datname = $1")
                .bind(&database)
                .fetch_optional(&pool)
                .await
                .map(|row| row.is_some())
        };
        if !exists().await? {
            // Two demos starting at once may race here: the loser finds it made.
            if let Err(e) = sqlx::query(&format!("CREATE DATABASE {database}"))
                .execute(&pool)
                .await
                && !exists().await?
            {
                return Err(e.into());
            }
        }
        pool.close().await;
        Ok(with_database(server_url, &database))
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

/// `url` with its path (the database) replaced by `database`, its query kept.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_at = base.find("://").map_or(0, |i| i + 3);
    let end = base[authority_at..]
        .find('/')
        .map_or(base.len(), |i| authority_at + i);
    let mut out = format!("{}/{database}", &base[..end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
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

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn a_server_url_gets_the_services_database() {
        for (url, want) in [
            (
                "postgres://u:p@h:5432/postgres",
                "postgres://u:p@h:5432/strata_x",
            ),
            ("postgres://u@h:5432", "postgres://u@h:5432/strata_x"),
            (
                "postgres://h/db?sslmode=require",
                "postgres://h/strata_x?sslmode=require",
            ),
            ("postgresql://h:1/", "postgresql://h:1/strata_x"),
        ] {
            assert_eq!(with_database(url, "strata_x"), want, "{url}");
        }
    }
}
