//! One request through the cache: look it up (`mod.rs`), judge what is stored (`judge.rs`),
//! go to the origin when needed — collapsed with every other request for the same key, here
//! and on other instances (`trip.rs`) — revalidate (`revalidate.rs`), pass what is not for
//! the cache (`pass.rs`), store what may be stored, and answer.

mod judge;
mod pass;
mod revalidate;
mod trip;

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, Method, Request, Response, StatusCode, request};
use http_body::Body;
use strata::{EntryOptions, Error};
use tower_service::Service;

use crate::BoxError;
use crate::answer;
use crate::body::CacheBody;
use crate::cache_control::CacheControl;
use crate::cache_status::{CacheStatus, Forward};
use crate::key::RequestKey;
use crate::origin::{Head, Origin};
use crate::shared::Shared;
use crate::stored::{Entry, StoredResponse, unix_us, vary_of};

pub(super) type Answer<RB> = Response<CacheBody<RB>>;

/// The inner service (the origin), as an exchange drives it.
pub(crate) trait Inner<B, RB>:
    Service<Request<B>, Response = Response<RB>, Future: Send + 'static, Error: Into<BoxError>>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T, B, RB> Inner<B, RB> for T where
    T: Service<Request<B>, Response = Response<RB>, Future: Send + 'static, Error: Into<BoxError>>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// A request body: the client's, or `Default` for the requests the cache makes itself.
pub(crate) trait RequestBody: Default + Send + 'static {}

impl<T: Default + Send + 'static> RequestBody for T {}

/// The origin's response body.
pub(crate) trait ResponseBody:
    Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static
{
}

impl<T> ResponseBody for T where
    T: Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static
{
}

/// The origin answered with a failure status (for `stale-if-error` and collapsed waiters).
#[derive(Debug)]
struct OriginFailed(u16);

impl std::fmt::Display for OriginFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "origin answered {}", self.0)
    }
}

impl std::error::Error for OriginFailed {}

/// The answer a leader's own trip produced when it was not stored, for the leader alone.
struct Slot<RB>(Mutex<Option<Answer<RB>>>);

impl<RB> Slot<RB> {
    fn new() -> Self {
        Slot(Mutex::new(None))
    }
    fn put(&self, answer: Answer<RB>) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(answer);
        }
    }
    fn take(&self) -> Option<Answer<RB>> {
        self.0.lock().ok()?.take()
    }
}

/// One lookup's part in a flight: whether its loader ran (it led the trip), and the answer
/// the trip produced when it was not stored.
struct Flight<RB> {
    started: AtomicBool,
    slot: Slot<RB>,
}

impl<RB> Flight<RB> {
    fn new() -> Arc<Self> {
        Arc::new(Flight {
            started: AtomicBool::new(false),
            slot: Slot(Mutex::new(None)),
        })
    }
}

/// What a lookup of one key found.
enum Looked<RB> {
    /// An entry: from the cache, or stored by this lookup's trip (`loaded`), or by another
    /// request's trip this one waited for (`collapsed`).
    Found {
        entry: Arc<Entry>,
        loaded: bool,
        collapsed: bool,
    },
    /// This lookup went to the origin and the answer was not stored.
    Live(Answer<RB>, &'static str),
    /// The lookup failed (the origin, or the cache refused the key).
    Failed(Error),
    /// Waited the route's `collapse_wait` on another request's trip.
    Waited,
}

/// A cacheable request, as the cache handles it. What only a trip to the origin needs (the
/// origin's request, the URL's tags) is worked out then, not on every hit.
struct Ctx {
    parts: request::Parts,
    primary: String,
    cc: CacheControl,
    head_only: bool,
    shared: Arc<Shared>,
}

impl Ctx {
    fn headers(&self) -> &HeaderMap {
        &self.parts.headers
    }

    fn key(&self) -> RequestKey {
        let policy = &self.shared.policy;
        policy.key.key(&policy.route, &self.parts)
    }

    /// The request the origin gets: `GET`, the keyed query, the headers the key policy
    /// forwards, never a `Cookie` (a route that serves requests with cookies from the cache
    /// must not let one client's cookie shape what everyone gets), and `Authorization` (the
    /// origin decides whether its answer may be shared, §3.5).
    fn origin_head(&self) -> Head {
        let policy = &self.shared.policy;
        let mut headers = policy.key.origin_headers(&self.parts.headers);
        headers.remove(COOKIE);
        if let Some(auth) = self.parts.headers.get(AUTHORIZATION) {
            headers.insert(AUTHORIZATION, auth.clone());
        }
        Head {
            method: Method::GET,
            uri: self.key().origin_uri,
            version: self.parts.version,
            headers,
            extensions: http::Extensions::new(),
        }
    }
}

/// One request's trip through the cache.
pub(crate) struct Exchange<S, B, RB> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) origin: Origin<S>,
    pub(crate) types: PhantomData<fn(B) -> RB>,
}

