//! Following services' invalidation logs: a service's `invalidate_tag("product:42")` purges
//! the gateway's responses tagged `product:42` too.

use std::sync::Arc;

use strata::HybridCache;
use strata::InvalidationLog;
use strata::invalidation::{LogEvent, Target};

/// Follows each of `namespaces` on `log`, purging the tags they invalidate from `cache`.
pub(crate) async fn follow(
    log: Arc<dyn InvalidationLog>,
    namespaces: &[String],
    cache: HybridCache,
) -> Result<(), strata::Error> {
    for namespace in namespaces {
        let mut events = log.follow(namespace).await?;
        let cache = cache.clone();
        let namespace = namespace.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let LogEvent::Apply(invalidation) = event else {
                    continue;
                };
                // Keys are the service's own; whole-namespace clears are too: only tags name
                // what responses carry.
                if let Target::Tag(tag) = invalidation.target {
                    metrics::counter!("strata_gateway_followed_purges_total", "namespace" => namespace.clone())
                        .increment(1);
                    if let Err(error) = cache.invalidate_tag(&tag).await {
                        eprintln!("gateway: purging tag {tag:?} from {namespace}: {error}");
                    }
                }
            }
        });
    }
    Ok(())
}
