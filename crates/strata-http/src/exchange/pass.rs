//! Requests the cache answers by going to the origin without a shared trip: those not for
//! the cache at all, unsafe methods (which invalidate), and cacheable requests that go alone.

use std::sync::Arc;

use http::header::{CONTENT_LOCATION, IF_RANGE, LOCATION, RANGE};
use http::{Response, StatusCode, request};

use super::trip::Trip;
use super::{
    Answer, Ctx, Exchange, Inner, RequestBody, ResponseBody, Slot, now_us, status_answer, url_tags,
};
use crate::answer;
use crate::body::CacheBody;
use crate::cache_status::{CacheStatus, Forward};
use crate::key::url_tag;
use crate::origin::Head;
use crate::stored::Entry;
use crate::tags::{CACHE_GROUP_INVALIDATION, groups};

impl<S: Inner<B, RB>, B: RequestBody, RB: ResponseBody> Exchange<S, B, RB> {
    /// Not for the cache: the request goes to the origin as it came.
    pub(super) async fn pass(
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
        match self.origin.clone().send(head, body).await {
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
                let mut answer = status_answer(StatusCode::BAD_GATEWAY);
                answer::mark(&mut answer, &status(502), &self.shared.policy.cache_name);
                answer
            }
        }
    }

    /// A cacheable request that goes to the origin on its own (hit-for-pass, a collapse that
    /// waited too long, a variant that changed): what comes back is stored if it may be.
    pub(super) async fn pass_shared(
        &self,
        ctx: &Arc<Ctx>,
        key: &str,
        fwd: Forward,
        detail: &'static str,
    ) -> Answer<RB> {
        self.shared.counters.pass.increment(1);
        let slot = Slot::new();
        let mut head = ctx.origin_head();
        if detail == "hit-for-pass" {
            // Not cacheable just now (too large, say): the origin answers the ranges itself,
            // rather than send the whole body for the cache to cut.
            for name in [RANGE, IF_RANGE] {
                if let Some(value) = ctx.headers().get(&name) {
                    head.headers.insert(name, value.clone());
                }
            }
        }
        let trip = self
            .trip(head, ctx.headers(), url_tags(&ctx.key()), &slot)
            .await;
        let status = |origin: u16| CacheStatus {
            forward: Some(fwd),
            forward_status: Some(origin),
            detail: Some(detail),
            ..CacheStatus::default()
        };
        let answer = match trip {
            Ok(Trip::Storable(stored, options)) => {
                let now = now_us();
                let answer = answer::stored(&stored, ctx.headers(), ctx.head_only, now);
                let origin = stored.status;
                let stored = self
                    .shared
                    .cache
                    .set(key, Entry::Response(stored), &options)
                    .await
                    .is_ok();
                return self.finish(
                    answer,
                    ctx,
                    CacheStatus {
                        stored,
                        ..status(origin)
                    },
                    key,
                );
            }
            Ok(Trip::NotModified(parts, body, _, _)) => {
                Some(Response::from_parts(parts, CacheBody::streaming(body)))
            }
            Ok(Trip::NotStored(_) | Trip::Failed(_)) => slot.take(),
            Err(error) => {
                tracing::warn!(%error, "origin request failed");
                None
            }
        };
        match answer {
            Some(answer) => {
                let origin = answer.status().as_u16();
                self.finish(answer, ctx, status(origin), key)
            }
            None => self.error_answer(StatusCode::BAD_GATEWAY, "origin-error", ctx, key),
        }
    }

    /// `POST`, `PUT`, `DELETE`, …: passed on; a non-error answer invalidates the target URI
    /// and the URIs in `Location` and `Content-Location` (RFC 9111 §4.4), and the groups in
    /// `Cache-Group-Invalidation` (RFC 9875).
    pub(super) async fn unsafe_method(self, parts: request::Parts, body: B) -> Answer<RB> {
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
}
