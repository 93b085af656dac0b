//! One request through the cache: look it up, judge what is stored, go to the origin when
//! needed (collapsed with every other request for the same key, here and on other instances),
//! store what may be stored, and answer.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{
    AUTHORIZATION, CONTENT_LOCATION, COOKIE, IF_MODIFIED_SINCE, IF_NONE_MATCH, LOCATION,
};
use http::{HeaderMap, Method, Request, Response, StatusCode, request};
use http_body::Body;
use serde::{Deserialize, Serialize};
use strata::{EntryOptions, Error, Loaded};
use tower_service::Service;

use crate::BoxError;
use crate::answer;
use crate::body::CacheBody;
use crate::cache_control::CacheControl;
use crate::cache_status::{CacheStatus, Forward};
use crate::http_cache::Shared;
use crate::key::{RequestKey, url_tag};
use crate::origin::{Head, Origin, Read, is_failure, keep, read_capped};
use crate::storable::NotStored;
use crate::stored::{Entry, StoredResponse, unix_us, vary_of};
use crate::tags::{CACHE_GROUP_INVALIDATION, groups, response_tags};
use crate::vary::Vary;

type Answer<RB> = Response<CacheBody<RB>>;

/// The origin answered with a failure status (for `stale-if-error` and collapsed waiters).
#[derive(Debug)]
struct OriginFailed(u16);

impl std::fmt::Display for OriginFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "origin answered {}", self.0)
    }
}

impl std::error::Error for OriginFailed {}

