//! [`HttpCache`]: a route's policy and the [`HybridCache`] its responses live in.

use std::sync::Arc;

use strata::HybridCache;

use crate::policy::Policy;
use crate::service::HttpCacheLayer;
use crate::shared::{Counters, Shared};

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

impl HttpCacheLayer {
    /// The layer of `cache` (what [`HttpCache::layer`] returns).
    pub fn new(cache: HttpCache) -> Self {
        HttpCacheLayer {
            shared: cache.shared,
        }
    }
}