impl<S: Clone, B, RB> Clone for Exchange<S, B, RB> {
    fn clone(&self) -> Self {
        Exchange {
            shared: self.shared.clone(),
            origin: self.origin.clone(),
            types: PhantomData,
        }
    }
}

fn now_us() -> u64 {
    unix_us(SystemTime::now())
}

impl<S: Inner<B, RB>, B: RequestBody, RB: ResponseBody> Exchange<S, B, RB> {
    // The paths that go to the origin are boxed where they are entered: the hit path's
    // future (allocated per request, moved as it is built) stays small — measured: the
    // unboxed state machine made memmove ~5 % of a cached hit.
    pub(crate) async fn serve(self, request: Request<B>) -> Answer<RB> {
        let (parts, body) = request.into_parts();
        let policy = &self.shared.policy;
        let head_only = parts.method == Method::HEAD;
        if parts.method != Method::GET && !head_only {
            let safe = matches!(parts.method, Method::OPTIONS | Method::TRACE);
            return if safe {
                Box::pin(self.pass(parts, body, None)).await
            } else {
                Box::pin(self.unsafe_method(parts, body)).await
            };
        }
        let cc = if policy.request_directives {
            CacheControl::from_headers(&parts.headers)
        } else {
            CacheControl::default()
        };
        if cc.no_store {
            return Box::pin(self.pass(parts, body, Some("no-store"))).await;
        }
        if parts.headers.contains_key(COOKIE) && !policy.cookies {
            return Box::pin(self.pass(parts, body, Some("cookie"))).await;
        }
        let ctx = Arc::new(Ctx {
            primary: policy.key.primary(&policy.route, &parts),
            parts,
            cc,
            head_only,
            shared: self.shared.clone(),
        });
        self.cached(ctx).await
    }

    /// A cacheable request: the primary key, then the variant `Vary` selects.
    async fn cached(self, ctx: Arc<Ctx>) -> Answer<RB> {
        let mut key = ctx.primary.clone();
        if ctx.cc.only_if_cached {
            // Never to the origin (§5.2.1.7): what is stored, or 504.
            if let Ok(Some(entry)) = self.shared.cache.get::<Entry>(&key).await
                && let Entry::Response(r) = &*entry
                && r.matches(ctx.headers())
            {
                return self
                    .judge(&ctx, &key, &entry, r, false, false, Forward::UriMiss)
                    .await;
            }
            return self.error_answer(StatusCode::GATEWAY_TIMEOUT, "only-if-cached", &ctx, &key);
        }
        let mut fwd = Forward::UriMiss;
        for _ in 0..2 {
            let (entry, loaded, collapsed) = match self.lookup(&ctx, &key).await {
                Looked::Found {
                    entry,
                    loaded,
                    collapsed,
                } => (entry, loaded, collapsed),
                Looked::Live(answer, detail) => {
                    let status = CacheStatus {
                        forward: Some(fwd),
                        forward_status: Some(answer.status().as_u16()),
                        detail: Some(detail),
                        ..CacheStatus::default()
                    };
                    self.shared.counters.miss.increment(1);
                    return self.finish(answer, &ctx, status, &key);
                }
                // The request this one waited on gave up (its own `collapse_wait`, a dropped
                // connection): go alone rather than fail.
                Looked::Failed(Error::Abandoned(_)) => {
                    return Box::pin(self.pass_shared(&ctx, &key, fwd, "collapse-abandoned")).await;
                }
                Looked::Failed(Error::KeyTooLong { .. }) => {
                    // Nothing to collapse on or store under: straight to the origin.
                    return Box::pin(self.pass_shared(&ctx, &key, fwd, "key-too-long")).await;
                }
                Looked::Failed(error) => return self.failed(&error, &ctx, &key),
                Looked::Waited => {
                    return Box::pin(self.pass_shared(&ctx, &key, fwd, "collapse-timeout")).await;
                }
            };
            let Entry::Response(r) = &*entry else {
                return Box::pin(self.pass_shared(&ctx, &key, fwd, "hit-for-pass")).await;
            };
            if r.matches(ctx.headers()) {
                return self
                    .judge(&ctx, &key, &entry, r, loaded, collapsed, fwd)
                    .await;
            }
            let Some((fields, _)) = &r.vary else { break };
            let Some(selected) = vary_of(fields).secondary_key(ctx.headers()) else {
                break;
            };
            key = format!("{}\n#vary:{selected}", ctx.primary);
            fwd = Forward::VaryMiss;
        }
        // The variant key's entry varies differently from the primary's (the origin changed
        // its `Vary`): go to the origin rather than guess.
        Box::pin(self.pass_shared(&ctx, &key, fwd, "vary-changed")).await
    }