/// What a revalidation did, told to everyone who waited on it (stored nowhere).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
enum Revalidated {
    /// The stored response was freshened (`304`) or replaced; the origin's status.
    Stored(u16),
    /// The origin's new answer cannot be stored: each waiter asks it itself.
    NotStored,
    /// Another revalidation had already replaced the stale response.
    Current,
}

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

    /// The request the origin gets: `GET`, the keyed query and headers only (and
    /// `Authorization`: the origin decides whether its answer may be shared, §3.5).
    fn origin_head(&self) -> Head {
        let policy = &self.shared.policy;
        let mut headers = policy.key.origin_headers(&self.parts.headers);
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

impl<S, B, RB> Exchange<S, B, RB>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Default + Send + 'static,
    RB: Body<Data = Bytes> + Send + Unpin + 'static,
    RB::Error: Into<BoxError>,
{
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

    /// The loader: one trip to the origin for a missing key.
    async fn fill(
        self,
        head: Head,
        headers: HeaderMap,
        url_tags: Vec<String>,
        slot: &Slot<RB>,
    ) -> Result<Loaded<Entry>, BoxError> {
        let policy = &self.shared.policy;
        let request_time = SystemTime::now();
        let response = self.origin.clone().send(head, B::default(), true).await?;
        let response_time = SystemTime::now();
        let (parts, body) = response.into_parts();
        if is_failure(parts.status) {
            let status = parts.status.as_u16();
            slot.put(Response::from_parts(parts, CacheBody::streaming(body)));
            return Err(Box::new(OriginFailed(status)));
        }
        let taken = self
            .take(
                parts,
                body,
                request_time,
                response_time,
                &headers,
                url_tags.clone(),
                slot,
            )
            .await?;
        match taken {
            Ok((stored, options)) => {
                Ok(Loaded::value(Entry::Response(stored)).with_options(options))
            }
            Err(reason) => {
                let pass = Loaded::value(Entry::Pass {
                    reason: reason.into(),
                });
                Ok(if reason == NotStored::Authorization.as_str() {
                    // About this request, not the URL: later ones should still collapse.
                    pass.with_options(
                        EntryOptions::ttl(Duration::from_secs(1))
                            .skip_l1()
                            .skip_l2(),
                    )
                } else {
                    pass.with_options(EntryOptions::ttl(policy.hit_for_pass).tags(url_tags))
                })
            }
        }
    }

    /// A response in stored form, and the options to store it with.
    fn stored(
        &self,
        kept: &crate::origin::Keep,
        parts: &http::response::Parts,
        body: Bytes,
        response_time: SystemTime,
        request: &HeaderMap,
        mut tags: Vec<String>,
    ) -> (StoredResponse, EntryOptions) {
        let vary = match Vary::of(&parts.headers) {
            Vary::Fields(fields) if !fields.is_empty() => {
                let vary = Vary::Fields(fields);
                let selected = vary.secondary_key(request).unwrap_or_default();
                let Vary::Fields(fields) = vary else {
                    unreachable!("built as Fields above")
                };
                Some((
                    fields.iter().map(|f| f.as_str().to_owned()).collect(),
                    selected,
                ))
            }
            _ => None,
        };
        tags.extend(response_tags(&parts.headers));
        let stored = kept.store(
            parts.status,
            &parts.headers,
            body,
            response_time,
            vary,
            tags.clone(),
        );
        (stored, EntryOptions::ttl(kept.hold).tags(tags))
    }

    /// A stored response that matches the request: fresh, usable stale, or to revalidate.
    #[allow(clippy::too_many_arguments)]
    async fn judge(
        &self,
        ctx: &Arc<Ctx>,
        key: &str,
        entry: &Arc<Entry>,
        r: &StoredResponse,
        loaded: bool,
        collapsed: bool,
        fwd: Forward,
    ) -> Answer<RB> {
        let now = now_us();
        let ttl = r.ttl_ms(now);
        if loaded || collapsed {
            self.shared.counters.miss.increment(1);
            let status = CacheStatus {
                forward: Some(fwd),
                forward_status: Some(r.status),
                ttl: Some(ttl / 1000),
                stored: true,
                collapsed,
                ..CacheStatus::default()
            };
            return self.answer_stored(r, ctx, now, status, key);
        }
        let cc = &ctx.cc;
        let age = u64::try_from(r.age(now).as_millis()).unwrap_or(u64::MAX);
        let requested = cc.no_cache
            || cc.max_age.is_some_and(|m| age > m.saturating_mul(1000))
            || cc
                .min_fresh
                .is_some_and(|m| ttl < i64::try_from(m.saturating_mul(1000)).unwrap_or(i64::MAX));
        let soft_purged = self.shared.soft_purged(r).await;
        if ttl > 0 && !r.no_cache && !requested && !soft_purged {
            self.shared.counters.hit.increment(1);
            let status = CacheStatus {
                hit: true,
                ttl: Some(ttl / 1000),
                ..CacheStatus::default()
            };
            return self.answer_stored(r, ctx, now, status, key);
        }
        let stale_for = u64::try_from(-ttl).unwrap_or(0);
        let may_be_stale = !r.must_revalidate && !r.no_cache && !requested;
        let within_swr = may_be_stale && stale_for < r.swr;
        let client_accepts = may_be_stale
            && ttl <= 0
            && cc
                .max_stale
                .is_some_and(|m| m.is_none_or(|m| stale_for <= m.saturating_mul(1000)));
        if within_swr || client_accepts {
            self.shared.counters.stale.increment(1);
            let background = self.clone();
            let (head, headers, key_owned, entry) = (
                ctx.origin_head(),
                ctx.headers().clone(),
                key.to_owned(),
                entry.clone(),
            );
            tokio::spawn(async move {
                if let Entry::Response(r) = &*entry {
                    let _ = background.revalidate(head, headers, &key_owned, r).await;
                }
            });
            let status = CacheStatus {
                hit: true,
                stale: true,
                ttl: Some(ttl / 1000),
                detail: Some(if within_swr {
                    "stale-while-revalidate"
                } else {
                    "max-stale"
                }),
                ..CacheStatus::default()
            };
            return self.answer_stored(r, ctx, now, status, key);
        }
        if cc.only_if_cached {
            return self.error_answer(StatusCode::GATEWAY_TIMEOUT, "only-if-cached", ctx, key);
        }
        let fwd = if requested {
            Forward::Request
        } else {
            Forward::Stale
        };
        Box::pin(self.revalidate_now(ctx, key, r, fwd, stale_for)).await
    }

    /// Revalidates a stale response before answering; `stale-if-error` when the origin fails.
    async fn revalidate_now(
        &self,
        ctx: &Arc<Ctx>,
        key: &str,
        r: &StoredResponse,
        fwd: Forward,
        stale_for: u64,
    ) -> Answer<RB> {
        let outcome = self
            .revalidate(ctx.origin_head(), ctx.headers().clone(), key, r)
            .await;
        let forward_status = |s: u16| CacheStatus {
            forward: Some(fwd),
            forward_status: Some(s),
            ..CacheStatus::default()
        };
        let failed_status = match outcome {
            Reval::Live(answer) => {
                self.shared.counters.miss.increment(1);
                let status = CacheStatus {
                    detail: Some("not-stored"),
                    ..forward_status(answer.status().as_u16())
                };
                return self.finish(answer, ctx, status, key);
            }
            Reval::Done(Ok(Revalidated::Current), _) => {
                if let Ok(Some(entry)) = self.shared.cache.get::<Entry>(key).await
                    && let Entry::Response(current) = &*entry
                {
                    self.shared.counters.hit.increment(1);
                    let now = now_us();
                    let status = CacheStatus {
                        hit: true,
                        ttl: Some(current.ttl_ms(now) / 1000),
                        collapsed: true,
                        ..CacheStatus::default()
                    };
                    return self.answer_stored(current, ctx, now, status, key);
                }
                return Box::pin(self.pass_shared(ctx, key, fwd, "revalidated-gone")).await;
            }
            Reval::Done(Ok(Revalidated::Stored(origin_status)), ours) => {
                match self.shared.cache.get::<Entry>(key).await {
                    Ok(Some(entry)) => {
                        if let Entry::Response(fresh) = &*entry {
                            self.shared.counters.revalidated.increment(1);
                            let now = now_us();
                            let status = CacheStatus {
                                ttl: Some(fresh.ttl_ms(now) / 1000),
                                stored: true,
                                collapsed: !ours,
                                ..forward_status(origin_status)
                            };
                            return self.answer_stored(fresh, ctx, now, status, key);
                        }
                        return Box::pin(self.pass_shared(ctx, key, fwd, "hit-for-pass")).await;
                    }
                    // Purged or evicted meanwhile: ask the origin ourselves.
                    _ => {
                        return Box::pin(self.pass_shared(ctx, key, fwd, "revalidated-gone")).await;
                    }
                }
            }
            Reval::Done(Ok(Revalidated::NotStored), _) => {
                return Box::pin(self.pass_shared(ctx, key, fwd, "not-stored")).await;
            }
            Reval::Done(Err(error), _) => origin_failure(&error),
            Reval::Failed(answer) => Some(answer.status().as_u16()),
        };
        // The origin failed (an error status, or no answer at all).
        if stale_for < r.sie {
            self.shared.counters.stale.increment(1);
            let now = now_us();
            let status = CacheStatus {
                hit: true,
                stale: true,
                ttl: Some(r.ttl_ms(now) / 1000),
                detail: Some("stale-if-error"),
                ..forward_status(failed_status.unwrap_or(502))
            };
            return self.answer_stored(r, ctx, now, status, key);
        }
        let status = failed_status
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::BAD_GATEWAY);
        self.error_answer(status, "origin-error", ctx, key)
    }

    /// One conditional request for a stale response, shared by every request (on this
    /// instance) that finds it stale at the same time; stores the result under `key`.
    async fn revalidate(
        &self,
        mut head: Head,
        headers: HeaderMap,
        key: &str,
        r: &StoredResponse,
    ) -> Reval<RB> {
        let (etag, modified) = r.validators();
        if let Some(etag) = etag {
            head.headers.insert(IF_NONE_MATCH, etag.clone());
        }
        if let Some(modified) = modified {
            head.headers.insert(IF_MODIFIED_SINCE, modified.clone());
        }
        let flight = Flight::new();
        let previous = Previous {
            response_time: r.response_time,
            headers: r.header_map().clone(),
            body: r.body.clone(),
            vary: r.vary.clone(),
            tags: r.tags.clone(),
        };
        let loader = {
            let (flight, this, key) = (flight.clone(), self.clone(), key.to_owned());
            move || async move {
                flight.started.store(true, Ordering::SeqCst);
                this.refresh(head, headers, &key, previous, &flight.slot)
                    .await
                    .map(|outcome| {
                        // Told to the waiters, stored nowhere.
                        Loaded::value(outcome).with_options(
                            EntryOptions::ttl(Duration::from_secs(1))
                                .skip_l1()
                                .skip_l2(),
                        )
                    })
            }
        };
        let flight_key = format!("{key}\n#revalidate:{}", r.response_time);
        let local = EntryOptions::default().skip_l1().skip_l2();
        let result = self
            .shared
            .cache
            .get_or_load_adaptive::<Revalidated, _, _, _>(&flight_key, &local, loader)
            .await;
        let ours = flight.started.load(Ordering::SeqCst);
        if ours && let Some(answer) = flight.slot.take() {
            return if is_failure(answer.status()) {
                Reval::Failed(answer)
            } else {
                Reval::Live(answer)
            };
        }
        let result = result.and_then(|r| r.map(|r| *r).ok_or(Error::NotFound(flight_key)));
        Reval::Done(result, ours)
    }

    /// The revalidation's trip: a `304` freshens the stored response, a new response
    /// replaces it (or, not storable, leaves a hit-for-pass note in its place).
    async fn refresh(
        self,
        head: Head,
        headers: HeaderMap,
        key: &str,
        previous: Previous,
        slot: &Slot<RB>,
    ) -> Result<Revalidated, BoxError> {
        let cache = &self.shared.cache;
        // A request that read the stale response just before a revalidation stored the new
        // one would otherwise send a second conditional request for nothing.
        if let Ok(Some(current)) = cache.get::<Entry>(key).await
            && matches!(&*current, Entry::Response(c) if c.response_time != previous.response_time)
        {
            return Ok(Revalidated::Current);
        }
        let request_time = SystemTime::now();
        let response = self.origin.clone().send(head, B::default(), true).await?;
        let response_time = SystemTime::now();
        let (parts, body) = response.into_parts();
        let policy = &self.shared.policy;
        let url_tags: Vec<String> = previous
            .tags
            .iter()
            .filter(|t| t.starts_with("http:url:") || t.starts_with("http:prefix:"))
            .cloned()
            .collect();
        if parts.status == StatusCode::NOT_MODIFIED {
            // Freshen (§4.3.4): the stored response with the 304's header fields.
            let mut merged = previous.headers;
            for name in parts.headers.keys() {
                merged.remove(name);
            }
            for (name, value) in &parts.headers {
                merged.append(name.clone(), value.clone());
            }
            if let Ok(kept) = keep(
                policy,
                &headers,
                StatusCode::OK,
                &merged,
                request_time,
                response_time,
            ) {
                let stored = kept.store(
                    StatusCode::OK,
                    &merged,
                    previous.body,
                    response_time,
                    previous.vary,
                    previous.tags.clone(),
                );
                let options = EntryOptions::ttl(kept.hold).tags(previous.tags);
                cache.set(key, Entry::Response(stored), &options).await?;
                return Ok(Revalidated::Stored(304));
            }
            cache.invalidate(key).await?;
            return Ok(Revalidated::NotStored);
        }
        if is_failure(parts.status) {
            let status = parts.status.as_u16();
            slot.put(Response::from_parts(parts, CacheBody::streaming(body)));
            return Err(Box::new(OriginFailed(status)));
        }
        let status = parts.status.as_u16();
        match self
            .take(
                parts,
                body,
                request_time,
                response_time,
                &headers,
                url_tags.clone(),
                slot,
            )
            .await?
        {
            Ok((stored, options)) => {
                cache.set(key, Entry::Response(stored), &options).await?;
                Ok(Revalidated::Stored(status))
            }
            Err(reason) => {
                let pass = Entry::Pass {
                    reason: reason.into(),
                };
                let options = EntryOptions::ttl(policy.hit_for_pass).tags(url_tags);
                cache.set(key, pass, &options).await?;
                Ok(Revalidated::NotStored)
            }
        }
    }

    /// An origin response: in stored form with its options when it may be stored (its body
    /// read), else the reason — and the response itself put in `slot` for the requester.
    #[allow(clippy::too_many_arguments)]
    async fn take(
        &self,
        parts: http::response::Parts,
        body: RB,
        request_time: SystemTime,
        response_time: SystemTime,
        request: &HeaderMap,
        tags: Vec<String>,
        slot: &Slot<RB>,
    ) -> Result<Result<(StoredResponse, EntryOptions), &'static str>, BoxError> {
        let policy = &self.shared.policy;
        match keep(
            policy,
            request,
            parts.status,
            &parts.headers,
            request_time,
            response_time,
        ) {
            Ok(kept) => match read_capped(body, policy.max_body).await? {
                Read::Whole(bytes) => Ok(Ok(self.stored(
                    &kept,
                    &parts,
                    bytes,
                    response_time,
                    request,
                    tags,
                ))),
                Read::Over(prefix, rest) => {
                    slot.put(Response::from_parts(
                        parts,
                        CacheBody::prefixed(prefix, rest),
                    ));
                    Ok(Err("too-large"))
                }
            },
            Err(reason) => {
                slot.put(Response::from_parts(parts, CacheBody::streaming(body)));
                Ok(Err(reason.as_str()))
            }
        }
    }

    /// Not for the cache: the request goes to the origin as it came.
    async fn pass(
        self,
        parts: request::Parts,
        body: B,
        detail: Option<&'static str>,
    ) -> Answer<RB> {
        self.shared.counters.pass.increment(1);
        let head = Head {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
            extensions: parts.extensions,
        };
        let fwd = if detail.is_some() {
            Forward::Request
        } else {
            Forward::Method
        };
        let status = |s: u16| CacheStatus {
            forward: Some(fwd),
            forward_status: Some(s),
            detail,
            ..CacheStatus::default()
        };
        match self.origin.clone().send(head, body, false).await {
            Ok(response) => {
                let (parts, body) = response.into_parts();
                let mut answer = Response::from_parts(parts, CacheBody::streaming(body));
                let cs = status(answer.status().as_u16());
                answer::mark(&mut answer, &cs, &self.shared.policy.cache_name);
                answer
            }
            Err(error) => {
                tracing::warn!(%error, "origin request failed");
                self.shared.counters.error.increment(1);
                let mut answer = bad_gateway();
                answer::mark(&mut answer, &status(502), &self.shared.policy.cache_name);
                answer
            }
        }
    }

    /// A cacheable request that goes to the origin on its own (hit-for-pass, a collapse that
    /// waited too long): what comes back is stored if it may be.
    async fn pass_shared(
        &self,
        ctx: &Arc<Ctx>,
        key: &str,
        fwd: Forward,
        detail: &'static str,
    ) -> Answer<RB> {
        self.shared.counters.pass.increment(1);
        let request_time = SystemTime::now();
        let response = match self
            .origin
            .clone()
            .send(ctx.origin_head(), B::default(), true)
            .await
        {
            Ok(response) => response,
            Err(error) => {
                tracing::warn!(%error, "origin request failed");
                return self.error_answer(StatusCode::BAD_GATEWAY, "origin-error", ctx, key);
            }
        };
        let response_time = SystemTime::now();
        let (parts, body) = response.into_parts();
        let origin_status = parts.status.as_u16();
        let slot = Slot::new();
        let taken = if is_failure(parts.status) {
            slot.put(Response::from_parts(parts, CacheBody::streaming(body)));
            Ok(Err("origin-error"))
        } else {
            self.take(
                parts,
                body,
                request_time,
                response_time,
                ctx.headers(),
                url_tags(&ctx.key()),
                &slot,
            )
            .await
        };
        let status = CacheStatus {
            forward: Some(fwd),
            forward_status: Some(origin_status),
            detail: Some(detail),
            ..CacheStatus::default()
        };
        match taken {
            Ok(Ok((stored, options))) => {
                let now = now_us();
                let answer = answer::stored(&stored, ctx.headers(), ctx.head_only, now);
                let stored_ok = self
                    .shared
                    .cache
                    .set(key, Entry::Response(stored), &options)
                    .await
                    .is_ok();
                let status = CacheStatus {
                    stored: stored_ok,
                    ..status
                };
                self.finish(answer, ctx, status, key)
            }
            Ok(Err(_)) => match slot.take() {
                Some(answer) => self.finish(answer, ctx, status, key),
                None => self.error_answer(StatusCode::BAD_GATEWAY, "origin-error", ctx, key),
            },
            Err(error) => {
                tracing::warn!(%error, "origin body failed");
                self.error_answer(StatusCode::BAD_GATEWAY, "origin-error", ctx, key)
            }
        }
    }

    /// `POST`, `PUT`, `DELETE`, …: passed on; a non-error answer invalidates the target URI
    /// and the URIs in `Location` and `Content-Location` (RFC 9111 §4.4), and the groups in
    /// `Cache-Group-Invalidation` (RFC 9875).
    async fn unsafe_method(self, parts: request::Parts, body: B) -> Answer<RB> {
        let policy = self.shared.policy.clone();
        let target = policy.key.key(&policy.route, &parts);
        let host = parts.headers.get(http::header::HOST).cloned();
        let mut answer = self.clone().pass(parts, body, None).await;
        let status = answer.status();
        if status.is_success() || status.is_redirection() {
            let mut tags = vec![target.url_tag];
            for name in [LOCATION, CONTENT_LOCATION] {
                let Some(uri) = answer
                    .headers()
                    .get(&name)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<http::Uri>().ok())
                else {
                    continue;
                };
                let same_origin = uri.authority().is_none_or(|a| {
                    host.as_ref()
                        .is_some_and(|h| h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()))
                });
                if same_origin {
                    tags.push(url_tag(
                        uri.path(),
                        policy.key.query_key().filter(uri.query()).as_deref(),
                    ));
                }
            }
            tags.extend(groups(answer.headers(), &CACHE_GROUP_INVALIDATION));
            for tag in &tags {
                if let Err(error) = self.shared.cache.invalidate_tag(tag).await {
                    tracing::warn!(%error, tag, "invalidation after an unsafe method failed");
                }
            }
            let cs = CacheStatus {
                forward: Some(Forward::Method),
                forward_status: Some(status.as_u16()),
                detail: Some("invalidated"),
                ..CacheStatus::default()
            };
            answer::mark(&mut answer, &cs, &policy.cache_name);
        }
        answer
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
        let mut answer = Response::new(CacheBody::full(Bytes::from(format!(
            "{} {}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ))));
        *answer.status_mut() = status;
        let cs = CacheStatus {
            forward: Some(Forward::UriMiss),
            forward_status: Some(status.as_u16()),
            detail: Some(detail),
            ..CacheStatus::default()
        };
        self.finish(answer, ctx, cs, key)
    }
}

/// What a revalidation gave this request.
enum Reval<RB> {
    /// This request's own trip, not stored.
    Live(Answer<RB>),
    /// This request's own trip, a failure status.
    Failed(Answer<RB>),
    /// The shared outcome (and whether this request made the trip).
    Done(Result<Revalidated, Error>, bool),
}

/// The parts of a stale response a revalidation needs to freshen it.
struct Previous {
    response_time: u64,
    headers: HeaderMap,
    body: Bytes,
    vary: Option<(Vec<String>, String)>,
    tags: Vec<String>,
}

fn bad_gateway<RB>() -> Answer<RB> {
    let mut answer = Response::new(CacheBody::full(Bytes::from_static(b"502 Bad Gateway\n")));
    *answer.status_mut() = StatusCode::BAD_GATEWAY;
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
