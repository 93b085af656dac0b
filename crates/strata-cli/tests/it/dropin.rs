//! `strata gateway` as a drop-in for nginx `proxy_cache` and Varnish: the real binary in
//! front of a scripted origin that answers with exactly the bytes a test gives it (interim
//! responses, odd headers, hang-ups), one test per behaviour a team relies on when it swaps
//! the gateway in.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::gateway::{Gateway, Http, TOKEN};

/// What the origin does with one request.
pub(crate) enum Act {
    /// Writes these bytes (interim responses and the final one), then reads the next request.
    Send(Vec<u8>),
    /// Writes these bytes, then hangs up.
    SendAndClose(Vec<u8>),
    /// Never answers.
    Hang,
}

/// A request as the origin saw it: its target and headers (names lowercase).
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) target: String,
    pub(crate) headers: Vec<(String, String)>,
}

impl Seen {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

type Script = Arc<dyn Fn(&Seen) -> Act + Send + Sync>;

/// An HTTP/1.1 origin on a raw socket, answering each path as its script says.
pub(crate) struct Origin {
    pub(crate) addr: SocketAddr,
    scripts: Mutex<HashMap<String, Script>>,
    seen: Mutex<Vec<Seen>>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Origin {
    pub(crate) async fn start() -> Arc<Origin> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = Arc::new(Origin {
            addr: listener.local_addr().unwrap(),
            scripts: Mutex::default(),
            seen: Mutex::default(),
            accept: Mutex::default(),
        });
        let serving = origin.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serving.clone().connection(stream));
            }
        });
        *origin.accept.lock().unwrap() = Some(task);
        origin
    }

    /// Answers `path` (without query) as `script` says.
    pub(crate) fn on(&self, path: &str, script: impl Fn(&Seen) -> Act + Send + Sync + 'static) {
        self.scripts
            .lock()
            .unwrap()
            .insert(path.to_owned(), Arc::new(script));
    }

    /// Answers `path` always with `response`.
    pub(crate) fn always(&self, path: &str, response: Vec<u8>) {
        self.on(path, move |_| Act::Send(response.clone()));
    }

    /// The requests for `path` so far.
    pub(crate) fn requests(&self, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.target.split('?').next() == Some(path))
            .cloned()
            .collect()
    }

    pub(crate) fn hits(&self, path: &str) -> usize {
        self.requests(path).len()
    }

    /// Stops listening: connections are refused from now on.
    pub(crate) fn refuse(&self) {
        if let Some(task) = self.accept.lock().unwrap().take() {
            task.abort();
        }
    }

    async fn connection(self: Arc<Self>, mut stream: TcpStream) {
        let mut buf = Vec::new();
        loop {
            let Some(end) = read_head(&mut stream, &mut buf).await else {
                return;
            };
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end);
            let mut lines = head.split("\r\n");
            let target = lines
                .next()
                .and_then(|l| l.split(' ').nth(1))
                .unwrap_or("/")
                .to_owned();
            let headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
            let seen = Seen { target, headers };
            self.seen.lock().unwrap().push(seen.clone());
            let path = seen.target.split('?').next().unwrap_or("/").to_owned();
            let script = self.scripts.lock().unwrap().get(&path).cloned();
            let act = match script {
                Some(script) => script(&seen),
                None => Act::Send(response("404 Not Found", &[], "no script\n")),
            };
            match act {
                Act::Send(bytes) => {
                    if stream.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Act::SendAndClose(bytes) => {
                    let _ = stream.write_all(&bytes).await;
                    return;
                }
                Act::Hang => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                }
            }
        }
    }
}

