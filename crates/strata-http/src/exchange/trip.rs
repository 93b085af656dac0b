//! A trip to the origin: send, sort what comes back (store it, note why not, or a failure),
//! and the loader that makes one trip for everyone waiting on a missing key.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::HeaderMap;
use http::{Response, StatusCode, response};
use strata::{EntryOptions, Loaded};

use super::{Exchange, Inner, OriginFailed, RequestBody, ResponseBody, Slot};
use crate::BoxError;
use crate::body::CacheBody;
use crate::origin::{Head, Keep, Read, is_failure, keep, read_capped};
use crate::storable::NotStored;
use crate::stored::{Entry, StoredResponse, entry_options};
use crate::tags::response_tags;
use crate::vary::Vary;

/// What one trip to the origin brought back. Whatever is not stored is put in the trip's
/// slot, for the request that made it.
// Made and matched once per trip to the origin, never kept: boxing the big variant would
// only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(super) enum Trip<RB> {
    /// A response that may be stored, in stored form with the options to store it with.
    Storable(StoredResponse, EntryOptions),
    /// `304 Not Modified`: its head, the body (none, normally), and the trip's times.
    NotModified(response::Parts, RB, SystemTime, SystemTime),
    /// A response that may not be stored, and why.
    NotStored(&'static str),
    /// A failure status (`stale-if-error` may apply).
    Failed(u16),
}

impl<S: Inner<B, RB>, B: RequestBody, RB: ResponseBody> Exchange<S, B, RB> {
    /// Sends `head` (for a request with `request` headers) and sorts the answer; `tags` are
    /// the URL's, to which the response's own are added.
    pub(super) async fn trip(
        &self,
        head: Head,
        request: &HeaderMap,
        tags: Vec<String>,
        slot: &Slot<RB>,
    ) -> Result<Trip<RB>, BoxError> {
        let policy = &self.shared.policy;
        let request_time = SystemTime::now();
        let response = self.origin.clone().send(head, B::default()).await?;
        let response_time = SystemTime::now();
        let (parts, body) = response.into_parts();
        if parts.status == StatusCode::NOT_MODIFIED {
            return Ok(Trip::NotModified(parts, body, request_time, response_time));
        }
        if is_failure(parts.status) {
            let status = parts.status.as_u16();
            slot.put(Response::from_parts(parts, CacheBody::streaming(body)));
            return Ok(Trip::Failed(status));
        }
        let kept = keep(
            policy,
            request,
            parts.status,
            &parts.headers,
            request_time,
            response_time,
        );
        let reason = match kept {
            Ok(kept) => match read_capped(body, policy.max_body).await? {
                Read::Whole(bytes) => {
                    let (stored, options) =
                        stored(&kept, &parts, bytes, response_time, request, tags);
                    return Ok(Trip::Storable(stored, options));
                }
                Read::Over(prefix, rest) => {
                    slot.put(Response::from_parts(
                        parts,
                        CacheBody::prefixed(prefix, rest),
                    ));
                    "too-large"
                }
            },
            Err(reason) => {
                slot.put(Response::from_parts(parts, CacheBody::streaming(body)));
                reason.as_str()
            }
        };
        Ok(Trip::NotStored(reason))
    }

    /// The loader of a missing key: one trip, its answer stored (or noted as not storable,
    /// so that later requests do not queue behind one another's trips).
    pub(super) async fn fill(
        self,
        head: Head,
        request: HeaderMap,
        url_tags: Vec<String>,
        slot: &Slot<RB>,
    ) -> Result<Loaded<Entry>, BoxError> {
        let reason = match self.trip(head, &request, url_tags.clone(), slot).await? {
            Trip::Storable(stored, options) => {
                return Ok(Loaded::value(Entry::Response(stored)).with_options(options));
            }
            Trip::Failed(status) => return Err(Box::new(OriginFailed(status))),
            // A 304 to a request without validators: not an answer to keep.
            Trip::NotModified(parts, body, _, _) => {
                slot.put(Response::from_parts(parts, CacheBody::streaming(body)));
                NotStored::Status.as_str()
            }
            Trip::NotStored(reason) => reason,
        };
        let pass = Loaded::value(Entry::Pass {
            reason: reason.into(),
        });
        Ok(if reason == NotStored::Authorization.as_str() {
            // About this request, not the URL: later ones should still collapse.
            pass.with_options(entry_options(Duration::from_secs(1)).skip_l1().skip_l2())
        } else {
            pass.with_options(entry_options(self.shared.policy.hit_for_pass).tags(url_tags))
        })
    }
}

/// A response in stored form, and the options to store it with.
pub(super) fn stored(
    kept: &Keep,
    parts: &response::Parts,
    body: Bytes,
    response_time: SystemTime,
    request: &HeaderMap,
    mut tags: Vec<String>,
) -> (StoredResponse, EntryOptions) {
    let vary = match Vary::of(&parts.headers) {
        vary @ Vary::Fields(_) => match &vary {
            Vary::Fields(fields) if !fields.is_empty() => Some((
                fields.iter().map(|f| f.as_str().to_owned()).collect(),
                vary.secondary_key(request).unwrap_or_default(),
            )),
            _ => None,
        },
        Vary::Any => None,
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
    (stored, entry_options(kept.hold).tags(tags))
}
