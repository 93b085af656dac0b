//! What every request of a route shares: its cache, its policy and its counters.

use metrics::Counter;
use strata::HybridCache;

use crate::policy::Policy;

/// A route's shared state, behind the `Arc` of an [`HttpCache`](crate::HttpCache) and of
/// every service its layer makes.
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
    pub(crate) fn new(route: &str) -> Self {
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
