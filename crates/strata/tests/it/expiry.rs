use std::sync::Arc;
use std::time::Duration;

use strata::{EntryOptions, Error, Loaded, MemoryLog, MemoryStore};
use strata_testkit::eventually;
use strata_testkit::source::{Db, Product};

use crate::{TTL, cache_on, clock};

const SEC: Duration = Duration::from_secs(1);

#[tokio::test]
async fn entries_are_reloaded_after_their_ttl() {
    let (store, log, clock, db) = (MemoryStore::default(), MemoryLog::new(), clock(), Db::new());
    let cache = cache_on(&store, &log, &clock, EntryOptions::ttl(TTL)).await;
    let v0: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    db.update();
    clock.advance(TTL - SEC);
    let still: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    assert_eq!(still.version, v0.version);
    clock.advance(2 * SEC);
    let fresh: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    assert_eq!((fresh.version, db.calls()), (1, 2));
}

#[tokio::test]
async fn a_short_l1_ttl_sends_reads_back_to_l2_not_to_the_loader() {
    let (store, log, clock, db) = (MemoryStore::default(), MemoryLog::new(), clock(), Db::new());
    let options = EntryOptions::ttl(TTL).l1_ttl(10 * SEC);
    let cache = cache_on(&store, &log, &clock, options).await;
    let _: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    cache.run_pending_tasks().await; // the fill has landed in L2
    clock.advance(11 * SEC);
    let _: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    let s = cache.stats();
    assert_eq!((db.calls(), s.l2_hits, s.l1_hits), (1, 1, 0));
    let _: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    assert_eq!(cache.stats().l1_hits, 1, "the L2 read refilled L1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_expired_values_are_served_at_once_and_refreshed_once() {
    let (store, log, clock, db) = (MemoryStore::default(), MemoryLog::new(), clock(), Db::new());
    let options = EntryOptions::ttl(TTL).soft_ttl(10 * SEC);
    let cache = cache_on(&store, &log, &clock, options).await;
    let _: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    db.update();
    db.set_delay(Duration::from_millis(100));
    clock.advance(11 * SEC);
    for _ in 0..10 {
        let stale: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
        assert_eq!(
            stale.version, 0,
            "served stale at once, not after the 100 ms load"
        );
    }
    eventually("the background refresh to land", 5 * SEC, || async {
        let p: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
        p.version == 1
    })
    .await;
    let s = cache.stats();
    assert_eq!(db.calls(), 2, "one background refresh for all stale reads");
    assert_eq!(s.background_refreshes, 1);
    assert!(s.stale_served >= 10, "{s:?}");
}

/// `get` answers a soft-expired value as it is — from L1, and from L2 on an instance whose L1
/// lacks it — refreshes nothing, and counts it as stale, as `get_or_load` does.
#[tokio::test]
async fn get_returns_soft_expired_values_unrefreshed_and_counts_them_stale() {
    let (store, log, clock, db) = (MemoryStore::default(), MemoryLog::new(), clock(), Db::new());
    let options = EntryOptions::ttl(TTL).soft_ttl(10 * SEC);
    let cache = cache_on(&store, &log, &clock, options.clone()).await;
    let other = cache_on(&store, &log, &clock, options).await;
    let _: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    cache.run_pending_tasks().await; // the fill has landed in L2
    let fresh = cache.get::<Product>("p").await.unwrap().unwrap();
    assert_eq!(fresh.version, 0);
    assert_eq!((cache.stats().l1_hits, cache.stats().stale_served), (1, 0));

    db.update();
    clock.advance(11 * SEC);
    let from_l1 = cache.get::<Product>("p").await.unwrap().unwrap();
    let from_l2 = other.get::<Product>("p").await.unwrap().unwrap();
    assert_eq!((from_l1.version, from_l2.version), (0, 0));
    let (a, b) = (cache.stats(), other.stats());
    assert_eq!((a.l1_hits, a.stale_served), (1, 1), "{a:?}");
    assert_eq!((b.l2_hits, b.stale_served), (0, 1), "{b:?}");
    cache.run_pending_tasks().await;
    assert_eq!(
        (db.calls(), a.background_refreshes),
        (1, 0),
        "nothing refreshed"
    );
}

#[tokio::test]
async fn fail_safe_serves_stale_and_throttles_the_failing_loader() {
    let (store, log, clock, db) = (MemoryStore::default(), MemoryLog::new(), clock(), Db::new());
    let options = EntryOptions::ttl(TTL)
        .fail_safe(Duration::from_secs(3600))
        .fail_safe_throttle(30 * SEC);
    let cache = cache_on(&store, &log, &clock, options).await;
    let _: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    clock.advance(TTL + SEC);
    db.set_failing(true);
    db.update();

    let stale: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    assert_eq!(
        (stale.version, db.calls()),
        (0, 2),
        "loader tried once, stale served"
    );
    for _ in 0..5 {
        let again: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
        assert_eq!(again.version, 0);
    }
    assert_eq!(db.calls(), 2, "no retries within the throttle");
    let s = cache.stats();
    assert_eq!((s.stale_served, s.loader_errors), (6, 1));

    clock.advance(31 * SEC);
    let _: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    assert_eq!(
        db.calls(),
        3,
        "retried after the throttle, still failing, still stale"
    );

    db.set_failing(false);
    clock.advance(31 * SEC);
    let fresh: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    assert_eq!(fresh.version, 1, "recovered");
}

#[tokio::test]
async fn fail_safe_ends_after_its_max_duration() {
    let (store, log, clock, db) = (MemoryStore::default(), MemoryLog::new(), clock(), Db::new());
    let options = EntryOptions::ttl(TTL).fail_safe(120 * SEC);
    let cache = cache_on(&store, &log, &clock, options).await;
    let _: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    cache.run_pending_tasks().await; // the fill has landed, before the clock moves
    db.set_failing(true);
    clock.advance(TTL + 121 * SEC);
    let err = cache
        .get_or_load::<Product, _, _, _>("p", db.loader(1))
        .await;
    assert!(matches!(err, Err(Error::Loader { .. })), "{err:?}");
}

#[tokio::test]
async fn without_fail_safe_an_expired_entry_is_not_served() {
    let (store, log, clock, db) = (MemoryStore::default(), MemoryLog::new(), clock(), Db::new());
    let cache = cache_on(&store, &log, &clock, EntryOptions::ttl(TTL)).await;
    let _: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    cache.run_pending_tasks().await; // the fill has landed, before the clock moves
    db.set_failing(true);
    clock.advance(TTL + SEC);
    let err = cache
        .get_or_load::<Product, _, _, _>("p", db.loader(1))
        .await;
    assert!(matches!(err, Err(Error::Loader { .. })), "{err:?}");
    assert_eq!(cache.stats().stale_served, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_refresh_reloads_a_hot_key_before_it_expires_while_hits_go_on() {
    let (store, log, clock, db) = (MemoryStore::default(), MemoryLog::new(), clock(), Db::new());
    // A huge β makes every hit early enough (the test is about what a refresh does, not when).
    let options = EntryOptions::ttl(TTL).early_refresh(1e12);
    let cache = cache_on(&store, &log, &clock, options).await;
    db.set_delay(Duration::from_millis(5)); // δ, kept in the envelope
    let v0: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    db.update();
    let hit: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    assert!(Arc::ptr_eq(&v0, &hit), "the hit answers at once, from L1");
    eventually("the early refresh to land", 10 * SEC, || async {
        cache
            .get::<Product>("p")
            .await
            .unwrap()
            .is_some_and(|p| p.version == 1)
    })
    .await;
    let s = cache.stats();
    assert!(s.early_refreshes >= 1, "{s:?}");
    assert_eq!(s.misses, 1, "no caller waited for a load after the first");
}

#[tokio::test]
async fn without_early_refresh_or_far_from_expiry_hits_load_nothing() {
    let (store, log, clock, db) = (MemoryStore::default(), MemoryLog::new(), clock(), Db::new());
    let options = EntryOptions::ttl(TTL).early_refresh(1e-9);
    let cache = cache_on(&store, &log, &clock, options).await;
    for _ in 0..100 {
        let _: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    }
    assert_eq!((db.calls(), cache.stats().early_refreshes), (1, 0));
}

/// A loader that decides its own TTL, as an HTTP cache does from `Cache-Control`.
fn adaptive(
    db: &Db,
    options: EntryOptions,
) -> impl FnOnce() -> std::pin::Pin<
    Box<dyn std::future::Future<Output = std::io::Result<Loaded<Product>>> + Send>,
> + Send
+ 'static {
    let load = db.loader(1);
    move || {
        Box::pin(async move {
            let product = load().await?;
            Ok(Loaded::value(product).with_options(options))
        })
    }
}

#[tokio::test]
async fn the_loader_can_decide_how_long_its_value_is_cached() {
    let (store, log, clock, db) = (MemoryStore::default(), MemoryLog::new(), clock(), Db::new());
    let cache = cache_on(&store, &log, &clock, EntryOptions::ttl(TTL)).await;
    let short = EntryOptions::ttl(10 * SEC);
    let _: Option<Arc<Product>> = cache
        .get_or_load_adaptive("p", &EntryOptions::ttl(TTL), adaptive(&db, short.clone()))
        .await
        .unwrap();
    clock.advance(9 * SEC);
    let _: Option<Arc<Product>> = cache
        .get_or_load_adaptive("p", &EntryOptions::ttl(TTL), adaptive(&db, short.clone()))
        .await
        .unwrap();
    assert_eq!(db.calls(), 1, "fresh for the loader's 10 s");
    clock.advance(2 * SEC);
    let _: Option<Arc<Product>> = cache
        .get_or_load_adaptive("p", &EntryOptions::ttl(TTL), adaptive(&db, short))
        .await
        .unwrap();
    assert_eq!(db.calls(), 2, "not for the call's hour");
}

#[tokio::test]
async fn an_uncacheable_value_is_answered_and_stored_nowhere() {
    let (store, log, clock, db) = (MemoryStore::default(), MemoryLog::new(), clock(), Db::new());
    let cache = cache_on(&store, &log, &clock, EntryOptions::ttl(TTL)).await;
    let nowhere = EntryOptions::ttl(TTL).skip_l1().skip_l2();
    for calls in 1..=2 {
        let p: Option<Arc<Product>> = cache
            .get_or_load_adaptive("p", &EntryOptions::ttl(TTL), adaptive(&db, nowhere.clone()))
            .await
            .unwrap();
        assert_eq!(p.map(|p| p.id), Some(1));
        assert_eq!(db.calls(), calls, "the next request loads again");
    }
    assert!(store.is_empty(), "nothing in L2");
    assert!(
        cache.get::<Product>("p").await.unwrap().is_none(),
        "nothing in L1"
    );
}
