//! Revalidating a stale response: one conditional request per stale response per instance,
//! shared by every request that finds it stale meanwhile.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http::header::{HeaderMap, IF_MODIFIED_SINCE, IF_NONE_MATCH};
use serde::{Deserialize, Serialize};
use strata::{EntryOptions, Error, Loaded};

use super::trip::Trip;
use super::{Answer, Exchange, Flight, Inner, OriginFailed, RequestBody, ResponseBody, Slot};
use crate::BoxError;
use crate::origin::{Head, is_failure, keep};
use crate::stored::{Entry, StoredResponse, entry_options};

/// What a revalidation did, told to everyone who waited on it (stored nowhere).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(super) enum Revalidated {
    /// The stored response was freshened (`304`) or replaced; the origin's status.
    Stored(u16),
    /// The origin's new answer cannot be stored: each waiter asks it itself.
    NotStored,
    /// Another revalidation had already replaced the stale response.
    Current,
}

/// What a revalidation gave this request.
pub(super) enum Reval<RB> {
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

impl<S: Inner<B, RB>, B: RequestBody, RB: ResponseBody> Exchange<S, B, RB> {
    /// One conditional request for a stale response, shared by every request (on this
    /// instance) that finds it stale at the same time; stores the result under `key`.
    pub(super) async fn revalidate(
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
                        Loaded::value(outcome)
                            .with_options(entry_options(Duration::from_secs(1)).skip_l1().skip_l2())
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
        let url_tags: Vec<String> = previous
            .tags
            .iter()
            .filter(|t| t.starts_with("http:url:") || t.starts_with("http:prefix:"))
            .cloned()
            .collect();
        match self.trip(head, &headers, url_tags.clone(), slot).await? {
            Trip::Storable(stored, options) => {
                let status = stored.status;
                cache.set(key, Entry::Response(stored), &options).await?;
                Ok(Revalidated::Stored(status))
            }
            Trip::NotModified(parts, _, request_time, response_time) => {
                // Freshen (§4.3.4): the stored response with the 304's header fields.
                let mut merged = previous.headers;
                for name in parts.headers.keys() {
                    merged.remove(name);
                }
                for (name, value) in &parts.headers {
                    merged.append(name.clone(), value.clone());
                }
                let policy = &self.shared.policy;
                let status = StatusCode::OK;
                let Ok(kept) = keep(
                    policy,
                    &headers,
                    status,
                    &merged,
                    request_time,
                    response_time,
                ) else {
                    cache.invalidate(key).await?;
                    return Ok(Revalidated::NotStored);
                };
                let stored = kept.store(
                    status,
                    &merged,
                    previous.body,
                    response_time,
                    previous.vary,
                    previous.tags.clone(),
                );
                let options = entry_options(kept.hold).tags(previous.tags);
                cache.set(key, Entry::Response(stored), &options).await?;
                Ok(Revalidated::Stored(304))
            }
            Trip::Failed(status) => Err(Box::new(OriginFailed(status))),
            Trip::NotStored(reason) => {
                let pass = Entry::Pass {
                    reason: reason.into(),
                };
                let options = entry_options(self.shared.policy.hit_for_pass).tags(url_tags);
                cache.set(key, pass, &options).await?;
                Ok(Revalidated::NotStored)
            }
        }
    }
}
