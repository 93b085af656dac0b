//! An origin that fails mid-exchange: the stored response serves where `stale-if-error`
//! allows it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An origin on raw TCP: the first connection gets a stale-but-usable response; every later
/// one is read and then answered with `later` (nothing: a crashed or overloaded backend; or a
/// head and part of a body) before it is closed.
async fn origin(later: &'static str) -> (Arc<AtomicUsize>, std::net::SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            if count.fetch_add(1, Ordering::SeqCst) == 0 {
                let body = "useful";
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncache-control: public, max-age=0, stale-if-error=300\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            } else {
                let _ = stream.write_all(later.as_bytes()).await;
            }
            // Dropped: closed.
        }
    });
    (served, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_by_the_origin_is_a_failure_stale_if_error_covers() {
    for later in [
        "",
        "HTTP/1.1 200 OK\r\ncache-control: public, max-age=60\r\ncontent-length: 100\r\n\r\ncut sh",
    ] {
        answers_stale_when_the_origin_sends(later).await;
    }
}

async fn answers_stale_when_the_origin_sends(later: &'static str) {
    let (served, upstream) = origin(later).await;
    // Kept: dropping it would shut the gateway down.
    let gateway = crate::serve(&format!(
        "listen = \"127.0.0.1:0\"\nworkers = 1\n\
             [[route]]\nprefix = \"/\"\nupstream = \"http://{upstream}\"\n"
    ))
    .await;
    let addr = gateway.addr;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let get = || async {
        let r = client
            .get(format!("http://{addr}/page").parse().unwrap())
            .await
            .unwrap();
        let status = r.status().as_u16();
        let cache = r.headers()["cache-status"].to_str().unwrap().to_owned();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        (status, cache, body)
    };
    let (status, _, body) = get().await;
    assert_eq!((status, &body[..]), (200, &b"useful"[..]));
    // Stale at once (max-age=0): the next request goes to the origin, which hangs up.
    let (status, cache, body) = get().await;
    assert!(
        served.load(Ordering::SeqCst) >= 2,
        "the origin was asked again"
    );
    assert_eq!(
        (status, &body[..]),
        (200, &b"useful"[..]),
        "{later:?}: {cache}"
    );
    assert!(
        cache.contains("detail=stale-if-error"),
        "{later:?}: {cache}"
    );
}
