//! The origin: an axum app that counts what reaches it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

#[derive(Default)]
pub(crate) struct Origin {
    hits: Mutex<HashMap<String, usize>>,
    pub(crate) version: AtomicU64,
    pub(crate) failing: AtomicBool,
    not_modified: AtomicU64,
}

impl Origin {
    pub(crate) fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
    pub(crate) fn not_modified(&self) -> u64 {
        self.not_modified.load(Ordering::SeqCst)
    }
    fn count(&self, path: &str) {
        *self
            .hits
            .lock()
            .unwrap()
            .entry(path.to_owned())
            .or_default() += 1;
    }
    fn etag(&self, prefix: &str) -> String {
        format!("\"{prefix}{}\"", self.version.load(Ordering::SeqCst))
    }
    /// A `304` when the request's `If-None-Match` is the current ETag.
    fn unchanged(&self, headers: &HeaderMap, etag: &str, cc: &'static str) -> Option<Response> {
        let inm = headers.get(header::IF_NONE_MATCH)?.to_str().ok()?;
        (inm == etag).then(|| {
            self.not_modified.fetch_add(1, Ordering::SeqCst);
            (
                StatusCode::NOT_MODIFIED,
                [(header::CACHE_CONTROL, cc), (header::ETAG, etag)],
            )
                .into_response()
        })
    }
}

type St = State<Arc<Origin>>;

pub(crate) fn app(origin: Arc<Origin>) -> Router {
    Router::new()
        .route("/products/{id}", get(product).post(update))
        .route("/stale/{name}", get(stale))
        .route("/revalidate", get(revalidate))
        .route("/must-revalidate", get(must_revalidate))
        .route("/nocache", get(no_cache))
        .route("/lastmod", get(last_modified))
        .route(
            "/private",
            get(|s: St| simple(s, "/private", "private, max-age=60")),
        )
        .route("/nostore", get(|s: St| simple(s, "/nostore", "no-store")))
        .route("/silent", get(|s: St| simple(s, "/silent", "")))
        .route("/cookie", get(cookie))
        .route("/vary", get(vary))
        .route("/varystar", get(vary_star))
        .route("/headers", get(headers))
        .route(
            "/auth",
            get(|s: St, h: HeaderMap| auth(s, h, "/auth", "max-age=60")),
        )
        .route(
            "/auth-public",
            get(|s: St, h: HeaderMap| auth(s, h, "/auth-public", "public, max-age=60")),
        )
        .route("/slow", get(slow))
        .route("/big", get(big))
        .route("/groups", get(groups).post(invalidate_groups))
        .route("/error", get(error))
        .route("/query", get(query))
        .with_state(origin)
}

async fn product(State(o): St, Path(id): Path<u32>, h: HeaderMap) -> Response {
    o.count(&format!("/products/{id}"));
    let etag = o.etag("v");
    if let Some(r) = o.unchanged(&h, &etag, "public, max-age=60") {
        return r;
    }
    let v = o.version.load(Ordering::SeqCst);
    (
        [
            (header::CACHE_CONTROL, "public, max-age=60".to_owned()),
            (header::ETAG, etag),
            (
                header::HeaderName::from_static("surrogate-key"),
                format!("product:{id} products"),
            ),
        ],
        format!("product {id} v{v}"),
    )
        .into_response()
}

async fn update(State(o): St, Path(id): Path<u32>) -> StatusCode {
    o.count(&format!("POST /products/{id}"));
    o.version.fetch_add(1, Ordering::SeqCst);
    StatusCode::NO_CONTENT
}

/// Stale on arrival (`Age` = `max-age`), usable stale for a minute either way.
async fn stale(State(o): St, Path(name): Path<String>, h: HeaderMap) -> Response {
    o.count(&format!("/stale/{name}"));
    if o.failing.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let etag = o.etag("s");
    if let Some(r) = o.unchanged(&h, &etag, "public, max-age=60") {
        return r;
    }
    let v = o.version.load(Ordering::SeqCst);
    (
        [
            (
                header::CACHE_CONTROL,
                "public, max-age=10, stale-while-revalidate=60, stale-if-error=60".to_owned(),
            ),
            (header::AGE, "10".to_owned()),
            (header::ETAG, etag),
        ],
        format!("{name} v{v}"),
    )
        .into_response()
}

/// Stale on arrival, no stale use allowed: revalidated before every answer until a `304`
/// makes it fresh.
async fn revalidate(State(o): St, h: HeaderMap) -> Response {
    o.count("/revalidate");
    if o.failing.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let etag = o.etag("r");
    if let Some(r) = o.unchanged(&h, &etag, "public, max-age=60") {
        return r;
    }
    (
        [
            (header::CACHE_CONTROL, "public, max-age=10".to_owned()),
            (header::AGE, "10".to_owned()),
            (header::ETAG, etag),
            (
                header::LAST_MODIFIED,
                "Sun, 06 Nov 1994 08:49:37 GMT".to_owned(),
            ),
        ],
        "revalidated",
    )
        .into_response()
}

