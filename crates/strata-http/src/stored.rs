//! What the cache stores for a URL: a response with what is needed to judge its freshness
//! later, or a note that the URL is not cacheable just now.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, ETAG, LAST_MODIFIED};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use strata::{Codec, EntryOptions};

/// One cache entry.
// Entries live behind an `Arc` in L1; boxing the response would add an allocation and a
// pointer chase to every hit to save bytes on the rare pass note.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Entry {
    /// A stored response.
    Response(StoredResponse),
    /// "Hit-for-pass": the last response for this key could not be stored, so requests go
    /// straight to the origin instead of queueing behind one another's trips.
    Pass {
        /// Why (a [`NotStored`](crate::NotStored) token, or `too-large`).
        reason: String,
    },
}

/// A response as stored, with its freshness worked out when it was stored.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, Bytes)>,
    pub(crate) body: Bytes,
    /// When the response was received (unix µs: fine enough that a lookup can tell a
    /// response stored while it waited from one stored before it began).
    pub(crate) response_time: u64,
    /// Its age when it was received (§4.2.3 `corrected_initial_age`), ms.
    pub(crate) initial_age: u64,
    /// How long it is fresh, from its own headers or the route's override, ms.
    pub(crate) lifetime: u64,
    /// `stale-while-revalidate`, ms.
    pub(crate) swr: u64,
    /// `stale-if-error`, ms.
    pub(crate) sie: u64,
    /// `no-cache`: revalidate before every use.
    pub(crate) no_cache: bool,
    /// `must-revalidate` (or `proxy-revalidate`, or `s-maxage`): never served stale, except
    /// under stale-if-error when the origin cannot be reached (RFC 9111 §4.2.4 allows none;
    /// we do not either).
    pub(crate) must_revalidate: bool,
    /// The request headers `Vary` names, and their values in the request that stored it.
    pub(crate) vary: Option<(Vec<String>, String)>,
    /// The tags it was stored with (its URL's, its path prefixes', the origin's).
    pub(crate) tags: Vec<String>,
    /// The headers as a map, built on first use and then only cloned.
    #[serde(skip)]
    pub(crate) map: OnceLock<HeaderMap>,
}

/// Microseconds since the epoch.
pub(crate) fn unix_us(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl StoredResponse {
    /// Its headers (header names and values were valid when stored; anything that no longer
    /// parses — foreign bytes in L2 — is dropped rather than served).
    pub(crate) fn header_map(&self) -> &HeaderMap {
        self.map.get_or_init(|| {
            let mut map = HeaderMap::with_capacity(self.headers.len());
            for (name, value) in &self.headers {
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_maybe_shared(value.clone()),
                ) {
                    map.append(n, v);
                }
            }
            map
        })
    }

    /// The status (an invalid one in L2 reads as 502, never served as garbage).
    pub(crate) fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_GATEWAY)
    }

    /// Its current age.
    pub(crate) fn age(&self, now_us: u64) -> Duration {
        Duration::from_millis(self.initial_age)
            + Duration::from_micros(now_us.saturating_sub(self.response_time))
    }

    /// Freshness left (negative: stale for that long), ms.
    pub(crate) fn ttl_ms(&self, now_us: u64) -> i64 {
        let age = i64::try_from(self.age(now_us).as_millis()).unwrap_or(i64::MAX);
        i64::try_from(self.lifetime)
            .unwrap_or(i64::MAX)
            .saturating_sub(age)
    }

    /// Whether the request's headers select this variant.
    pub(crate) fn matches(&self, request: &HeaderMap) -> bool {
        match &self.vary {
            None => true,
            Some((fields, values)) => {
                vary_of(fields).secondary_key(request).as_ref() == Some(values)
            }
        }
    }

    /// A validator to revalidate with, if it has one.
    pub(crate) fn validators(&self) -> (Option<&HeaderValue>, Option<&HeaderValue>) {
        let h = self.header_map();
        (h.get(ETAG), h.get(LAST_MODIFIED))
    }

    /// The headers to keep from a stored response (everything but the ones recomputed
    /// per answer).
    pub(crate) fn header_list(headers: &HeaderMap) -> Vec<(String, Bytes)> {
        headers
            .iter()
            .filter(|(n, _)| !matches!(n.as_str(), "age" | "cache-status" | "x-cache"))
            .filter(|(n, _)| *n != CONTENT_LENGTH)
            .map(|(n, v)| (n.as_str().to_owned(), Bytes::copy_from_slice(v.as_bytes())))
            .collect()
    }
}

/// The `Vary` of a stored field list.
pub(crate) fn vary_of(fields: &[String]) -> crate::Vary {
    crate::Vary::Fields(
        fields
            .iter()
            .filter_map(|f| HeaderName::from_bytes(f.as_bytes()).ok())
            .collect(),
    )
}

/// Options for storing an [`Entry`] with a lifetime of `ttl`: MessagePack, so a body and its
/// header values stay bytes (JSON would write them as arrays of numbers, ~4 × their size, and
/// a body well under the route's `max_body` could outgrow the cache's value limit).
pub(crate) fn entry_options(ttl: Duration) -> EntryOptions {
    EntryOptions::ttl(ttl).codec(Codec::MessagePack)
}
