//! HTTP caching for Strata: the shared-cache semantics of RFC 9111, as the tower layer and
//! `strata gateway` apply them.
//!
//! This crate starts with the rules, each a small pure function over `http` types, so that
//! the layer and the gateway decide alike and every rule is tested on its own:
//!
//! - [`CacheControl`]: the directives of a request or response, parsed leniently (an invalid
//!   or conflicting freshness directive reads as stale, as §4.2.1 asks).
//! - [`storable`]: whether a shared cache may store a response — method, status, `no-store`,
//!   `private`, `Authorization` (§3.5), `Set-Cookie`, `Vary: *` — with per-route
//!   [`StoreOptIns`], all off by default.
//! - [`freshness_lifetime`] and [`current_age`]: `s-maxage` > `max-age` > `Expires` − `Date`,
//!   heuristic freshness off; age per §4.2.3.
//! - [`Vary`]: the request headers that select a variant, and the variant's key part,
//!   escaped so no header value can forge another.
//! - [`CacheStatus`]: the `Cache-Status` header of RFC 9211 and `X-Cache: HIT|MISS|STALE`.
//!
//! ```
//! use http::{HeaderMap, HeaderValue, Method, StatusCode, header::CACHE_CONTROL};
//! use strata_http::{storable, CacheControl, StoreOptIns, freshness_lifetime};
//!
//! let mut response = HeaderMap::new();
//! response.insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=60, s-maxage=300"));
//! let ok = storable(&Method::GET, &HeaderMap::new(), StatusCode::OK, &response, StoreOptIns::default());
//! assert!(ok.is_ok());
//! let cc = CacheControl::from_headers(&response);
//! assert_eq!(freshness_lifetime(&cc, &response), Some(std::time::Duration::from_secs(300)));
//! ```
#![warn(missing_docs, unreachable_pub)]
#![forbid(unsafe_code)]

mod cache_control;
mod cache_status;
mod freshness;
mod storable;
mod vary;

pub use cache_control::{CacheControl, MAX_DELTA_SECONDS};
pub use cache_status::{CacheStatus, Forward};
pub use freshness::{current_age, freshness_lifetime, http_date};
pub use storable::{NotStored, StoreOptIns, storable};
pub use vary::Vary;