/// Stale on arrival; may not be served stale while revalidating, but may when the origin
/// fails (its own `stale-if-error`).
async fn must_revalidate(State(o): St, h: HeaderMap) -> Response {
    o.count("/must-revalidate");
    if o.failing.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let etag = o.etag("m");
    let cc = "public, s-maxage=10, stale-while-revalidate=60, stale-if-error=60";
    if let Some(r) = o.unchanged(&h, &etag, cc) {
        return r;
    }
    (
        [
            (
                header::CACHE_CONTROL,
                "public, s-maxage=10, stale-while-revalidate=60, stale-if-error=60".to_owned(),
            ),
            (header::AGE, "10".to_owned()),
            (header::ETAG, etag),
        ],
        "must",
    )
        .into_response()
}

/// Only a `Last-Modified` validator; stale on arrival; `If-Modified-Since` honoured.
async fn last_modified(State(o): St, h: HeaderMap) -> Response {
    o.count("/lastmod");
    const MODIFIED: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
    if h.get(header::IF_MODIFIED_SINCE)
        .is_some_and(|v| v == MODIFIED)
    {
        o.not_modified.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::NOT_MODIFIED,
            [(header::CACHE_CONTROL, "public, max-age=60")],
        )
            .into_response();
    }
    (
        [
            (header::CACHE_CONTROL, "public, max-age=10"),
            (header::AGE, "10"),
            (header::LAST_MODIFIED, MODIFIED),
        ],
        "by date",
    )
        .into_response()
}

async fn no_cache(State(o): St, h: HeaderMap) -> Response {
    o.count("/nocache");
    let etag = o.etag("n");
    if let Some(r) = o.unchanged(&h, &etag, "public, no-cache") {
        return r;
    }
    (
        [
            (header::CACHE_CONTROL, "public, no-cache".to_owned()),
            (header::ETAG, etag),
        ],
        "no-cache",
    )
        .into_response()
}

async fn simple(State(o): St, path: &'static str, cc: &'static str) -> Response {
    o.count(path);
    if cc.is_empty() {
        return "silent".into_response();
    }
    ([(header::CACHE_CONTROL, cc)], path).into_response()
}

async fn cookie(State(o): St) -> Response {
    o.count("/cookie");
    (
        [
            (header::CACHE_CONTROL, "public, max-age=60"),
            (header::SET_COOKIE, "session=abc"),
        ],
        "cookie",
    )
        .into_response()
}

async fn vary(State(o): St, h: HeaderMap) -> Response {
    o.count("/vary");
    let lang = h
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned();
    (
        [
            (header::CACHE_CONTROL, "public, max-age=60"),
            (header::VARY, "Accept-Language"),
        ],
        lang,
    )
        .into_response()
}

async fn vary_star(State(o): St) -> Response {
    o.count("/varystar");
    (
        [
            (header::CACHE_CONTROL, "public, max-age=60"),
            (header::VARY, "*"),
        ],
        "star",
    )
        .into_response()
}

/// The request headers as the origin saw them, one `name: value` per line.
async fn headers(State(o): St, h: HeaderMap) -> Response {
    o.count("/headers");
    let mut lines: Vec<String> = h
        .iter()
        .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap_or("?")))
        .collect();
    lines.sort();
    (
        [(header::CACHE_CONTROL, "public, max-age=60")],
        lines.join("\n"),
    )
        .into_response()
}

async fn auth(State(o): St, h: HeaderMap, path: &'static str, cc: &'static str) -> Response {
    o.count(path);
    match h.get(header::AUTHORIZATION) {
        Some(_) => ([(header::CACHE_CONTROL, cc)], "for the user").into_response(),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

/// A slow origin (its latency, not a synchronisation): requests arriving meanwhile queue.
async fn slow(State(o): St) -> Response {
    o.count("/slow");
    tokio::time::sleep(Duration::from_millis(300)).await;
    ([(header::CACHE_CONTROL, "public, max-age=60")], "slow").into_response()
}

async fn big(State(o): St) -> Response {
    o.count("/big");
    (
        [(header::CACHE_CONTROL, "public, max-age=60")],
        vec![b'x'; 2 << 20],
    )
        .into_response()
}

async fn groups(State(o): St) -> Response {
    o.count("/groups");
    (
        [
            (header::CACHE_CONTROL, "public, max-age=60"),
            (
                header::HeaderName::from_static("cache-groups"),
                "\"scripts\", \"g1\"",
            ),
        ],
        "grouped",
    )
        .into_response()
}

async fn invalidate_groups(State(o): St) -> Response {
    o.count("POST /groups");
    (
        StatusCode::NO_CONTENT,
        [(
            header::HeaderName::from_static("cache-group-invalidation"),
            "\"g1\"",
        )],
    )
        .into_response()
}

async fn error(State(o): St) -> Response {
    o.count("/error");
    tokio::time::sleep(Duration::from_millis(200)).await;
    (StatusCode::SERVICE_UNAVAILABLE, "down").into_response()
}

async fn query(State(o): St, RawQuery(q): RawQuery) -> Response {
    o.count("/query");
    (
        [(header::CACHE_CONTROL, "public, max-age=60")],
        q.unwrap_or_default(),
    )
        .into_response()
}
