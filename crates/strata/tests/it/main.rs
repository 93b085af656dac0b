//! Integration tests of the library on its embedded defaults (no Redis needed).
//! The same behaviour against a real Redis is tested in `strata-redis`.

mod allocations;
mod expiry;
mod fencing;
mod invalidation;
mod limits;
mod read_path;
mod timeouts;
mod write_behind;

use std::sync::Arc;
use std::time::Duration;

use strata::{EntryOptions, HybridCache, ManualClock, MemoryLog, MemoryStore};

pub(crate) const TTL: Duration = Duration::from_secs(60);

#[global_allocator]
static ALLOCATOR: allocations::Counting = allocations::Counting;

/// A cache on a manual clock; its store and log can be shared with other caches.
pub(crate) async fn cache_on(
    store: &MemoryStore,
    log: &MemoryLog,
    clock: &Arc<ManualClock>,
    options: EntryOptions,
) -> HybridCache {
    HybridCache::builder("test")
        .l2(store.clone())
        .invalidation(log.clone())
        .clock(clock.clone())
        .default_entry(options)
        .build()
        .await
        .expect("valid configuration")
}

pub(crate) fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(1_700_000_000_000))
}
