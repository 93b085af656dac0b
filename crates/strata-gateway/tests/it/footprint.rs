//! What a stored response weighs in Redis: its body plus a small header, whatever its bytes.

use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use strata_testkit::RedisServer;

/// The length of the largest string value in the database.
const LARGEST_STRING: &str = "local m = 0 \
    for _, k in ipairs(redis.call('KEYS', '*')) do \
      if redis.call('TYPE', k).ok == 'string' then m = math.max(m, redis.call('STRLEN', k)) end \
    end return m";

/// `n` bytes that JSON would spell out as numbers (0–255, not ASCII letters).
fn body(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_response_weighs_its_body_plus_a_small_header() {
    let redis = RedisServer::start();
    let app =
        Router::new().route(
            "/blob/{n}",
            get(|Path(n): Path<usize>| async move {
                ([("cache-control", "public, max-age=300")], body(n))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    // Kept: dropping it would shut the gateway down.
    let gateway = crate::serve(&format!(
        "listen = \"127.0.0.1:0\"\nworkers = 1\nredis = \"{}\"\n\
             [[route]]\nprefix = \"/\"\nupstream = \"http://{upstream}\"\n",
        redis.url()
    ))
    .await;
    let addr = gateway.addr;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();

    // 100 KB, and 1 MiB: the route's default `max_body`, which must fit as it is.
    for n in [100_000usize, 1 << 20] {
        let url = format!("http://{addr}/blob/{n}");
        let response = client.get(url.parse().unwrap()).await.unwrap();
        let status = response.headers()["cache-status"]
            .to_str()
            .unwrap()
            .to_owned();
        let got = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(got.len(), n);
        assert!(status.contains("stored"), "{n} bytes: {status}");
        // The entry in Redis (the largest string there), once its fill has landed. In Lua:
        // cache keys hold characters (newlines) that do not survive a shell round trip.
        let largest = || {
            redis
                .cli(&["EVAL", LARGEST_STRING, "0"])
                .parse::<usize>()
                .unwrap_or(0)
        };
        strata_testkit::eventually("the fill", Duration::from_secs(5), || {
            let at_least = largest() >= n;
            async move { at_least }
        })
        .await;
        let largest = largest();
        eprintln!("{n} bytes of body weigh {largest} bytes in Redis");
        assert!(
            largest >= n && largest <= n + 1024,
            "{n} bytes of body weigh {largest} bytes in Redis"
        );
        redis.cli(&["FLUSHALL"]);
    }

    // Past `max_body`: answered, said too large, and not stored.
    let n = (1 << 20) + 1;
    let response = client
        .get(format!("http://{addr}/blob/{n}").parse().unwrap())
        .await
        .unwrap();
    let status = response.headers()["cache-status"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .len(),
        n
    );
    assert!(
        status.contains("detail=too-large") && !status.contains("stored"),
        "{status}"
    );
}
