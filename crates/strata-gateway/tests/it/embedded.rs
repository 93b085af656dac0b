//! Gateways built with `Gateway::from_config`/`builder`, served on port 0, shut down through
//! their shutdown future.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use strata_gateway::{Config, Gateway};

use crate::start;
use strata_testkit::RedisServer;

const TOKEN: &str = "library-token";

/// An upstream that counts its requests; every answer is cacheable and tagged.
async fn upstream() -> (Arc<AtomicUsize>, SocketAddr) {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route(
            "/products/1",
            routing::get(|State(calls): State<Arc<AtomicUsize>>| async move {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                (
                    [
                        ("cache-control", "public, max-age=300"),
                        ("surrogate-key", "product:1"),
                    ],
                    format!("product 1, answer {n}"),
                )
            }),
        )
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (calls, addr)
}

fn config(upstream: SocketAddr, redis: Option<&str>) -> Config {
    let redis = redis.map_or(String::new(), |url| format!("redis = \"{url}\"\n"));
    Config::parse(
        &format!(
            "listen = \"127.0.0.1:0\"\nworkers = 2\nadmin_token = \"{TOKEN}\"\n{redis}\
             [[route]]\nprefix = \"/\"\nupstream = \"http://{upstream}\"\n"
        ),
        "test",
    )
    .unwrap()
}

async fn fetch(client: &Client<HttpConnector, Empty<Bytes>>, url: String) -> (u16, String, String) {
    let response = client.get(url.parse().unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let cache_status = response
        .headers()
        .get("cache-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        String::from_utf8_lossy(&body).into_owned(),
        cache_status,
    )
}

fn client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_gateway_caches_and_shuts_down_gracefully() {
    let (calls, upstream) = upstream().await;
    let gateway = Gateway::builder(config(upstream, None))
        .without_metrics_endpoint()
        .drain(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    assert!(
        gateway.summary().contains("cache: embedded"),
        "{}",
        gateway.summary()
    );
    let running = start(gateway).await;
    let client = client();
    let url = format!("http://{}/products/1", running.addr);
    let (status, body, first) = fetch(&client, url.clone()).await;
    assert_eq!((status, body.as_str()), (200, "product 1, answer 1"));
    assert!(first.contains("fwd=uri-miss"), "{first}");
    let (_, body, second) = fetch(&client, url.clone()).await;
    assert_eq!(body, "product 1, answer 1");
    assert!(second.contains("; hit"), "{second}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the second request was served from the cache"
    );
    // No recorder installed by this gateway: /metrics says whose job it is.
    let (status, _, _) = fetch(&client, format!("http://{}/metrics", running.admin)).await;
    assert_eq!(status, 404);

    running.stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running.served)
        .await
        .expect("serve returns after its shutdown future resolves")
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(running.addr).await.is_err(),
        "the listeners are closed once serve returned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_embedded_gateways_share_entries_and_purges_through_redis() {
    let redis = RedisServer::start();
    let (calls, upstream) = upstream().await;
    let mut running = Vec::new();
    for _ in 0..2 {
        let gateway = Gateway::builder(config(upstream, Some(&redis.url())))
            .without_metrics_endpoint()
            .build()
            .await
            .unwrap();
        assert!(
            gateway.summary().contains("cache: redis"),
            "{}",
            gateway.summary()
        );
        running.push(start(gateway).await);
    }
    let client = client();
    let url = |i: usize| format!("http://{}/products/1", running[i].addr);
    assert_eq!(fetch(&client, url(0)).await.1, "product 1, answer 1");
    let (_, body, cache_status) = fetch(&client, url(1)).await;
    assert_eq!(
        body, "product 1, answer 1",
        "the second gateway read the first's entry"
    );
    assert!(cache_status.contains("; hit"), "{cache_status}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // A tag purged through the second gateway's admin API: the first asks upstream again.
    let purge = hyper::Request::post(format!("http://{}/_strata/purge", running[1].admin))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(http_body_util::Full::new(Bytes::from_static(
            br#"{"tags":["product:1"]}"#,
        )))
        .unwrap();
    let purged = Client::builder(TokioExecutor::new())
        .build_http()
        .request(purge)
        .await
        .unwrap();
    assert_eq!(purged.status(), 200);
    strata_testkit::eventually(
        "the purge reaches the first gateway",
        Duration::from_secs(5),
        || {
            let client = client.clone();
            let url = url(0);
            async move { fetch(&client, url).await.1 == "product 1, answer 2" }
        },
    )
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    for r in running {
        r.stop.send(()).unwrap();
        r.served.await.unwrap().unwrap();
    }
}
