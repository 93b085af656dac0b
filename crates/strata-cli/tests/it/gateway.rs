//! `strata gateway` processes in front of an axum upstream, sharing a real Redis.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use strata_testkit::{RedisServer, eventually};

pub(crate) const TOKEN: &str = "s3cret-token";

/// The upstream: counts requests per path.
#[derive(Default)]
pub(crate) struct Upstream {
    hits: Mutex<HashMap<String, usize>>,
    pub(crate) version: AtomicU64,
    seen: Mutex<Vec<HeaderMap>>,
}

impl Upstream {
    pub(crate) fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
    fn count(&self, path: &str) {
        *self.hits.lock().unwrap().entry(path.into()).or_default() += 1;
    }
}

type St = State<Arc<Upstream>>;

async fn product(State(u): St, Path(id): Path<u32>) -> Response {
    u.count(&format!("/products/{id}"));
    let v = u.version.load(Ordering::SeqCst);
    (
        [
            (header::CACHE_CONTROL, "public, max-age=300".to_owned()),
            (
                header::HeaderName::from_static("surrogate-key"),
                format!("product:{id}"),
            ),
            (header::ETAG, format!("\"{v}\"")),
        ],
        format!("product {id} v{v}"),
    )
        .into_response()
}

async fn slow(State(u): St) -> Response {
    u.count("/slow");
    // The upstream's latency, so that the requests arrive while the first is out.
    tokio::time::sleep(Duration::from_millis(500)).await;
    ([(header::CACHE_CONTROL, "public, max-age=300")], "slow").into_response()
}

async fn echo(State(u): St, headers: HeaderMap) -> Response {
    u.count("/echo");
    u.seen.lock().unwrap().push(headers);
    ([(header::CACHE_CONTROL, "public, max-age=300")], "echo").into_response()
}

/// Stale on arrival, usable stale for five minutes if the upstream fails.
async fn stale(State(u): St) -> Response {
    u.count("/stale");
    (
        [
            (
                header::CACHE_CONTROL,
                "public, max-age=10, stale-if-error=300",
            ),
            (header::AGE, "10"),
        ],
        "stale but useful",
    )
        .into_response()
}

