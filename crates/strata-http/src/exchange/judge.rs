//! Judging a stored response against a request: fresh, usable stale, or to revalidate first.

use std::sync::Arc;

use http::StatusCode;

use super::revalidate::{Reval, Revalidated};
use super::{Answer, Ctx, Exchange, Inner, RequestBody, ResponseBody, now_us, origin_failure};
use crate::cache_status::{CacheStatus, Forward};
use crate::stored::{Entry, StoredResponse};

impl<S: Inner<B, RB>, B: RequestBody, RB: ResponseBody> Exchange<S, B, RB> {
    /// A stored response that matches the request: fresh, usable stale, or to revalidate.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn judge(
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
    pub(super) async fn revalidate_now(
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
        // The origin failed (an error status, or no answer at all). Stale if the response, the
        // route or the request (`stale-if-error=N`, RFC 5861 §3) allows, and nothing forbids.
        let requested = ctx.cc.stale_if_error.map_or(0, |s| s.saturating_mul(1000));
        let may_be_stale = !r.must_revalidate && !r.no_cache;
        if stale_for < r.sie || (may_be_stale && stale_for < requested) {
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
}
