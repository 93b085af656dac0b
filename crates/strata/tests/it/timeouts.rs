//! Loader timeouts, on Tokio's paused clock: timers fire as soon as the runtime is idle, so
//! these tests take no wall time and do not depend on the machine's speed.

use std::sync::Arc;
use std::time::Duration;

use strata::{Bulkhead, EntryOptions, Error, MemoryLog, MemoryStore, Resilience};
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
    cache.run_pending_tasks().await; // the fill has landed, before the clock moves

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
    cache.run_pending_tasks().await; // the fill has landed, before the clock moves
    clock.advance(TTL + Duration::from_secs(1));
    db.set_delay(Duration::from_secs(5));
    let stale: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    assert_eq!(stale.version, 0);
    assert_eq!(cache.stats().loader_timeouts, 1);
}

#[tokio::test(start_paused = true)]
async fn a_full_loader_bulkhead_serves_stale_or_says_overloaded() {
    let (store, clock, db) = (MemoryStore::default(), clock(), Db::new());
    let options = EntryOptions::ttl(TTL).fail_safe(Duration::from_secs(3600));
    let cache = strata::HybridCache::builder("test")
        .l2(store.clone())
        .clock(clock.clone())
        .default_entry(options)
        .resilience(
            Resilience::default().bulkhead(
                Bulkhead::default()
                    .loader_calls(2)
                    .max_wait(Duration::from_millis(50)),
            ),
        )
        .build()
        .await
        .unwrap();
    let _: Arc<Product> = cache.get_or_load("old", db.loader(9)).await.unwrap();
    clock.advance(TTL + Duration::from_secs(1));

    // Two slow loads take both slots.
    db.set_delay(Duration::from_secs(5));
    let busy: Vec<_> = (0..2)
        .map(|id| {
            let (cache, loader) = (cache.clone(), db.loader(id));
            tokio::spawn(async move {
                cache
                    .get_or_load::<Product, _, _, _>(&format!("slow{id}"), loader)
                    .await
            })
        })
        .collect();
    strata_testkit::eventually("both slots taken", Duration::from_secs(1), || async {
        db.calls() == 3
    })
    .await;

    let err = cache
        .get_or_load::<Product, _, _, _>("new", db.loader(3))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Overloaded { limit: 2, .. }),
        "no stale value: {err}"
    );
    let stale: Arc<Product> = cache.get_or_load("old", db.loader(9)).await.unwrap();
    assert_eq!(
        stale.id, 9,
        "the expired value serves while the loaders are busy"
    );
    let s = cache.stats();
    assert_eq!(
        (s.loader_rejected, db.calls()),
        (2, 3),
        "neither reached the loader"
    );

    for load in busy {
        load.await.unwrap().unwrap();
    }
    db.set_delay(Duration::ZERO);
    let _: Arc<Product> = cache.get_or_load("new", db.loader(3)).await.unwrap();
    assert_eq!(db.calls(), 4, "slots free again");
}