/// The upstream, and a sender that shuts it down when sent to or dropped (its listener
/// closed, its connections ended).
pub(crate) async fn upstream() -> (Arc<Upstream>, SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let state = Arc::new(Upstream::default());
    let app = Router::new()
        .route("/products/{id}", get(product))
        .route("/slow", get(slow))
        .route("/echo", get(echo).post(echo))
        .route("/down", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
        .route("/stale", get(stale))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (state, addr, stop)
}

/// A gateway process; killed on drop.
pub(crate) struct Gateway {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Gateway {
    pub(crate) fn start(config: &str, env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, config).unwrap();
        Self::spawn(&["gateway", "--config", path.to_str().unwrap()], env, dir)
    }

    pub(crate) fn spawn(args: &[&str], env: &[(&str, &str)], dir: tempfile::TempDir) -> Gateway {
        let mut command = strata(args);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("run strata gateway");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let (addr, admin) = loop {
            let line = lines
                .next()
                .expect("the gateway exited before listening")
                .unwrap();
            if let Some(rest) = line.strip_prefix("strata gateway on http://") {
                let addr = rest.split_whitespace().next().unwrap().parse().unwrap();
                let admin = rest
                    .split("(admin on http://")
                    .nth(1)
                    .and_then(|a| a.split(')').next())
                    .expect("an admin listener")
                    .parse()
                    .unwrap();
                break (addr, admin);
            }
        };
        // Keep reading so the gateway never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Gateway {
            child,
            addr,
            admin,
            _dir: dir,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A URL on the admin listener.
    pub(crate) fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `strata <args>` as these tests run it: nothing from the environment's `REDIS_URL` or
/// `STRATA_ADMIN_TOKEN`, its stderr to read.
fn strata(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
    command
        .args(args)
        .env_remove("REDIS_URL")
        .env_remove("STRATA_ADMIN_TOKEN")
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    command
}

/// Runs `strata` with `args` until it says where it listens (or fails): that line.
pub(crate) fn first_line(args: &[&str]) -> String {
    let mut child = strata(args).spawn().expect("run strata");
    let stderr = child.stderr.take().unwrap();
    let line = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("strata gateway on") || l.starts_with("error"))
        .unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    line
}

/// A service's cache in `namespace` on `redis` (what a service behind the gateway runs).
pub(crate) async fn service_cache(redis: &RedisServer, namespace: &str) -> strata::HybridCache {
    let config = strata_redis::RedisConfig::from_url(&redis.url()).unwrap();
    strata::HybridCache::builder(namespace)
        .l2(strata_redis::RedisStore::connect_with(&config)
            .await
            .unwrap())
        .invalidation(
            strata_redis::RedisStreamLog::connect_with(&config)
                .await
                .unwrap(),
        )
        .build()
        .await
        .unwrap()
}

pub(crate) fn config(upstream: SocketAddr, redis: Option<&RedisServer>, extra: &str) -> String {
    let redis = redis
        .map(|r| format!("redis = \"{}\"\n", r.url()))
        .unwrap_or_default();
    format!(
        r#"listen = "127.0.0.1:0"
{redis}admin_token = "{TOKEN}"
{extra}

[[route]]
name = "shop"
prefix = "/"
upstream = "http://{upstream}"
"#
    )
}

#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

#[derive(Clone)]
pub(crate) struct Http(Client<HttpConnector, Full<Bytes>>);

impl Http {
    pub(crate) fn new() -> Http {
        Http(Client::builder(TokioExecutor::new()).build_http())
    }

    pub(crate) async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let mut request = http::Request::builder().method(method).uri(url);
        for (n, v) in headers {
            request = request.header(*n, *v);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let response = self.0.request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    pub(crate) async fn get(&self, url: &str) -> Reply {
        self.send("GET", url, &[], "").await
    }

    pub(crate) async fn purge(&self, gateway: &Gateway, body: &str, token: &str) -> Reply {
        let auth = format!("Bearer {token}");
        self.send(
            "POST",
            &gateway.admin_url("/_strata/purge"),
            &[("authorization", &auth)],
            body,
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_responses_and_purges() {
    let redis = RedisServer::start();
    let (up, addr, _stop) = upstream().await;
    let a = Gateway::start(&config(addr, Some(&redis), ""), &[]);
    let b = Gateway::start(&config(addr, Some(&redis), ""), &[]);
    let http = Http::new();
    let first = http.get(&a.url("/products/1")).await;
    assert_eq!(
        (first.status, first.header("x-cache")),
        (StatusCode::OK, "MISS")
    );
    let hit = http.get(&b.url("/products/1")).await;
    assert_eq!(
        (hit.header("x-cache"), hit.body.as_str()),
        ("HIT", "product 1 v0")
    );
    assert!(
        hit.header("cache-status").starts_with("strata; hit; ttl="),
        "{hit:?}"
    );
    assert_eq!(up.hits("/products/1"), 1);
    // Without the token, nothing is purged.
    let denied = http.purge(&a, r#"{"tags":["product:1"]}"#, "wrong").await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        http.get(&b.admin_url("/_strata/health")).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        http.get(&b.url("/products/1")).await.header("x-cache"),
        "HIT"
    );
    // A purge on A is honoured by B.
    up.version.fetch_add(1, Ordering::SeqCst);
    let purged = http.purge(&a, r#"{"tags":["product:1"]}"#, TOKEN).await;
    assert_eq!(
        (purged.status, purged.body.as_str()),
        (StatusCode::OK, r#"{"purged":1,"soft":false}"#)
    );
    eventually(
        "B serves the new version",
        Duration::from_secs(10),
        || async { http.get(&b.url("/products/1")).await.body == "product 1 v1" },
    )
    .await;
    // By URL and by prefix too; a malformed purge is refused whole.
    let bad = http.purge(&a, r#"{"prefixes":["nope"]}"#, TOKEN).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    let bad = http.purge(&a, r#"{"tagz":[]}"#, TOKEN).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    http.get(&a.url("/products/2")).await;
    // A holds it now, so the miss awaited below can only be B's purge reaching A.
    assert_eq!(
        http.get(&a.url("/products/2")).await.header("x-cache"),
        "HIT"
    );
    let by_url = http
        .purge(
            &b,
            r#"{"urls":["/products/2"],"prefixes":["/products"]}"#,
            TOKEN,
        )
        .await;
    assert_eq!(by_url.status, StatusCode::OK, "{}", by_url.body);
    // A learns of B's purge from the log, as B learnt of A's above: not before the purge
    // returns (purges are not acknowledged writes), so A misses once its follower applied it.
    eventually(
        "A misses the URL purged on B",
        Duration::from_secs(10),
        || async { http.get(&a.url("/products/2")).await.header("x-cache") == "MISS" },
    )
    .await;
    let health = http
        .send(
            "GET",
            &a.admin_url("/_strata/health"),
            &[("authorization", &format!("Bearer {TOKEN}"))],
            "",
        )
        .await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
    assert!(
        health.body.contains(r#""backend":"redis""#),
        "{}",
        health.body
    );
    let metrics = http.get(&a.admin_url("/metrics")).await.body;
    assert!(
        metrics.contains("strata_http_responses_total{route=\"shop\",cache=\"miss\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("strata_gateway_request_duration_seconds_bucket"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stampede_of_500_over_two_gateways_is_one_upstream_request() {
    let redis = RedisServer::start();
    let (up, addr, _stop) = upstream().await;
    let a = Gateway::start(&config(addr, Some(&redis), ""), &[]);
    let b = Gateway::start(&config(addr, Some(&redis), ""), &[]);
    let http = Http::new();
    let requests: Vec<_> = (0..500)
        .map(|i| {
            let url = if i % 2 == 0 {
                a.url("/slow")
            } else {
                b.url("/slow")
            };
            let http = http.clone();
            tokio::spawn(async move { http.get(&url).await })
        })
        .collect();
    let mut collapsed = 0;
    for r in requests {
        let r = r.await.unwrap();
        assert_eq!(
            (r.status, r.body.as_str()),
            (StatusCode::OK, "slow"),
            "{r:?}"
        );
        collapsed += usize::from(r.header("cache-status").contains("collapsed"));
    }
    assert_eq!(up.hits("/slow"), 1, "one request reached the upstream");
    assert!(collapsed > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_services_invalidate_tag_purges_the_gateway() {
    let redis = RedisServer::start();
    let (up, addr, _stop) = upstream().await;
    let gw = Gateway::start(&config(addr, Some(&redis), r#"follow = ["product"]"#), &[]);
    let http = Http::new();
    http.get(&gw.url("/products/7")).await;
    assert_eq!(
        http.get(&gw.url("/products/7")).await.header("x-cache"),
        "HIT"
    );
    let service = service_cache(&redis, "product").await;
    up.version.fetch_add(1, Ordering::SeqCst);
    service.invalidate_tag("product:7").await.unwrap();
    eventually(
        "the gateway serves the new version",
        Duration::from_secs(10),
        || async { http.get(&gw.url("/products/7")).await.body == "product 7 v1" },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_forwarded_as_nginx_does_and_hop_by_hop_headers_stop() {
    let (up, addr, _stop) = upstream().await;
    let gw = Gateway::start(&config(addr, None, ""), &[]);
    let http = Http::new();
    let cached = http
        .send(
            "GET",
            &gw.url("/echo"),
            &[
                ("x-forwarded-host", "evil.example"),
                ("x-custom", "1"),
                ("connection", "keep-alive, x-secret"),
                ("x-secret", "1"),
            ],
            "",
        )
        .await;
    assert_eq!(cached.status, StatusCode::OK);
    assert_eq!(cached.header("via"), "1.1 strata");
    let passed = http
        .send("POST", &gw.url("/echo"), &[("x-custom", "2")], "body")
        .await;
    assert_eq!(passed.status, StatusCode::OK);
    let seen = up.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    // Both: every end-to-end header, none the client's connection named, the client's
    // address, host and scheme, and this hop in Via; Host is the upstream's.
    for (h, custom) in seen.iter().zip(["1", "2"]) {
        assert_eq!(h["x-custom"], custom, "{h:?}");
        assert!(!h.contains_key("x-secret"), "{h:?}");
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h["x-forwarded-host"], gw.addr.to_string());
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["via"], "1.1 strata");
        assert_eq!(h["host"], addr.to_string());
    }
    // The unsafe method invalidated /echo.
    assert_eq!(http.get(&gw.url("/echo")).await.header("x-cache"), "MISS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strip_unkeyed_sends_only_keyed_input_on_cacheable_requests() {
    let (up, addr, _stop) = upstream().await;
    let text = config(addr, None, "").replace(
        "upstream = ",
        "cache = { strip_unkeyed = true, headers = [\"accept-language\"] }\nupstream = ",
    );
    let gw = Gateway::start(&text, &[]);
    let http = Http::new();
    let headers = [
        ("x-forwarded-host", "evil.example"),
        ("accept-language", "de"),
        ("x-custom", "1"),
    ];
    assert_eq!(
        http.send("GET", &gw.url("/echo"), &headers, "")
            .await
            .status,
        StatusCode::OK
    );
    http.send("POST", &gw.url("/echo"), &headers, "body").await;
    let seen = up.seen.lock().unwrap().clone();
    let names = |h: &HeaderMap| {
        let mut n: Vec<String> = h.keys().map(|k| k.as_str().to_owned()).collect();
        n.sort();
        n
    };
    // The cacheable GET: the keyed header, Host and Via; nothing about the client.
    assert_eq!(
        names(&seen[0]),
        ["accept-language", "host", "via"],
        "{:?}",
        seen[0]
    );
    // The POST is passed on as it came.
    assert_eq!(seen[1]["x-custom"], "1");
    assert_eq!(seen[1]["x-forwarded-for"], "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_form_runs_on_the_embedded_cache_and_stops_gracefully() {
    let (up, addr, _stop) = upstream().await;
    let upstream_url = format!("http://{addr}");
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway::spawn(
        &[
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream_url,
        ],
        &[("STRATA_ADMIN_TOKEN", TOKEN)],
        dir,
    );
    let http = Http::new();
    http.get(&gw.url("/products/3")).await;
    assert_eq!(
        http.get(&gw.url("/products/3")).await.header("x-cache"),
        "HIT"
    );
    assert_eq!(up.hits("/products/3"), 1);
    let purged = http.purge(&gw, r#"{"urls":["/products/3"]}"#, TOKEN).await;
    assert_eq!(purged.status, StatusCode::OK, "{}", purged.body);
    assert_eq!(
        http.get(&gw.url("/down")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // SIGTERM with a request in flight: it completes, then the process exits 0.
    let in_flight = {
        let (http, url) = (http.clone(), gw.url("/slow"));
        tokio::spawn(async move { http.get(&url).await })
    };
    eventually(
        "the slow request reaches the upstream",
        Duration::from_secs(5),
        || async { up.hits("/slow") == 1 },
    )
    .await;
    let status = gw.terminate();
    assert!(status.success(), "{status}");
    assert_eq!(in_flight.await.unwrap().body, "slow");
}

#[test]
fn bad_config_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:0\"\n\n[[route]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:1\"\n[route.cache]\nstale_if_error = \"5 minutes\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["gateway", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("gateway.toml:7:") && stderr.contains("stale_if_error"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_answers_while_the_upstream_is_down() {
    let (up, addr, stop) = upstream().await;
    let gw = Gateway::start(&config(addr, None, ""), &[]);
    let http = Http::new();
    let first = http.get(&gw.url("/stale")).await;
    assert_eq!(first.header("x-cache"), "MISS");
    stop.send(()).unwrap();
    // Once the upstream refuses connections, the stored response answers, marked stale.
    eventually(
        "the stale copy answers for the dead upstream",
        Duration::from_secs(10),
        || async {
            let r = http.get(&gw.url("/stale")).await;
            r.status == StatusCode::OK
                && r.header("x-cache") == "STALE"
                && r.header("cache-status").contains("detail=stale-if-error")
        },
    )
    .await;
    assert_eq!(up.hits("/stale"), 1);
    // A URL never stored has nothing to fall back on: 502.
    assert_eq!(
        http.get(&gw.url("/products/1")).await.status,
        StatusCode::BAD_GATEWAY
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_on_a_redis_cluster_share_collapse_and_purge() {
    let cluster = strata_testkit::RedisCluster::start();
    let (up, addr, _stop) = upstream().await;
    // The gateways' purge log in three parts (one per master); the product service splits
    // its own in two, which the gateways adopt when they follow it.
    let product = {
        let config = strata_redis::RedisConfig::from_url(&cluster.url()).unwrap();
        let log = strata_redis::RedisStreamLog::connect_with(&config)
            .await
            .unwrap()
            .shards("product", 2);
        strata::HybridCache::builder("product")
            .l2(strata_redis::RedisStore::connect_with(&config)
                .await
                .unwrap())
            .invalidation(log)
            .build()
            .await
            .unwrap()
    };
    let toml = config(
        addr,
        None,
        &format!(
            "redis = \"{}\"\nlog_shards = 3\nfollow = [\"product\"]",
            cluster.url()
        ),
    );
    let a = Gateway::start(&toml, &[]);
    let b = Gateway::start(&toml, &[]);
    let http = Http::new();
    assert_eq!(
        http.get(&a.url("/products/1")).await.header("x-cache"),
        "MISS"
    );
    assert_eq!(
        http.get(&b.url("/products/1")).await.header("x-cache"),
        "HIT"
    );
    // A stampede over both gateways: one upstream request.
    let requests: Vec<_> = (0..200)
        .map(|i| {
            let url = [&a, &b][i % 2].url("/slow");
            let http = http.clone();
            tokio::spawn(async move { http.get(&url).await })
        })
        .collect();
    for r in requests {
        assert_eq!(r.await.unwrap().status, StatusCode::OK);
    }
    assert_eq!(up.hits("/slow"), 1, "one request reached the upstream");
    // A purge on A is honoured by B; so is the product service's own invalidation.
    up.version.fetch_add(1, Ordering::SeqCst);
    let purged = http.purge(&a, r#"{"tags":["product:1"]}"#, TOKEN).await;
    assert_eq!(purged.status, StatusCode::OK, "{}", purged.body);
    eventually(
        "B serves the new version",
        Duration::from_secs(10),
        || async { http.get(&b.url("/products/1")).await.body == "product 1 v1" },
    )
    .await;
    http.get(&b.url("/products/1")).await;
    up.version.fetch_add(1, Ordering::SeqCst);
    product.invalidate_tag("product:1").await.unwrap();
    for gateway in [&a, &b] {
        eventually(
            "the service's invalidation purges",
            Duration::from_secs(10),
            || async { http.get(&gateway.url("/products/1")).await.body == "product 1 v2" },
        )
        .await;
    }
    // A gateway configured with another split of the same namespace does not start.
    let wrong = config(
        addr,
        None,
        &format!("redis = \"{}\"\nlog_shards = 2", cluster.url()),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, wrong).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["gateway", "--config", path.to_str().unwrap()])
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("split into 3 shards"),
        "{stderr}"
    );
}
