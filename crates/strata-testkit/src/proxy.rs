//! A TCP proxy between one client and a server, to fault one client's network without touching
//! the server or its other clients.

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards every connection made to [`port`](Self::port) to the target. While
/// [`cut`](Self::cut), every connection through it is closed and new ones are closed as soon as
/// they are accepted (the client sees a dropped connection, as with a network fault); after
/// [`restore`](Self::restore) it forwards again. Stops with the runtime that started it.
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    cut: Arc<watch::Sender<bool>>,
}

impl Proxy {
    /// Starts forwarding a free loopback port to `127.0.0.1:<target>`. Needs a Tokio runtime.
    pub async fn start(target: u16) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (cut, _) = watch::channel(false);
        let cut = Arc::new(cut);
        let state = cut.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *state.borrow() {
                    continue; // dropped: closed at once
                }
                let mut cut = state.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let mut client = client;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Ok(Proxy { port, cut })
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Closes every connection through the proxy and refuses new ones until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}
