//! Why a local server could not be started or controlled.

use std::path::PathBuf;

/// An error starting or controlling a local server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server's binary is not where it was looked for.
    #[error(
        "{program:?} not found: install it (Debian/Ubuntu: apt-get install redis-server) or give the URL of a running server"
    )]
    NotFound {
        /// The program looked for.
        program: PathBuf,
    },
    /// The port asked for is in use.
    #[error("port {port} is taken (another server, or another program): choose another")]
    PortTaken {
        /// The port.
        port: u16,
    },
    /// The server exited while starting.
    #[error("redis-server on port {port} exited while starting ({status}); its log ends:\n{log}")]
    Exited {
        /// The port.
        port: u16,
        /// How it exited.
        status: String,
        /// The end of its log.
        log: String,
    },
    /// The server did not answer in time.
    #[error("redis-server on port {port} did not answer within {waited:?}; its log ends:\n{log}")]
    Timeout {
        /// The port.
        port: u16,
        /// How long it was waited for.
        waited: std::time::Duration,
        /// The end of its log.
        log: String,
    },
    /// Signalling the server failed (it is not running, or `kill(1)` is missing).
    #[error("cannot signal redis-server: {0}")]
    Signal(String),
    /// Another I/O failure (a temporary directory, a socket).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
