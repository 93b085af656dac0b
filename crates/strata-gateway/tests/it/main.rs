//! The gateway as a library: embedded in a test program, in front of a real upstream, alone
//! and two instances sharing a real Redis.

mod embedded;
mod footprint;
mod origin_failure;

use std::net::SocketAddr;

use strata_gateway::{Config, Gateway};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A gateway serving in the background: its addresses (public and admin), the sender that
/// shuts it down, and what `serve` returned.
pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    pub(crate) admin: SocketAddr,
    pub(crate) stop: oneshot::Sender<()>,
    pub(crate) served: JoinHandle<std::io::Result<()>>,
}

pub(crate) async fn start(gateway: Gateway) -> Running {
    let listeners = gateway.bind().unwrap();
    let addr = listeners.local_addr().unwrap();
    let admin = listeners.admin_addr().expect("an admin listener");
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(gateway.serve(listeners, async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        admin,
        stop,
        served,
    }
}

/// A gateway of `config` without a `/metrics` endpoint (tests share one process), serving.
pub(crate) async fn serve(config: &str) -> Running {
    let config = Config::parse(config, "test").unwrap();
    let gateway = Gateway::builder(config)
        .without_metrics_endpoint()
        .build()
        .await
        .unwrap();
    start(gateway).await
}
