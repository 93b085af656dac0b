//! Following invalidation logs: a service's `invalidate_tag("product:42")` purges the
//! gateway's responses tagged `product:42` too; and every invalidation of a followed
//! namespace or of the gateway's own is noted for the dashboard.

use std::sync::Arc;

use strata::HybridCache;
use strata::InvalidationLog;
use strata::invalidation::{LogEvent, Target};

use crate::dashboard::Dashboard;

/// Follows each of `namespaces` on `log`, purging the tags they invalidate from `cache`, and
/// `cache`'s own namespace (its cache applies those itself), noting all in `dashboard`.
pub(crate) async fn follow(
    log: Arc<dyn InvalidationLog>,
    namespaces: &[String],
    cache: HybridCache,
    dashboard: Arc<Dashboard>,
) -> Result<(), strata::Error> {
    let own = cache.namespace().to_owned();
    for namespace in namespaces.iter().chain([&own]) {
        let mut events = log.follow(namespace).await?;
        let purge_into = (*namespace != own).then(|| cache.clone());
        let namespace = namespace.clone();
        let dashboard = dashboard.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let LogEvent::Apply(invalidation) = event else {
                    continue;
                };
                dashboard.saw(&namespace, &invalidation.target);
                // Keys are the service's own; whole-namespace clears are too: only tags name
                // what responses carry.
                if let (Some(cache), Target::Tag(tag)) = (&purge_into, invalidation.target) {
                    metrics::counter!("strata_gateway_followed_purges_total", "namespace" => namespace.clone())
                        .increment(1);
                    if let Err(error) = cache.invalidate_tag(&tag).await {
                        tracing::warn!(%error, tag, namespace, "gateway: purging a followed tag");
                    }
                }
            }
        });
    }
    Ok(())
}
