//! Serving: one thread per listener, each with its own single-threaded runtime, and a
//! graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::handler::Handler;

/// The listening sockets of a gateway (see [`Gateway::bind`](crate::Gateway::bind)): bound,
/// not yet accepting.
#[derive(Debug)]
pub struct Listeners {
    pub(crate) public: Vec<std::net::TcpListener>,
    pub(crate) admin: Option<std::net::TcpListener>,
}

impl Listeners {
    /// The address clients connect to (the port the system chose, for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.public
            .first()
            .ok_or_else(|| std::io::Error::other("no listener"))?
            .local_addr()
    }

    /// The admin listener's address (`/metrics`, `/_strata/…`), if there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }
}

/// What a listener serves.
#[derive(Clone, Copy)]
enum Side {
    /// The routes: every path.
    Public,
    /// The admin API, `/metrics` and the dashboard.
    Admin,
}

/// Serves on `listeners`, one thread with its own single-threaded runtime each (as
/// nginx runs one worker per core: a connection's requests never hop threads, and no
/// work-stealing scheduler is woken per request — measured ~10 % more cached hits per
/// second than one multi-threaded runtime), until `shutdown` resolves; then requests in
/// flight may finish (at most `drain`).
pub(crate) async fn serve(
    handler: Arc<Handler>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> std::io::Result<()> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let sides = listeners
        .public
        .into_iter()
        .map(|l| (l, Side::Public))
        .chain(listeners.admin.map(|l| (l, Side::Admin)))
        .collect::<Vec<_>>();
    // Pooled upstream connections live on whichever thread opened them, and serve every
    // thread: no runtime may end while another still has requests in flight.
    let drained = Arc::new(tokio::sync::Barrier::new(sides.len()));
    let mut threads = Vec::new();
    for (i, (listener, side)) in sides.into_iter().enumerate() {
        let handler = handler.clone();
        let stopped = stopped.clone();
        let drained = drained.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        threads.push(
            std::thread::Builder::new()
                .name(match side {
                    Side::Public => format!("gateway-{i}"),
                    Side::Admin => "gateway-admin".into(),
                })
                .spawn(move || {
                    runtime.block_on(async {
                        accept(handler, listener, side, stopped, drain).await;
                        drained.wait().await;
                    });
                })?,
        );
    }
    shutdown.await;
    tracing::info!("gateway: shutting down, finishing requests in flight");
    let _ = stop.send(true);
    tokio::task::spawn_blocking(move || {
        for thread in threads {
            let _ = thread.join();
        }
    })
    .await
    .map_err(std::io::Error::other)
}

/// One thread's accept loop.
async fn accept(
    handler: Arc<Handler>,
    listener: std::net::TcpListener,
    side: Side,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    drain: Duration,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(error) => {
            tracing::error!(%error, "gateway: listener");
            return;
        }
    };
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(error) => {
                        // Out of file descriptors and the like: back off rather than spin.
                        tracing::warn!(%error, "gateway: accept");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                let service = service_fn(move |request| {
                    let handler = handler.clone();
                    async move {
                        Ok::<_, Infallible>(match side {
                            Side::Public => handler.public(request, peer).await,
                            Side::Admin => handler.admin(request).await,
                        })
                    }
                });
                // Small answers go out in one write (the body copied behind the head)
                // rather than a writev of two buffers: measured faster for cached hits.
                let connection = http1::Builder::new()
                    .writev(false)
                    // A client that trickles its headers is cut off (slowloris).
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30))
                    .serve_connection(TokioIo::new(stream), service);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
            _ = stopped.changed() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?drain,
            "gateway: requests still in flight after the drain time; closing"
        );
    }
}

/// `workers` listening sockets on `addr` (the first decides the port when it is 0), with
/// `SO_REUSEPORT` so the kernel spreads connections over them; and the admin one.
pub(crate) fn bind(
    addr: SocketAddr,
    workers: usize,
    admin: Option<SocketAddr>,
) -> std::io::Result<Listeners> {
    let public = bind_public(addr, workers)
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let admin = admin
        .map(|at| {
            std::net::TcpListener::bind(at)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!(
                            "cannot listen on {at} for the admin API: {e} (set `admin_listen` \
                             to another address, or \"off\")"
                        ),
                    )
                })
        })
        .transpose()?;
    Ok(Listeners { public, admin })
}

fn bind_public(addr: SocketAddr, workers: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Socket, Type};
    let mut out: Vec<std::net::TcpListener> = Vec::with_capacity(workers);
    let mut at = addr;
    for _ in 0..workers.max(1) {
        let socket = Socket::new(Domain::for_address(at), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&at.into())?;
        socket.listen(1024)?;
        let listener: std::net::TcpListener = socket.into();
        at = listener.local_addr()?;
        out.push(listener);
    }
    Ok(out)
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM: what `strata gateway` passes to
/// [`Gateway::serve`](crate::Gateway::serve).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
