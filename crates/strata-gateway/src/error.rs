//! What can stop a gateway from starting or serving.

use crate::config::ConfigError;

/// An error building or running a gateway.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid (its file, line and field are named).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The cache could not be built: Redis unreachable, a bad URL, a bad route policy.
    #[error(transparent)]
    Cache(#[from] strata::Error),
    /// The Prometheus exporter could not be set up.
    #[error("metrics: {0}")]
    Metrics(String),
    /// Binding or serving a listener failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
