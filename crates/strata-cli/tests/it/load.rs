//! `strata load` against a real HTTP service (axum, a Strata cache on a real Redis, its stats
//! published as every instance publishes them), alone and behind `strata gateway`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use strata_testkit::RedisServer;

use crate::gateway::{Gateway, TOKEN, config, service_cache, upstream};

/// The service under load: products through its own Strata cache, counted by itself.
struct Shop {
    cache: strata::HybridCache,
    versions: Mutex<HashMap<u64, i64>>,
    /// Reads the service answered from its cache, and those it loaded.
    hits: AtomicU64,
    misses: AtomicU64,
    /// A write that forgets to invalidate: the bug the staleness check exists for.
    forget_invalidation: AtomicBool,
    /// From this request on, every request waits until half a second after it arrived.
    stall_at: AtomicU64,
    requests: AtomicU64,
    stalled_until: Mutex<Option<Instant>>,
    /// The `Authorization` header of the last request.
    authorization: Mutex<Option<String>>,
}

type St = State<Arc<Shop>>;

impl Shop {
    async fn arrive(&self, headers: &HeaderMap) {
        *self.authorization.lock().unwrap() = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let n = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        let until = {
            let mut stalled = self.stalled_until.lock().unwrap();
            if n == self.stall_at.load(Ordering::SeqCst) {
                *stalled = Some(Instant::now() + Duration::from_millis(500));
            }
            *stalled
        };
        if let Some(until) = until {
            tokio::time::sleep_until(until.into()).await;
        }
    }

    fn version(&self, id: u64) -> i64 {
        self.versions.lock().unwrap().get(&id).copied().unwrap_or(1)
    }
}

