//! The demo's error type.

/// What can go wrong in a service's plumbing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// The database.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Migrating the database.
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Redis (the event streams).
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The cache or its Redis configuration.
    #[error(transparent)]
    Cache(#[from] strata::Error),
    /// An event that is not one of ours (foreign or corrupt bytes in a stream).
    #[error("event {id}: {reason}")]
    BadEvent {
        /// The stream entry or event id.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Another service (an outbox feed).
    #[error(transparent)]
    Remote(#[from] crate::remote::RemoteError),
    /// A configuration mistake.
    #[error("{0}")]
    Config(String),
}

/// `Result<T, DemoError>`.
pub type Result<T, E = DemoError> = std::result::Result<T, E>;
