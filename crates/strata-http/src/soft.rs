//! Soft purges: stored responses marked stale rather than removed, so that
//! `stale-while-revalidate` and `stale-if-error` still apply to them.
//!
//! A soft purge of a tag writes a marker `http:~soft:<tag>` = purge time into the cache
//! itself, and bumps one epoch marker; both travel through L2 and the invalidation log like
//! any entry, so every instance sees them. A hit checks the epoch (one L1 lookup) and only
//! when a soft purge happened after the response was stored does it look at the markers of
//! the response's tags.

use std::convert::Infallible;
use std::time::Duration;

use strata::EntryOptions;

use crate::policy::MAX_TTL;
use crate::shared::Shared;
use crate::stored::StoredResponse;

const EPOCH: &str = "http:~soft";

fn marker_key(tag: &str) -> String {
    format!("http:~soft:{tag}")
}

/// Markers live as long as any response may; absence is remembered an hour (a soft purge
/// replaces it everywhere through the log). Reading them counts nowhere: every hit reads the
/// epoch, which would otherwise double the reads counted, inflate the hit ratio and top the
/// hot keys.
fn marker_options() -> EntryOptions {
    EntryOptions::ttl(MAX_TTL)
        .negative_ttl(Duration::from_secs(3600))
        .uncounted()
}

impl Shared {
    /// When `key`'s marker was set (unix µs), if it was.
    async fn marker(&self, key: &str) -> Option<u64> {
        self.cache
            .get_or_load_optional::<u64, _, _, Infallible>(key, &marker_options(), || async {
                Ok(None)
            })
            .await
            .ok()
            .flatten()
            .map(|at| *at)
    }

    /// Whether a soft purge of one of `r`'s tags came after `r` was stored.
    pub(crate) async fn soft_purged(&self, r: &StoredResponse) -> bool {
        if self
            .marker(EPOCH)
            .await
            .is_none_or(|at| at < r.response_time)
        {
            return false;
        }
        for tag in &r.tags {
            if self
                .marker(&marker_key(tag))
                .await
                .is_some_and(|at| at >= r.response_time)
            {
                return true;
            }
        }
        false
    }

    /// Marks every response tagged `tag` stale, as of `now` (unix µs).
    pub(crate) async fn soft_purge(&self, tag: &str, now: u64) -> strata::Result<()> {
        self.cache
            .set(&marker_key(tag), now, &marker_options())
            .await?;
        self.cache.set(EPOCH, now, &marker_options()).await
    }
}
