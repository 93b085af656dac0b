//! A route's cache policy: what the defaults of RFC 9111 become for this route.

use std::time::Duration;

use http::{HeaderMap, HeaderName};

use crate::cache_control::CacheControl;
use crate::key::KeyPolicy;
use crate::storable::StoreOptIns;

/// How one route caches. The defaults are a strict shared cache: freshness only from the
/// origin's headers (targeted fields first, RFC 9213), nothing private or personal stored,
/// every request header forwarded and variants keyed by the response's `Vary`.
///
/// ```
/// use std::time::Duration;
/// use strata_http::{KeyPolicy, Policy, QueryKey};
/// let policy = Policy::new("products")
///     .default_ttl(Duration::from_secs(30))
///     .stale_if_error(Duration::from_secs(300))
///     .key(KeyPolicy::default().query(QueryKey::Except(vec!["utm_source".into()])));
/// assert_eq!(policy.route(), "products");
/// ```
#[derive(Debug, Clone)]
pub struct Policy {
    pub(crate) route: String,
    pub(crate) key: KeyPolicy,
    pub(crate) ttl: Option<Duration>,
    pub(crate) default_ttl: Option<Duration>,
    pub(crate) swr: Option<Duration>,
    pub(crate) sie: Option<Duration>,
    pub(crate) keep: Duration,
    pub(crate) max_ttl: Duration,
    pub(crate) opt_ins: StoreOptIns,
    pub(crate) cookies: bool,
    pub(crate) max_body: usize,
    pub(crate) collapse_wait: Duration,
    pub(crate) hit_for_pass: Duration,
    pub(crate) request_directives: bool,
    pub(crate) debug: bool,
    pub(crate) cache_name: String,
    pub(crate) targets: Vec<HeaderName>,
}

/// A response's cache directives as this cache reads them.
pub(crate) struct ResponseDirectives {
    pub(crate) cc: CacheControl,
    /// From a targeted field (RFC 9213): `Cache-Control` and `Expires` are ignored.
    pub(crate) targeted: bool,
}

/// The targeted fields honoured by default, first match wins: this cache's own, then the
/// one every CDN-class cache reads.
pub const DEFAULT_TARGETS: [&str; 2] = ["strata-cache-control", "cdn-cache-control"];

/// The longest any response is kept (a [`Policy::max_ttl`] may not exceed it): soft purges
/// are remembered this long.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

impl Policy {
    /// The defaults for a route named `route` (the name keeps routes' entries apart).
    pub fn new(route: impl Into<String>) -> Self {
        Policy {
            route: route.into(),
            key: KeyPolicy::default(),
            ttl: None,
            default_ttl: None,
            swr: None,
            sie: None,
            keep: Duration::from_secs(60),
            max_ttl: Duration::from_secs(24 * 3600),
            opt_ins: StoreOptIns::default(),
            cookies: false,
            max_body: 1 << 20,
            collapse_wait: Duration::from_secs(5),
            hit_for_pass: Duration::from_secs(30),
            request_directives: true,
            debug: false,
            cache_name: "strata".into(),
            targets: DEFAULT_TARGETS.map(HeaderName::from_static).to_vec(),
        }
    }

    /// The response's directives: from the first targeted field with a valid value, else
    /// from `Cache-Control`.
    pub(crate) fn directives(&self, response: &HeaderMap) -> ResponseDirectives {
        match CacheControl::targeted(response, &self.targets) {
            Some(cc) => ResponseDirectives { cc, targeted: true },
            None => ResponseDirectives {
                cc: CacheControl::from_headers(response),
                targeted: false,
            },
        }
    }

    /// The route's name.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// How keys are made (and what reaches the origin).
    pub fn key(mut self, key: KeyPolicy) -> Self {
        self.key = key;
        self
    }

    /// Freshness lifetime for every storable response, overriding the origin's
    /// `s-maxage`/`max-age`/`Expires` (`no-store` and `private` still hold).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Freshness lifetime for responses that give none (explicit heuristic freshness; off by
    /// default, as RFC 9111 §4.2.2 advises for a cache that cannot know better).
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = Some(ttl);
        self
    }

    /// `stale-while-revalidate` for responses that do not set it.
    pub fn stale_while_revalidate(mut self, d: Duration) -> Self {
        self.swr = Some(d);
        self
    }

    /// `stale-if-error` for responses that do not set it.
    pub fn stale_if_error(mut self, d: Duration) -> Self {
        self.sie = Some(d);
        self
    }

    /// How long a stale response with a validator (`ETag`, `Last-Modified`) is kept to be
    /// revalidated with a conditional request (default 60 s).
    pub fn keep_for_revalidation(mut self, d: Duration) -> Self {
        self.keep = d;
        self
    }

    /// The longest a response is kept, however long the origin says (default 1 day, at most
    /// [`MAX_TTL`]).
    pub fn max_ttl(mut self, d: Duration) -> Self {
        self.max_ttl = d.min(MAX_TTL);
        self
    }

    /// What this route may store beyond the defaults (`Set-Cookie`, `private`, responses to
    /// `Authorization`).
    pub fn store_opt_ins(mut self, opt_ins: StoreOptIns) -> Self {
        self.opt_ins = opt_ins;
        self
    }

    /// Serve requests that carry `Cookie` from the cache (the cookie is then not sent to the
    /// origin). Off by default: such requests go to the origin and nothing is stored.
    pub fn cache_requests_with_cookies(mut self, yes: bool) -> Self {
        self.cookies = yes;
        self
    }

    /// The largest body stored (default 1 MiB, below the cache's default `max_value_bytes`
    /// of 4 MiB — raise both together); larger ones are streamed through.
    pub fn max_body_bytes(mut self, max: usize) -> Self {
        self.max_body = max;
        self
    }

    /// How long a request waits on another's trip to the origin for the same key before it
    /// goes itself (default 5 s).
    pub fn collapse_wait(mut self, d: Duration) -> Self {
        self.collapse_wait = d;
        self
    }

    /// How long "this URL is not cacheable" is remembered (default 30 s), during which its
    /// requests go to the origin without queueing.
    pub fn hit_for_pass(mut self, d: Duration) -> Self {
        self.hit_for_pass = d;
        self
    }

    /// Whether the client's `Cache-Control` (`no-cache`, `max-age`, `min-fresh`,
    /// `max-stale`, `only-if-cached`) is honoured (default `true`).
    pub fn honour_request_directives(mut self, yes: bool) -> Self {
        self.request_directives = yes;
        self
    }

    /// Show the cache key in `Cache-Status` (it may reveal request details; default off).
    pub fn debug(mut self, yes: bool) -> Self {
        self.debug = yes;
        self
    }

    /// The targeted cache-control fields (RFC 9213) this cache obeys, in order of precedence
    /// (default [`DEFAULT_TARGETS`]: `Strata-Cache-Control`, then `CDN-Cache-Control`). The
    /// first one a response carries with a valid value replaces its `Cache-Control` and
    /// `Expires` for this cache's storage and freshness decisions; downstream caches and
    /// clients still get every field. Empty: `Cache-Control` alone decides.
    pub fn targets(mut self, targets: impl IntoIterator<Item = HeaderName>) -> Self {
        self.targets = targets.into_iter().collect();
        self
    }

    /// The name in `Cache-Status` (default `strata`).
    pub fn cache_name(mut self, name: impl Into<String>) -> Self {
        self.cache_name = name.into();
        self
    }
}
