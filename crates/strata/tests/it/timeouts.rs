//! Loader timeouts, on Tokio's paused clock: timers fire as soon as the runtime is idle, so
//! these tests take no wall time and do not depend on the machine's speed.

use std::sync::Arc;
use std::time::Duration;

use strata::{EntryOptions, Error, MemoryLog, MemoryStore};
use strata_testkit::source::{Db, Product};

use crate::{TTL, cache_on, clock};

#[tokio::test(start_paused = true)]
async fn soft_timeout_returns_stale_and_the_load_fills_the_cache_later() {
    let (store, log, clock, db) = (MemoryStore::default(), MemoryLog::new(), clock(), Db::new());
    let options = EntryOptions::ttl(TTL)
        .fail_safe(Duration::from_secs(3600))
        .soft_timeout(Duration::from_millis(100));
    let cache = cache_on(&store, &log, &clock, options).await;
    let _: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();

    clock.advance(TTL + Duration::from_secs(1));
    db.update();
    db.set_delay(Duration::from_secs(2));
    let started = tokio::time::Instant::now();
    let stale: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    assert_eq!(stale.version, 0);
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(100),
        "answered at the soft timeout"
    );

    // The slow load goes on and lands (each wait moves the paused clock).
    strata_testkit::eventually(
        "the background load to fill L1",
        Duration::from_secs(10),
        || async {
            cache
                .get::<Product>("p")
                .await
                .unwrap()
                .is_some_and(|p| p.version == 1)
        },
    )
    .await;
    let fresh: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    assert_eq!(fresh.version, 1);
    assert_eq!(db.calls(), 2, "the background load filled the cache");
    assert_eq!(cache.stats().stale_served, 1);
}

#[tokio::test(start_paused = true)]
async fn hard_timeout_fails_without_a_stale_value() {
    let (store, log, clock, db) = (MemoryStore::default(), MemoryLog::new(), clock(), Db::new());
    let options = EntryOptions::ttl(TTL).hard_timeout(Duration::from_millis(250));
    let cache = cache_on(&store, &log, &clock, options).await;
    db.set_delay(Duration::from_secs(5));
    let err = cache
        .get_or_load::<Product, _, _, _>("p", db.loader(1))
        .await;
    assert!(
        matches!(err, Err(Error::LoaderTimeout { after, .. }) if after == Duration::from_millis(250)),
        "{err:?}"
    );
    assert_eq!(cache.stats().loader_timeouts, 1);
}

#[tokio::test(start_paused = true)]
async fn hard_timeout_with_fail_safe_serves_stale() {
    let (store, log, clock, db) = (MemoryStore::default(), MemoryLog::new(), clock(), Db::new());
    let options = EntryOptions::ttl(TTL)
        .fail_safe(Duration::from_secs(3600))
        .hard_timeout(Duration::from_millis(250));
    let cache = cache_on(&store, &log, &clock, options).await;
    let _: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    clock.advance(TTL + Duration::from_secs(1));
    db.set_delay(Duration::from_secs(5));
    let stale: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    assert_eq!(stale.version, 0);
    assert_eq!(cache.stats().loader_timeouts, 1);
}