async fn read(State(shop): St, Path(id): Path<u64>, headers: HeaderMap) -> Response {
    shop.arrive(&headers).await;
    let loaded = Arc::new(AtomicBool::new(false));
    let version = shop.version(id);
    let product: Arc<Value> = match shop
        .cache
        .get_or_load(&format!("product:{id}"), {
            let loaded = loaded.clone();
            move || async move {
                loaded.store(true, Ordering::SeqCst);
                Ok::<_, std::io::Error>(json!({"id": id, "version": version}))
            }
        })
        .await
    {
        Ok(p) => p,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let status = if loaded.load(Ordering::SeqCst) {
        shop.misses.fetch_add(1, Ordering::SeqCst);
        "shop; fwd=uri-miss; stored"
    } else {
        shop.hits.fetch_add(1, Ordering::SeqCst);
        "shop; hit"
    };
    (
        [(header::HeaderName::from_static("cache-status"), status)],
        axum::Json((*product).clone()),
    )
        .into_response()
}

async fn write(State(shop): St, Path(id): Path<u64>, headers: HeaderMap) -> Response {
    shop.arrive(&headers).await;
    let version = {
        let mut versions = shop.versions.lock().unwrap();
        let v = versions.entry(id).or_insert(1);
        *v += 1;
        *v
    };
    if !shop.forget_invalidation.load(Ordering::SeqCst)
        && let Err(e) = shop.cache.invalidate(&format!("product:{id}")).await
    {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    axum::Json(json!({"id": id, "version": version})).into_response()
}

/// The shop on a free port, its stats published to `redis` every 100 ms as namespace `shop`.
async fn shop(redis: &RedisServer) -> (Arc<Shop>, SocketAddr, strata_redis::StatsReporter) {
    let cache = service_cache(redis, "shop").await;
    let conn = strata_redis::RedisConfig::from_url(&redis.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let reporter =
        strata_redis::StatsReporter::start(cache.clone(), conn, Duration::from_millis(100));
    let shop = Arc::new(Shop {
        cache,
        versions: Mutex::default(),
        hits: AtomicU64::new(0),
        misses: AtomicU64::new(0),
        forget_invalidation: AtomicBool::new(false),
        stall_at: AtomicU64::new(u64::MAX),
        requests: AtomicU64::new(0),
        stalled_until: Mutex::default(),
        authorization: Mutex::default(),
    });
    let app = Router::new()
        .route("/products/{id}", get(read).put(write))
        .route("/down", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
        .with_state(shop.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (shop, addr, reporter)
}

/// `strata load <args>`: exit code, the JSON report (with `--json`) and stderr.
async fn load(args: &[&str]) -> (i32, Value, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("load")
        .args(args)
        .env_remove("STRATA_ADMIN_TOKEN")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run strata load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), report, stderr)
}

fn n(report: &Value, pointer: &str) -> u64 {
    report
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{pointer} in {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hit_ratio_it_reports_is_what_the_service_counted() {
    let redis = RedisServer::start();
    let (shop, addr, _reporter) = shop(&redis).await;
    let url = format!("http://{addr}/products/{{key}}");
    let body = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(body.path(), r#"{"price_cents": {rand}}"#).unwrap();
    let plots = tempfile::tempdir().unwrap();
    let (code, report, stderr) = load(&[
        "--get",
        &url,
        "--write",
        &format!("PUT {url}"),
        "--body",
        body.path().to_str().unwrap(),
        "--writes",
        "0.05",
        "--keys",
        "50",
        "--requests",
        "1500",
        // One client: no read waits on another's load, so the shop's own count of what its
        // cache answered is exact.
        "--concurrency",
        "1",
        "--redis",
        &redis.url(),
        "--namespace",
        "shop",
        "--stats-every",
        "100ms",
        "--version-field",
        "version",
        "--user",
        "Aladdin:open sesame",
        "--out",
        plots.path().to_str().unwrap(),
        "--json",
        "--gate",
        "errors==0",
        "--gate",
        "stale_reads==0",
    ])
    .await;
    assert_eq!(code, 0, "{stderr}\n{report}");
    assert_eq!(report["schema"], "strata-load/1");
    assert_eq!(n(&report, "/requests"), 1500);
    let (reads, writes) = (n(&report, "/reads"), n(&report, "/writes"));
    assert_eq!(reads + writes, 1500);
    assert!(
        (30..=120).contains(&writes),
        "{writes} writes of 1500 at 5 %"
    );
    // What the responses said is what the shop counted, read by read.
    assert_eq!(n(&report, "/hits"), shop.hits.load(Ordering::SeqCst));
    assert_eq!(n(&report, "/misses"), shop.misses.load(Ordering::SeqCst));
    assert_eq!(n(&report, "/unclassified"), 0);
    // And what the cache counted in Redis over the run (`strata stats`) agrees.
    let counted = &report["counted"]["namespaces"][0];
    assert_eq!(counted["namespace"], "shop");
    assert_eq!(n(counted, "/reads"), reads);
    assert_eq!(
        n(counted, "/l1_hits") + n(counted, "/l2_hits"),
        n(&report, "/hits")
    );
    assert_eq!(report["hit_ratio"], report["counted"]["hit_ratio"]);
    assert!(report["hit_ratio"].as_f64().unwrap() > 0.5, "{report}");
    assert_eq!(n(&report, "/stale_reads"), 0);
    assert_eq!(
        shop.authorization.lock().unwrap().as_deref(),
        Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
    );
    for chart in ["latency", "hit_ratio", "throughput"] {
        for ext in ["svg", "png"] {
            let file = plots.path().join(format!("load_{chart}.{ext}"));
            assert!(
                std::fs::metadata(&file).is_ok_and(|m| m.len() > 1000),
                "{} not drawn: {stderr}",
                file.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_serves_old_versions_is_caught() {
    let redis = RedisServer::start();
    let (shop, addr, _reporter) = shop(&redis).await;
    shop.forget_invalidation.store(true, Ordering::SeqCst);
    let url = format!("http://{addr}/products/{{key}}");
    let (code, report, stderr) = load(&[
        "--get",
        &url,
        "--write",
        &format!("PUT {url}"),
        "--writes",
        "0.1",
        "--keys",
        "5",
        "--requests",
        "400",
        "--concurrency",
        "2",
        "--version-field",
        "version",
        "--json",
        "--gate",
        "stale_reads==0",
    ])
    .await;
    assert_eq!(code, 1, "{stderr}\n{report}");
    assert!(n(&report, "/stale_reads") > 0, "{report}");
    assert!(stderr.contains("gate failed: stale_reads==0"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_latency_counts_the_queue_behind_a_stall() {
    let redis = RedisServer::start();
    let (shop, addr, _reporter) = shop(&redis).await;
    let url = format!("http://{addr}/products/{{key}}");
    let run = |mode: &'static [&'static str]| {
        let url = url.clone();
        async move {
            let mut args = vec!["--get", &url, "--keys", "20", "--duration", "2s", "--json"];
            args.extend_from_slice(mode);
            let (code, report, stderr) = load(&args).await;
            assert_eq!(code, 0, "{stderr}\n{report}");
            report
        }
    };
    let open: &[&str] = &["--rate", "300"];
    let steady = run(open).await;
    // A half-second stall a second in: at 300 requests/s, ~150 requests are due during it.
    let before = shop.requests.load(Ordering::SeqCst);
    shop.stall_at.store(before + 300, Ordering::SeqCst);
    let stalled = run(open).await;
    let (p99, stalled_p99) = (
        n(&steady, "/latency_us/p99"),
        n(&stalled, "/latency_us/p99"),
    );
    assert!(p99 < 100_000, "steady p99 {p99} µs");
    assert!(
        stalled_p99 >= 300_000,
        "the stall's queue is missing from the open-loop p99: {stalled_p99} µs"
    );
    // A closed loop waits out the stall with its two clients: two slow requests, not a queue.
    let before = shop.requests.load(Ordering::SeqCst);
    shop.stall_at.store(before + 300, Ordering::SeqCst);
    let closed = run(&["--concurrency", "2"]).await;
    assert!(n(&closed, "/latency_us/max") >= 400_000, "{closed}");
    assert!(n(&closed, "/latency_us/p99") < 100_000, "{closed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_the_gateway_misses_are_what_reached_the_origin_and_purges_count() {
    let redis = RedisServer::start();
    let (origin, addr, _stop) = upstream().await;
    let gateway = Gateway::start(&config(addr, Some(&redis), ""), &[]);
    let admin = gateway.admin_url("");
    let url = gateway.url("/products/{key}");
    let (code, report, stderr) = load(&[
        "--get",
        &url,
        "--purge",
        &admin,
        "--purge-tag",
        "product:{key}",
        "--token",
        TOKEN,
        "--writes",
        "0.02",
        "--keys",
        "30",
        "--requests",
        "1000",
        "--concurrency",
        "1",
        "--json",
        "--gate",
        "hit_ratio>=0.5",
        "--gate",
        "errors==0",
    ])
    .await;
    assert_eq!(code, 0, "{stderr}\n{report}");
    let origin_reads: u64 = (1..=30)
        .map(|k| origin.hits(&format!("/products/{k}")) as u64)
        .sum();
    assert_eq!(n(&report, "/misses"), origin_reads, "{report}");
    assert_eq!(n(&report, "/statuses/200"), 1000);
    assert!(n(&report, "/writes") > 5, "{report}");
    // Purges drop entries: more misses than the 30 cold keys alone.
    assert!(origin_reads > 30, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_runs_end_with_a_clear_reason() {
    let redis = RedisServer::start();
    let (_shop, addr, _reporter) = shop(&redis).await;
    // A target nobody listens on.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}/products/{{key}}", free.local_addr().unwrap());
    drop(free);
    let (code, _, stderr) = load(&["--get", &closed, "--requests", "10"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cannot reach 127.0.0.1"), "{stderr}");
    // A template with a typo.
    let (code, _, stderr) = load(&["--get", "http://127.0.0.1:1/products/{id}"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("unknown placeholder {id}"), "{stderr}");
    // A bad gate, before any request.
    let url = format!("http://{addr}/products/{{key}}");
    let (code, _, stderr) = load(&["--get", &url, "--gate", "hit_ratio>>1"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("is not a number"), "{stderr}");
    // A service answering errors: stopped early, with why.
    let down = format!("http://{addr}/down");
    let (code, report, stderr) = load(&["--get", &down, "--duration", "20s", "--json"]).await;
    assert_eq!(code, 1, "{stderr}");
    let why = report["stopped_early"].as_str().unwrap_or_default();
    assert!(why.contains("of the last 200 requests failed"), "{report}");
    assert!(why.contains("503 ×"), "{why}");
    assert!(n(&report, "/requests") < 1000, "it ran on: {report}");
    // Gates that pass and fail on the same kind of run.
    let (code, _, stderr) =
        load(&["--get", &url, "--requests", "200", "--gate", "errors==0"]).await;
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = load(&[
        "--get",
        &url,
        "--requests",
        "200",
        "--gate",
        "hit_ratio>=1.01",
    ])
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("gate failed: hit_ratio>=1.01 (measured"),
        "{stderr}"
    );
}

/// An https service on 127.0.0.1 with a certificate of the test CA: every request answered
/// `200` with `Cache-Status: shop; hit`, connections kept alive. Written by hand over the TLS
/// stream: the test needs a TLS peer, not a web framework.
async fn https_service(tls: &strata_testkit::TlsFiles) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.server_cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&tls.server_key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let body = r#"{"version":1}"#;
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncache-status: shop; hit\r\n\r\n{body}",
                            body.len()
                        );
                        if tls.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_targets_are_checked_against_the_given_ca() {
    let dir = tempfile::tempdir().unwrap();
    let tls = strata_testkit::make_certificates(dir.path()).unwrap();
    let addr = https_service(&tls).await;
    let url = format!("https://localhost:{}/products/{{key}}", addr.port());
    let ca = tls.ca.to_str().unwrap();
    let (code, report, stderr) = load(&[
        "--get",
        &url,
        "--cacert",
        ca,
        "--requests",
        "300",
        "--json",
        "--gate",
        "errors==0",
    ])
    .await;
    assert_eq!(code, 0, "{stderr}\n{report}");
    assert_eq!(n(&report, "/hits"), 300);
    // Without the CA the certificate is refused, and said so.
    let (code, report, stderr) = load(&["--get", &url, "--requests", "300", "--json"]).await;
    assert_eq!(code, 1, "{stderr}\n{report}");
    let why = report["stopped_early"].as_str().unwrap_or_default();
    assert!(why.contains("certificate"), "{report}");
    // A --cacert that holds no certificate is an error before any request.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let (code, _, stderr) = load(&["--get", &url, "--cacert", empty.to_str().unwrap()]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no PEM certificate"), "{stderr}");
}
