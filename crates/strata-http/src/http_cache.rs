//! [`HttpCache`]: a route's policy and the [`HybridCache`] its responses live in.

use std::sync::Arc;

use metrics::Counter;
use strata::HybridCache;

use crate::policy::Policy;
use crate::service::HttpCacheLayer;

/// An HTTP response cache for one route: its [`Policy`] over a [`HybridCache`] (whose L1,
/// L2, invalidation log and leases it uses as they are configured — so with Redis, responses
/// are shared, collapsed and purged across every instance).
///
/// Cheap to clone. Add it to a service with [`layer`](Self::layer); purge with
/// [`purge`](Self::purge). Several routes may share one `HybridCache` (keys carry the route's
/// name); tags and prefixes are then purged across all of them.
#[derive(Clone, Debug)]
pub struct HttpCache {
    pub(crate) shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cache: HybridCache,
    pub(crate) policy: Policy,
    pub(crate) counters: Counters,
}

/// `strata_http_responses_total{route, cache}`, registered once so the hit path does not
/// build label sets.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) hit: Counter,
    pub(crate) stale: Counter,
    pub(crate) miss: Counter,
    pub(crate) revalidated: Counter,
    pub(crate) pass: Counter,
    pub(crate) error: Counter,
}

impl Counters {
    fn new(route: &str) -> Self {
        let c = |outcome: &'static str| metrics::counter!("strata_http_responses_total", "route" => route.to_owned(), "cache" => outcome);
        Counters {
            hit: c("hit"),
            stale: c("stale"),
            miss: c("miss"),
            revalidated: c("revalidated"),
            pass: c("pass"),
            error: c("error"),
        }
    }
}

impl HttpCache {
    /// A cache for `policy`'s route, storing in `cache`. Metrics are registered with the
    /// `metrics` recorder installed at this point.
    pub fn new(cache: HybridCache, policy: Policy) -> Self {
        let counters = Counters::new(&policy.route);
        HttpCache {
            shared: Arc::new(Shared {
                cache,
                policy,
                counters,
            }),
        }
    }

    /// The tower layer that serves requests through this cache.
    pub fn layer(&self) -> HttpCacheLayer {
        HttpCacheLayer::new(self.clone())
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.shared.policy
    }

    /// The underlying hybrid cache.
    pub fn hybrid(&self) -> &HybridCache {
        &self.shared.cache
    }
}
