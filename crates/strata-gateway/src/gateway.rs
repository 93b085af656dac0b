//! The gateway: built from a [`Config`](crate::Config), bound, then served until shut down.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use strata::HybridCache;
use strata_redis::StatsReporter;

use crate::handler::Handler;
use crate::server::{self, Listeners};

/// A caching reverse proxy, ready to serve. Made by [`Gateway::from_config`] or
/// [`Gateway::builder`](crate::GatewayBuilder).
pub struct Gateway {
    pub(crate) handler: Arc<Handler>,
    pub(crate) cache: HybridCache,
    /// Publishes this instance's hit counters (with Redis), flushed once more at the end.
    pub(crate) reporter: Option<StatsReporter>,
    pub(crate) listen: SocketAddr,
    pub(crate) admin_listen: Option<SocketAddr>,
    pub(crate) workers: usize,
    pub(crate) drain: Duration,
    pub(crate) summary: String,
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gateway")
            .field("namespace", &self.cache.namespace())
            .field("listen", &self.listen)
            .field("admin_listen", &self.admin_listen)
            .field("workers", &self.workers)
            .field("routes", &self.handler.routes.len())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Binds the configured address, one socket per worker thread (`SO_REUSEPORT`: the kernel
    /// spreads connections over them), and the admin listener's. With port 0,
    /// [`Listeners::local_addr`] and [`Listeners::admin_addr`] tell the ports chosen.
    pub fn bind(&self) -> std::io::Result<Listeners> {
        server::bind(self.listen, self.workers, self.admin_listen)
    }

    /// Serves on `listeners` until `shutdown` resolves ([`shutdown_signal`](crate::shutdown_signal)
    /// for SIGINT and SIGTERM); then stops accepting, lets requests in flight finish (at
    /// most the drain time, 10 s by default), lands the cache's fills still in flight (so no
    /// lease record is left for other instances to wait out), withdraws from the
    /// acknowledgements (no other instance's write waits for this one) and flushes this
    /// instance's counters.
    pub async fn serve(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let served = server::serve(self.handler, listeners, shutdown, self.drain).await;
        self.cache.shutdown().await;
        if let Some(reporter) = self.reporter {
            let _ = reporter.flush().await;
        }
        served
    }

    /// The cache every cached route shares.
    pub fn cache(&self) -> &HybridCache {
        &self.cache
    }

    /// What `strata gateway` says when it starts: the routes, the cache behind them, and
    /// whether the admin API is locked.
    pub fn summary(&self) -> &str {
        &self.summary
    }
}
