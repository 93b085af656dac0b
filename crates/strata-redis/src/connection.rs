//! `Connection`: the connection every command of a store or publisher goes through — a
//! multiplexed, auto-reconnecting `ConnectionManager`, replaced by a new one in the two cases it
//! cannot get out of by itself.
//!
//! 1. **A failed re-authentication.** The manager reconnects only after I/O errors; if a
//!    reconnect's `AUTH` fails (an ACL user disabled for a while, a password rotated), every
//!    later request fails with that error and no reconnect is tried again, for good.
//! 2. **A Sentinel failover.** The manager reconnects to the address it was built with; after a
//!    failover that is a dead server or a demoted replica (`READONLY`). The master's new
//!    address must be asked of the sentinels.
//!
//! Either way a new manager is built (lazily: it connects on first use) for the master as it
//! is now, at most one rebuild at a time and one per [`REBUILD_GAP`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{ErrorKind, RedisError, ServerErrorKind};
use strata::Error;

use crate::config::RedisConfig;
use crate::error::{classify, into_log_error};

/// The shortest time between two rebuilds.
const REBUILD_GAP: Duration = Duration::from_millis(200);

/// A self-healing connection to the Redis master. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Connection {
    shared: Arc<Shared>,
}

struct Shared {
    config: RedisConfig,
    manager: RwLock<ConnectionManager>,
    rebuilding: AtomicBool,
}

impl Connection {
    /// Connects now; fails if the server cannot be reached or refuses the credentials.
    pub(crate) async fn open(config: &RedisConfig) -> Result<Self, Error> {
        let manager = config.connect().await?;
        Ok(Connection {
            shared: Arc::new(Shared {
                config: config.clone(),
                manager: RwLock::new(manager),
                rebuilding: AtomicBool::new(false),
            }),
        })
    }

    /// The current manager, to send commands on.
    pub(crate) fn get(&self) -> ConnectionManager {
        // Held for a clone (an `Arc` increment); a writer holds it for an assignment.
        self.shared
            .manager
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// [`open`](Self::open) for a log publisher: failures are log errors.
    pub(crate) async fn open_log(config: &RedisConfig) -> Result<Self, Error> {
        Self::open(config).await.map_err(into_log_error)
    }

    /// Maps a failed command's error, first starting a rebuild if the manager cannot recover
    /// from it by itself.
    pub(crate) fn failed(&self, e: RedisError) -> Error {
        if self.needs_rebuild(&e) {
            self.rebuild();
        }
        classify(e)
    }

    /// [`failed`](Self::failed) for a log publisher: [`Error::Unavailable`] or [`Error::Log`].
    pub(crate) fn failed_log(&self, e: RedisError) -> Error {
        into_log_error(self.failed(e))
    }

    fn needs_rebuild(&self, e: &RedisError) -> bool {
        if e.kind() == ErrorKind::AuthenticationFailed {
            return true;
        }
        self.shared.config.is_sentinel()
            && (e.is_io_error()
                || e.is_connection_dropped()
                || matches!(
                    e.kind(),
                    ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
                ))
    }

    fn rebuild(&self) {
        if self.shared.rebuilding.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = self.shared.clone();
        tokio::spawn(async move {
            match shared.config.resolve().await.and_then(|client| {
                ConnectionManager::new_lazy_with_config(client, shared.config.manager_config())
                    .map_err(classify)
            }) {
                Ok(manager) => {
                    *shared.manager.write().unwrap_or_else(|e| e.into_inner()) = manager;
                    tracing::info!(target = %shared.config, "Redis connection rebuilt");
                }
                Err(e) => {
                    tracing::warn!(target = %shared.config, error = %e, "Redis connection rebuild failed");
                }
            }
            tokio::time::sleep(REBUILD_GAP).await;
            shared.rebuilding.store(false, Ordering::Release);
        });
    }
}