/// Reads until a request head is complete; its length (with the blank line).
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(at + 4);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A response's bytes: `HTTP/1.1 <status>`, the headers, `Content-Length` (except on 1xx,
/// 204 and 304) and the body.
pub(crate) fn response(status: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n");
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    if !["1", "204", "304"].iter().any(|s| status.starts_with(s)) {
        out.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

/// A gateway in front of `origin` on the embedded cache: `top` adds top-level settings,
/// `cache` the route's `[route.cache]` ones.
fn gateway(origin: &Origin, top: &str, cache: &str) -> Gateway {
    let text = format!(
        "listen = \"127.0.0.1:0\"\nadmin_token = \"{TOKEN}\"\n{top}\n\
         [upstream]\ntimeout = \"500ms\"\n\n\
         [[route]]\nname = \"o\"\nprefix = \"/\"\nupstream = \"http://{}\"\n\
         [route.cache]\n{cache}\n",
        origin.addr
    );
    Gateway::start(&text, &[])
}

const FRESH: (&str, &str) = ("cache-control", "max-age=60");

/// A response's header lines.
type Headers = &'static [(&'static str, &'static str)];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_end_to_end_header_reaches_the_origin_by_default() {
    let origin = Origin::start().await;
    origin.always("/api", response("200 OK", &[FRESH], "api"));
    let gw = gateway(&origin, "", "");
    let http = Http::new();
    let headers = [
        ("x-api-key", "k-1"),
        ("accept", "application/json"),
        ("authorization-hint", "x"),
        ("te", "trailers"),
        ("upgrade", "websocket"),
    ];
    let r = http.send("GET", &gw.url("/api"), &headers, "").await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "api"));
    let seen = &origin.requests("/api")[0];
    assert_eq!(seen.header("x-api-key"), Some("k-1"));
    assert_eq!(seen.header("accept"), Some("application/json"));
    assert_eq!(seen.header("authorization-hint"), Some("x"));
    // Hop-by-hop: gone. Added: the client's address, host, scheme, and this hop.
    assert_eq!((seen.header("te"), seen.header("upgrade")), (None, None));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("via"), Some("1.1 strata"));
    assert_eq!(r.header("via"), "1.1 strata");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targeted_cache_control_replaces_cache_control_for_this_cache() {
    let origin = Origin::start().await;
    let cases: [(&str, Headers, usize); 5] = [
        // The CDN field makes a browser-only no-store response cacheable here…
        (
            "/cdn-stores",
            &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=60"),
            ],
            1,
        ),
        // …and a cacheable one uncacheable here.
        (
            "/cdn-refuses",
            &[
                ("cache-control", "max-age=60"),
                ("cdn-cache-control", "no-store"),
            ],
            3,
        ),
        // Our own field wins over the CDN one.
        (
            "/ours-first",
            &[
                ("strata-cache-control", "max-age=60"),
                ("cdn-cache-control", "no-store"),
            ],
            1,
        ),
        // An invalid target field is ignored: Cache-Control decides.
        (
            "/invalid",
            &[
                ("cache-control", "max-age=60"),
                ("cdn-cache-control", "max-age=\"60"),
            ],
            1,
        ),
        // A targeted field makes Expires count for nothing.
        (
            "/no-expires",
            &[
                ("expires", "Thu, 01 Jan 2099 00:00:00 GMT"),
                ("date", "Thu, 01 Jan 2026 00:00:00 GMT"),
                ("cdn-cache-control", "must-revalidate"),
            ],
            3,
        ),
    ];
    for (path, headers, _) in &cases {
        origin.always(path, response("200 OK", headers, "t"));
    }
    let gw = gateway(&origin, "", "");
    let http = Http::new();
    for (path, headers, trips) in &cases {
        for _ in 0..3 {
            let r = http.get(&gw.url(path)).await;
            assert_eq!(r.status, StatusCode::OK, "{path}");
            // The fields still reach the client.
            for (name, value) in *headers {
                assert_eq!(r.header(name), *value, "{path}");
            }
        }
        assert_eq!(origin.hits(path), *trips, "{path}");
    }
    // A route may name its own targets, or none.
    let plain = gateway(&origin, "", "targets = []");
    http.get(&plain.url("/cdn-refuses")).await;
    assert_eq!(
        http.get(&plain.url("/cdn-refuses")).await.header("x-cache"),
        "HIT"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_are_answered_from_the_stored_complete_response() {
    let origin = Origin::start().await;
    let body: String = (0..1000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let headers = [FRESH, ("etag", "\"v1\""), ("content-type", "text/plain")];
    origin.always("/file", response("200 OK", &headers, &body));
    let gw = gateway(&origin, "", "");
    let http = Http::new();
    let range = |spec: &'static str| {
        let (http, url) = (http.clone(), gw.url("/file"));
        async move { http.send("GET", &url, &[("range", spec)], "").await }
    };
    // A miss: the whole response is fetched (no Range to the origin) and stored; the range
    // is cut from it.
    let first = range("bytes=0-9").await;
    assert_eq!(first.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(first.header("content-range"), "bytes 0-9/1000");
    assert_eq!(first.body, body[..10]);
    assert_eq!(origin.requests("/file")[0].header("range"), None);
    let suffix = range("bytes=-5").await;
    assert_eq!(
        (suffix.status, suffix.header("x-cache")),
        (StatusCode::PARTIAL_CONTENT, "HIT")
    );
    assert_eq!(suffix.header("content-range"), "bytes 995-999/1000");
    assert_eq!(suffix.body, body[995..]);
    let open = range("bytes=990-").await;
    assert_eq!(open.body, body[990..]);
    // Several: multipart/byteranges.
    let multi = range("bytes=0-1, 10-11").await;
    assert_eq!(multi.status, StatusCode::PARTIAL_CONTENT);
    let ct = multi.header("content-type").to_owned();
    let boundary = ct
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("{ct}"));
    assert_eq!(
        multi.body,
        format!(
            "\r\n--{boundary}\r\ncontent-type: text/plain\r\ncontent-range: bytes 0-1/1000\r\n\r\n{}\
             \r\n--{boundary}\r\ncontent-type: text/plain\r\ncontent-range: bytes 10-11/1000\r\n\r\n{}\
             \r\n--{boundary}--\r\n",
            &body[..2],
            &body[10..12]
        )
    );
    // Unsatisfiable: 416 with the length.
    let none = range("bytes=1000-").await;
    assert_eq!(none.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(none.header("content-range"), "bytes */1000");
    // If-Range: the ranges only for the same representation.
    for (if_range, partial) in [("\"v1\"", true), ("\"v0\"", false), ("W/\"v1\"", false)] {
        let r = http
            .send(
                "GET",
                &gw.url("/file"),
                &[("range", "bytes=0-0"), ("if-range", if_range)],
                "",
            )
            .await;
        assert_eq!(
            r.status == StatusCode::PARTIAL_CONTENT,
            partial,
            "{if_range}"
        );
        assert_eq!(r.body.len(), if partial { 1 } else { 1000 }, "{if_range}");
    }
    assert_eq!(origin.hits("/file"), 1);
    assert_eq!(
        http.get(&gw.url("/file")).await.header("accept-ranges"),
        "bytes"
    );

    // Too large to store: after the first trip the origin answers the ranges itself, and
    // its 206 is never stored as the whole.
    origin.on("/big", move |seen| match seen.header("range") {
        Some("bytes=0-3") => Act::Send(response(
            "206 Partial Content",
            &[FRESH, ("content-range", "bytes 0-3/4096")],
            "abcd",
        )),
        _ => Act::Send(response("200 OK", &[FRESH], &"x".repeat(4096))),
    });
    let small = gateway(&origin, "", "max_body = 1024");
    assert_eq!(http.get(&small.url("/big")).await.body.len(), 4096);
    let part = http
        .send("GET", &small.url("/big"), &[("range", "bytes=0-3")], "")
        .await;
    assert_eq!(
        (part.status, part.body.as_str()),
        (StatusCode::PARTIAL_CONTENT, "abcd")
    );
    assert_eq!(http.get(&small.url("/big")).await.body.len(), 4096);
    assert_eq!(origin.hits("/big"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_on_failure_only_where_allowed() {
    let origin = Origin::start().await;
    // Stale on arrival; a validator keeps it for revalidation.
    let stale = |cc: &str| {
        response(
            "200 OK",
            &[("cache-control", cc), ("age", "10"), ("etag", "\"s\"")],
            "stored",
        )
    };
    origin.always("/sie", stale("max-age=5, stale-if-error=600"));
    origin.always(
        "/mr",
        stale("max-age=5, must-revalidate, stale-if-error=600"),
    );
    origin.always("/plain", stale("max-age=5"));
    let gw = gateway(&origin, "", "");
    let http = Http::new();
    for path in ["/sie", "/mr", "/plain"] {
        assert_eq!(http.get(&gw.url(path)).await.body, "stored");
    }
    for how in ["5xx", "hang-up", "cut-short", "timeout"] {
        for path in ["/sie", "/mr", "/plain"] {
            origin.on(path, move |_| failure(how));
        }
        let served = http.get(&gw.url("/sie")).await;
        assert_eq!(
            (
                served.status,
                served.body.as_str(),
                served.header("x-cache")
            ),
            (StatusCode::OK, "stored", "STALE"),
            "{how}: {}",
            served.header("cache-status")
        );
        assert!(
            served.header("cache-status").contains("fwd-status=5"),
            "{how}: {}",
            served.header("cache-status")
        );
        // must-revalidate forbids it, and without stale-if-error there is none: a clear 5xx.
        for path in ["/mr", "/plain"] {
            let failed = http.get(&gw.url(path)).await;
            assert!(
                failed.status.is_server_error() && failed.body != "stored",
                "{how} {path}: {} {}",
                failed.status,
                failed.header("cache-status")
            );
        }
    }
    // The origin refuses connections: the same.
    origin.refuse();
    let served = http.get(&gw.url("/sie")).await;
    assert_eq!(
        (served.status, served.header("x-cache")),
        (StatusCode::OK, "STALE")
    );
    assert_eq!(
        http.get(&gw.url("/mr")).await.status,
        StatusCode::BAD_GATEWAY
    );
}

/// The origin failing, each way an origin fails.
fn failure(how: &str) -> Act {
    match how {
        "5xx" => Act::Send(response("503 Service Unavailable", &[], "down")),
        "hang-up" => Act::SendAndClose(Vec::new()),
        // A storable answer whose body stops short: read whole before it is stored, so the
        // failure is known before anything is answered.
        "cut-short" => Act::SendAndClose(
            b"HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: 100\r\n\r\nabc"
                .to_vec(),
        ),
        _ => Act::Hang,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_parsed_as_the_rfcs_say() {
    let origin = Origin::start().await;
    // (path, headers, stored?)
    let cases: [(&str, Headers, bool); 9] = [
        ("/age-word", &[FRESH, ("age", "ten")], true),
        ("/age-negative", &[FRESH, ("age", "-5")], true),
        ("/age-list-young", &[FRESH, ("age", "5, 500")], true),
        // The first member decides: 500 s old, stale on arrival, nothing to revalidate with.
        ("/age-list-old", &[FRESH, ("age", "500, 5")], false),
        ("/expires-invalid", &[("expires", "0")], false),
        (
            "/cc-duplicate",
            &[
                ("cache-control", "max-age=60"),
                ("cache-control", "max-age=30"),
            ],
            false,
        ),
        (
            "/cc-quoted",
            &[(
                "cache-control",
                "community=\"a, max-age=0\", max-age=60, x-unknown=1",
            )],
            true,
        ),
        ("/vary-star", &[FRESH, ("vary", "accept, *")], false),
        (
            "/vary-star-line",
            &[FRESH, ("vary", "accept"), ("vary", "*")],
            false,
        ),
    ];
    for (path, headers, _) in &cases {
        origin.always(path, response("200 OK", headers, "p"));
    }
    let gw = gateway(&origin, "", "");
    let http = Http::new();
    for (path, headers, stored) in &cases {
        http.get(&gw.url(path)).await;
        let second = http.get(&gw.url(path)).await;
        assert_eq!(
            second.header("x-cache") == "HIT",
            *stored,
            "{path}: {}",
            second.header("cache-status")
        );
        if *stored {
            // An ignored Age is no age: the answer is young; unknown directives are kept.
            let age: u64 = second.header("age").parse().unwrap();
            let from_origin = headers
                .iter()
                .any(|(n, v)| *n == "age" && v.starts_with('5'));
            assert!(age <= if from_origin { 7 } else { 2 }, "{path}: age {age}");
            for (name, value) in headers.iter().filter(|(n, _)| *n == "cache-control") {
                assert_eq!(second.header(name), *value, "{path}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_responses_are_never_taken_for_the_final_one() {
    let origin = Origin::start().await;
    let mut bytes = response("103 Early Hints", &[("link", "</s.css>; rel=preload")], "");
    bytes.extend(response("200 OK", &[FRESH], "final"));
    origin.always("/hints", bytes);
    let gw = gateway(&origin, "", "");
    let http = Http::new();
    let first = http.get(&gw.url("/hints")).await;
    assert_eq!(
        (first.status, first.body.as_str()),
        (StatusCode::OK, "final")
    );
    let second = http.get(&gw.url("/hints")).await;
    assert_eq!(
        (
            second.status,
            second.body.as_str(),
            second.header("x-cache")
        ),
        (StatusCode::OK, "final", "HIT")
    );
    assert_eq!(origin.hits("/hints"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_has_a_listener_of_its_own() {
    let origin = Origin::start().await;
    for path in ["/metrics", "/_strata/health", "/_strata/purge"] {
        origin.always(path, response("200 OK", &[], &format!("origin's {path}")));
    }
    let gw = gateway(&origin, "", "");
    let http = Http::new();
    // The public listener forwards every path, the upstream's own /metrics included.
    for path in ["/metrics", "/_strata/health"] {
        assert_eq!(
            http.get(&gw.url(path)).await.body,
            format!("origin's {path}")
        );
    }
    let auth = format!("Bearer {TOKEN}");
    let purge = http
        .send(
            "POST",
            &gw.url("/_strata/purge"),
            &[("authorization", &auth)],
            "{}",
        )
        .await;
    assert_eq!(purge.body, "origin's /_strata/purge");
    // The admin listener: metrics, health and purges (with the token), nothing else.
    let metrics = http.get(&gw.admin_url("/metrics")).await;
    assert!(
        metrics.body.contains("strata_http_responses_total"),
        "{}",
        metrics.body
    );
    let health = http
        .send(
            "GET",
            &gw.admin_url("/_strata/health"),
            &[("authorization", &auth)],
            "",
        )
        .await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
    assert_eq!(
        http.get(&gw.admin_url("/_strata/health")).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        http.get(&gw.admin_url("/products/1")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(origin.hits("/products/1"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_can_be_turned_off() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"off\"\n[[route]]\nprefix = \"/\"\n\
             upstream = \"http://{}\"\n",
            origin.addr
        ),
    )
    .unwrap();
    let line = crate::gateway::first_line(&["gateway", "--config", path.to_str().unwrap()]);
    assert!(line.starts_with("strata gateway on http://"), "{line}");
    assert!(
        !line.contains("admin on") && line.contains("no admin listener"),
        "{line}"
    );
    // Its port taken: a clear error, not a gateway without its admin API.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = format!("http://{}", origin.addr);
    let line = crate::gateway::first_line(&[
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream,
        "--admin-listen",
        &taken.local_addr().unwrap().to_string(),
    ]);
    assert!(
        line.starts_with("error")
            && line.contains("for the admin API")
            && line.contains("admin_listen"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_may_be_reused_is_reused() {
    let origin = Origin::start().await;
    let statuses = [
        "203 Non-Authoritative Information",
        "204 No Content",
        "300 Multiple Choices",
        "301 Moved Permanently",
        "308 Permanent Redirect",
        "404 Not Found",
        "405 Method Not Allowed",
        "410 Gone",
        "414 URI Too Long",
        "501 Not Implemented",
    ];
    for status in statuses {
        let code = &status[..3];
        let body = if code == "204" { "" } else { code };
        origin.always(
            &format!("/s{code}"),
            response(status, &[FRESH, ("location", "/elsewhere")], body),
        );
    }
    let validated = [
        FRESH,
        ("etag", "\"e1\""),
        ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
    ];
    origin.always("/page", response("200 OK", &validated, "page"));
    // Stale on arrival; its revalidation's 304 brings new headers.
    origin.on("/updated", |seen| match seen.header("if-none-match") {
        Some("\"u1\"") => Act::Send(response(
            "304 Not Modified",
            &[FRESH, ("etag", "\"u1\""), ("x-version", "2")],
            "",
        )),
        _ => Act::Send(response(
            "200 OK",
            &[
                ("cache-control", "max-age=0"),
                ("etag", "\"u1\""),
                ("x-version", "1"),
            ],
            "body",
        )),
    });
    let gw = gateway(&origin, "", "");
    let http = Http::new();
    for status in statuses {
        let code = &status[..3];
        let path = format!("/s{code}");
        http.get(&gw.url(&path)).await;
        let again = http.get(&gw.url(&path)).await;
        assert_eq!(again.status.as_str(), code, "{path}");
        assert_eq!(again.header("x-cache"), "HIT", "{path}");
        assert_eq!(origin.hits(&path), 1, "{path}");
    }
    // HEAD from the stored GET: the length, no body.
    http.get(&gw.url("/page")).await;
    let head = http.send("HEAD", &gw.url("/page"), &[], "").await;
    assert_eq!(
        (head.status, head.header("x-cache"), head.body.as_str()),
        (StatusCode::OK, "HIT", "")
    );
    assert_eq!(head.header("content-length"), "4");
    // Conditionals answered from the fresh stored response; If-None-Match first.
    let conditional = |headers: &'static [(&'static str, &'static str)]| {
        let (http, url) = (http.clone(), gw.url("/page"));
        async move { http.send("GET", &url, headers, "").await.status }
    };
    assert_eq!(
        conditional(&[("if-none-match", "\"x\", W/\"e1\"")]).await,
        StatusCode::NOT_MODIFIED
    );
    assert_eq!(
        conditional(&[("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT")]).await,
        StatusCode::NOT_MODIFIED
    );
    assert_eq!(
        conditional(&[
            ("if-none-match", "\"other\""),
            ("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ])
        .await,
        StatusCode::OK
    );
    assert_eq!(origin.hits("/page"), 1);
    // A 304 from the origin updates the stored headers.
    assert_eq!(http.get(&gw.url("/updated")).await.header("x-version"), "1");
    let revalidated = http.get(&gw.url("/updated")).await;
    assert_eq!(
        (revalidated.body.as_str(), revalidated.header("x-version")),
        ("body", "2")
    );
    let hit = http.get(&gw.url("/updated")).await;
    assert_eq!(
        (hit.header("x-cache"), hit.header("x-version")),
        ("HIT", "2")
    );
    assert_eq!(origin.hits("/updated"), 2);
}
