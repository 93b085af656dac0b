//! HTTP caching for Strata: a tower layer that gives any axum or hyper service a shared
//! HTTP cache with the semantics of RFC 9111, over the same [`HybridCache`](strata::HybridCache)
//! (L1 + Redis L2 + invalidation log) the service uses for its data — and the rules
//! `strata gateway` runs on.
//!
//! ```no_run
//! # async fn demo() -> strata::Result<()> {
//! use axum::{Router, routing::get};
//! use strata::HybridCache;
//! use strata_http::{HttpCache, Policy, Purge};
//!
//! let cache = HybridCache::builder("catalog").build().await?;
//! let http = HttpCache::new(cache.clone(), Policy::new("api"));
//! let app: Router = Router::new()
//!     .route("/products/{id}", get(|| async {
//!         ([("cache-control", "public, max-age=60"), ("surrogate-key", "product:42")], "a teapot")
//!     }))
//!     .layer(http.layer());
//! // Later, when product 42 changes — on any instance:
//! cache.invalidate_tag("product:42").await?;
//! // or, from an admin endpoint:
//! http.purge(&Purge { prefixes: vec!["/products".into()], ..Purge::default() }).await?;
//! # Ok(()) }
//! ```
//!
//! What a request meets, in order:
//! - **Not for the cache**: unsafe methods go to the origin and, when they succeed,
//!   invalidate the target URI, `Location`, `Content-Location` and any
//!   `Cache-Group-Invalidation` groups (§4.4, RFC 9875); requests with `Cookie` (unless the
//!   [`Policy`] opts in) or `no-store` pass through untouched.
//! - **The key** ([`KeyPolicy`]): route, path, the kept query parameters and the keyed
//!   headers; the response's `Vary` selects variants. Every end-to-end header reaches the
//!   origin (as nginx and Varnish forward), except the client's conditionals and `Range`,
//!   which the cache answers itself; [`KeyPolicy::strip_unkeyed`] sends only keyed input on
//!   requests whose answer may be shared (cache poisoning through unkeyed headers).
//! - **Lookup and collapsing**: one trip to the origin per key, however many requests (and
//!   instances, with a Redis lease) ask at once; a follower waits at most the policy's
//!   `collapse_wait`. An answer that may not be stored is remembered ("hit-for-pass") so
//!   later requests go straight to the origin instead of queueing.
//! - **Freshness** (§4.2): a targeted field first (`Strata-Cache-Control`,
//!   `CDN-Cache-Control`, RFC 9213; [`Policy::targets`]), then `s-maxage` > `max-age` >
//!   `Expires`, heuristic freshness off,
//!   `Age` kept; `Vary` selects variants (`Vary: *` is never stored); `no-cache` and
//!   `must-revalidate` honoured; the client's `max-age`, `min-fresh`, `max-stale`,
//!   `no-cache` and `only-if-cached` too.
//! - **Stale**: revalidated with `If-None-Match`/`If-Modified-Since` (a `304` freshens the
//!   stored response); `stale-while-revalidate` answers at once and revalidates behind;
//!   `stale-if-error` (the response's, the request's or the policy's) answers when the origin
//!   fails, never past `must-revalidate`, `s-maxage` or `no-cache`. Clients' own validators
//!   get `304`s; `Range` requests get `206`/`416` cut from the stored response.
//! - **Storing**: [`storable()`] decides (`private`, `Authorization`, `Set-Cookie` per route),
//!   bodies over the cap are streamed, not stored; tags from `Surrogate-Key`, `Cache-Tag`
//!   and `Cache-Groups`.
//! - **Answering**: `Age`, `Cache-Status` (RFC 9211) and `X-Cache: HIT|MISS|STALE`.
//!
//! Purges ([`Purge`]: URLs, tags, prefixes; hard or soft) and a service's own
//! `invalidate_tag` go through the invalidation log, so every instance — gateways included —
//! drops them.
//!
//! The rules themselves are small pure functions, usable on their own: [`CacheControl`],
//! [`storable()`], [`freshness_lifetime`], [`current_age`], [`Vary`], [`CacheStatus`].

mod answer;
mod body;
mod cache_control;
mod cache_status;
mod exchange;
mod freshness;
mod hop;
mod http_cache;
mod key;
mod origin;
mod policy;
mod purge;
mod range;
mod service;
mod shared;
mod soft;
mod storable;
mod stored;
mod tags;
#[cfg(feature = "trace-context")]
pub mod trace_context;
mod vary;

/// The error type inner services may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub use answer::{CACHE_STATUS, X_CACHE};
pub use body::CacheBody;
pub use hop::strip_hop_by_hop;
pub use http_cache::HttpCache;
pub use key::{KeyPolicy, MAX_PREFIX_DEPTH, QueryKey, RequestKey};
pub use policy::{DEFAULT_TARGETS, MAX_TTL, Policy};
pub use purge::{MAX_PURGE_TARGETS, Purge};
pub use service::{HttpCacheLayer, HttpCacheService};
pub use tags::{
    CACHE_GROUP_INVALIDATION, CACHE_GROUPS, CACHE_TAG, MAX_TAG_BYTES, MAX_TAGS, SURROGATE_KEY,
    response_tags,
};

pub use cache_control::{CacheControl, MAX_DELTA_SECONDS};
pub use cache_status::{CacheStatus, Forward};
pub use freshness::{current_age, freshness_lifetime, http_date};
pub use storable::{NotStored, StoreOptIns, storable};
pub use vary::Vary;