    /// Looks `key` up, loading it from the origin (collapsed) on a miss.
    async fn lookup(&self, ctx: &Arc<Ctx>, key: &str) -> Looked<RB> {
        let flight = Flight::new();
        let loader = {
            let (flight, this, ctx) = (flight.clone(), self.clone(), ctx.clone());
            move || async move {
                flight.started.store(true, Ordering::SeqCst);
                let tags = url_tags(&ctx.key());
                this.fill(ctx.origin_head(), ctx.headers().clone(), tags, &flight.slot)
                    .await
            }
        };
        let (started, slot) = (&flight.started, &flight.slot);
        let start = now_us();
        let read = EntryOptions::default();
        let found = self
            .shared
            .cache
            .get_or_load_adaptive::<Entry, _, _, _>(key, &read, loader);
        let mut found = std::pin::pin!(found);
        let result = match tokio::time::timeout(self.shared.policy.collapse_wait, &mut found).await
        {
            Ok(result) => result,
            Err(_) if started.load(Ordering::SeqCst) => found.await,
            Err(_) => return Looked::Waited,
        };
        let ours = started.load(Ordering::SeqCst);
        if ours && let Some(answer) = slot.take() {
            let detail = match &result {
                Ok(Some(e)) => match &**e {
                    Entry::Pass { reason } => reason_token(reason),
                    Entry::Response(_) => "not-stored",
                },
                _ => "origin-error",
            };
            return Looked::Live(answer, detail);
        }
        match result {
            Ok(Some(entry)) => {
                let collapsed =
                    !ours && matches!(&*entry, Entry::Response(r) if r.response_time >= start);
                Looked::Found {
                    entry,
                    loaded: ours,
                    collapsed,
                }
            }
            Ok(None) => Looked::Failed(Error::NotFound(key.to_owned())),
            Err(e) => Looked::Failed(e),
        }
    }

    /// Answers from a stored response.
    fn answer_stored(
        &self,
        r: &StoredResponse,
        ctx: &Arc<Ctx>,
        now: u64,
        status: CacheStatus,
        key: &str,
    ) -> Answer<RB> {
        let answer = answer::stored(r, ctx.headers(), ctx.head_only, now);
        self.finish(answer, ctx, status, key)
    }

    /// Adds the cache's headers (and drops the body of a `HEAD`).
    fn finish(
        &self,
        mut answer: Answer<RB>,
        ctx: &Arc<Ctx>,
        mut status: CacheStatus,
        key: &str,
    ) -> Answer<RB> {
        let policy = &self.shared.policy;
        if policy.debug {
            status.key = Some(key.to_owned());
        }
        if ctx.head_only {
            *answer.body_mut() = CacheBody::empty();
        }
        answer::mark(&mut answer, &status, &policy.cache_name);
        answer
    }

    /// The lookup failed: the origin's failure, a collapsed waiter's view of it, or the
    /// cache refusing (a key too long, too many loads).
    fn failed(&self, error: &Error, ctx: &Arc<Ctx>, key: &str) -> Answer<RB> {
        let status = match error {
            Error::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::LoaderTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            _ => origin_failure(error)
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::BAD_GATEWAY),
        };
        tracing::debug!(%error, "cache lookup failed");
        self.error_answer(status, "origin-error", ctx, key)
    }

    fn error_answer(
        &self,
        status: StatusCode,
        detail: &'static str,
        ctx: &Arc<Ctx>,
        key: &str,
    ) -> Answer<RB> {
        self.shared.counters.error.increment(1);
        let answer = status_answer(status);
        let cs = CacheStatus {
            forward: Some(Forward::UriMiss),
            forward_status: Some(status.as_u16()),
            detail: Some(detail),
            ..CacheStatus::default()
        };
        self.finish(answer, ctx, cs, key)
    }
}

/// An answer of the cache's own: the status and its reason as the body.
fn status_answer<RB>(status: StatusCode) -> Answer<RB> {
    let mut answer = Response::new(CacheBody::full(Bytes::from(format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    ))));
    *answer.status_mut() = status;
    answer
}

/// The URL and path-prefix tags of a request.
fn url_tags(key: &RequestKey) -> Vec<String> {
    let mut tags = Vec::with_capacity(key.prefix_tags.len() + 1);
    tags.push(key.url_tag.clone());
    tags.extend(key.prefix_tags.iter().cloned());
    tags
}

/// A stored reason as the static token `Cache-Status` takes.
fn reason_token(reason: &str) -> &'static str {
    [
        "method",
        "status",
        "no-store",
        "private",
        "authorization",
        "set-cookie",
        "vary-star",
        "no-freshness",
        "too-large",
    ]
    .into_iter()
    .find(|t| *t == reason)
    .unwrap_or("not-stored")
}

/// The origin's failure status, if `error` is (or wraps) one.
fn origin_failure(error: &Error) -> Option<u16> {
    match error {
        Error::Loader { source, .. } => source.downcast_ref::<OriginFailed>().map(|f| f.0),
        _ => None,
    }
}
