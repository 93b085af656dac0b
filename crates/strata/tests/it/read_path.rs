use std::sync::Arc;
use std::time::Duration;

use strata::{
    Codec, EntryOptions, Error, HybridCache, L1, L2Store, MemoryLease, MemoryLog, MemoryStore,
};
use strata_testkit::source::{Db, Product};

use crate::{TTL, cache_on, clock};

#[tokio::test]
async fn miss_then_hit_returns_the_same_arc_without_loading() {
    let db = Db::new();
    let cache = HybridCache::builder("svc").build().await.unwrap();
    let a: Arc<Product> = cache.get_or_load("p:1", db.loader(1)).await.unwrap();
    let b: Arc<Product> = cache.get_or_load("p:1", db.loader(1)).await.unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(db.calls(), 1);
    let s = cache.stats();
    assert_eq!((s.misses, s.l1_hits, s.loader_calls), (1, 1, 1));
}

/// A read looks at L1 when it is first polled, not when it is called: a value stored in
/// between is what it answers.
#[tokio::test]
async fn a_read_looks_when_polled_not_when_called() {
    let db = Db::new();
    let cache = HybridCache::builder("svc").build().await.unwrap();
    let read = cache.get_or_load::<Product, _, _, _>("p:1", db.loader(1));
    let stored = Product {
        name: "stored meanwhile".into(),
        ..db.fetch(1).await.unwrap()
    };
    cache
        .set("p:1", stored, cache.default_entry_options())
        .await
        .unwrap();
    let calls = db.calls();
    let got = read.await.unwrap();
    assert_eq!(got.name, "stored meanwhile");
    assert_eq!(db.calls(), calls, "the loader was not called");
    assert_eq!(cache.stats().l1_hits, 1);
}

#[tokio::test]
async fn uncounted_reads_count_nowhere() {
    let db = Db::new();
    let cache = HybridCache::builder("svc").build().await.unwrap();
    // Sampling starts with the first take; reads of both kinds, many more of the marker.
    assert!(cache.take_hot_keys().is_empty());
    let marker = EntryOptions::ttl(TTL).uncounted();
    for _ in 0..2_000 {
        let _: Arc<Product> = cache
            .get_or_load_with("marker", &marker, db.loader(1))
            .await
            .unwrap();
    }
    for _ in 0..200 {
        let _: Arc<Product> = cache.get_or_load("p:2", db.loader(2)).await.unwrap();
    }
    let batch = cache
        .get_many_or_load::<Product, _, _, std::io::Error>(
            &["marker", "p:3"],
            &marker,
            |keys| async {
                let p = |id| Product {
                    id,
                    version: 0,
                    name: format!("product {id}"),
                };
                Ok(keys.into_iter().map(|k| (k, p(3))).collect())
            },
        )
        .await
        .unwrap();
    assert!(batch.iter().all(Option::is_some), "{batch:?}");
    assert_eq!(db.calls(), 2, "the marker and p:2 loaded once each");
    let s = cache.stats();
    assert_eq!((s.misses, s.l1_hits, s.loader_calls), (1, 199, 1), "{s:?}");
    let hot: Vec<String> = cache.take_hot_keys().into_iter().map(|h| h.key).collect();
    assert!(hot.contains(&"p:2".to_owned()), "{hot:?}");
    assert!(!hot.contains(&"marker".to_owned()), "{hot:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_cold_reads_load_once() {
    let db = Db::new();
    db.set_delay(std::time::Duration::from_millis(50));
    let cache = HybridCache::builder("svc").build().await.unwrap();
    let reads: Vec<_> = (0..1000)
        .map(|_| {
            let (cache, db) = (cache.clone(), db.clone());
            tokio::spawn(async move {
                cache
                    .get_or_load::<Product, _, _, _>("hot", db.loader(7))
                    .await
            })
        })
        .collect();
    for r in reads {
        assert_eq!(r.await.unwrap().unwrap().id, 7);
    }
    assert_eq!(
        db.calls(),
        1,
        "single-flight: one load for 1,000 concurrent misses"
    );
    let s = cache.stats();
    assert_eq!(s.loader_calls, 1);
    assert_eq!(s.misses + s.waited + s.l1_hits, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_a_lease_load_a_cold_key_once() {
    let (store, lease, db) = (MemoryStore::default(), MemoryLease::new(), Db::new());
    db.set_delay(std::time::Duration::from_millis(50));
    let mut instances = Vec::new();
    for _ in 0..4 {
        let cache = HybridCache::builder("svc")
            .l2(store.clone())
            .lease(lease.clone())
            .build()
            .await
            .unwrap();
        instances.push(cache);
    }
    let reads: Vec<_> = (0..400)
        .map(|i| {
            let (cache, db) = (instances[i % 4].clone(), db.clone());
            tokio::spawn(async move {
                cache
                    .get_or_load::<Product, _, _, _>("cold", db.loader(3))
                    .await
            })
        })
        .collect();
    for r in reads {
        assert_eq!(r.await.unwrap().unwrap().id, 3);
    }
    assert_eq!(db.calls(), 1);
    let waits: u64 = instances.iter().map(|c| c.stats().lease_waits).sum();
    assert_eq!(
        waits, 3,
        "the three other instances waited for the holder's fill"
    );
}

#[tokio::test]
async fn a_second_instance_reads_l2_instead_of_loading() {
    let (store, log, clock) = (MemoryStore::default(), MemoryLog::new(), clock());
    let a = cache_on(&store, &log, &clock, EntryOptions::ttl(TTL)).await;
    let b = cache_on(&store, &log, &clock, EntryOptions::ttl(TTL)).await;
    let db = Db::new();
    let _: Arc<Product> = a.get_or_load("p:1", db.loader(1)).await.unwrap();
    a.run_pending_tasks().await; // a's fill has landed in L2
    let from_b: Arc<Product> = b.get_or_load("p:1", db.loader(1)).await.unwrap();
    assert_eq!(from_b.id, 1);
    assert_eq!(db.calls(), 1);
    assert_eq!(b.stats().l2_hits, 1);
}

#[tokio::test]
async fn without_l1_every_read_goes_to_l2() {
    let db = Db::new();
    let cache = HybridCache::builder("svc")
        .l1(L1::disabled())
        .build()
        .await
        .unwrap();
    for _ in 0..3 {
        let _: Arc<Product> = cache.get_or_load("p:1", db.loader(1)).await.unwrap();
    }
    let s = cache.stats();
    assert_eq!((db.calls(), s.l1_hits, s.l2_hits), (1, 0, 2));
}

#[tokio::test]
async fn skip_flags_bypass_their_level() {
    let store = MemoryStore::default();
    let db = Db::new();
    let cache = HybridCache::builder("svc")
        .l2(store.clone())
        .build()
        .await
        .unwrap();
    let no_l2 = cache.default_entry_options().clone().skip_l2();
    let _: Arc<Product> = cache
        .get_or_load_with("a", &no_l2, db.loader(1))
        .await
        .unwrap();
    assert!(store.is_empty(), "skip_l2 writes nothing to L2");
    let _: Arc<Product> = cache.get_or_load("a", db.loader(1)).await.unwrap();
    assert_eq!(db.calls(), 1, "but L1 holds it");

    let no_l1 = cache.default_entry_options().clone().skip_l1();
    let _: Arc<Product> = cache
        .get_or_load_with("b", &no_l1, db.loader(2))
        .await
        .unwrap();
    let _: Arc<Product> = cache
        .get_or_load_with("b", &no_l1, db.loader(2))
        .await
        .unwrap();
    assert_eq!(db.calls(), 2, "skip_l1 still reads L2");
    assert_eq!(cache.stats().l2_hits, 1);
    assert_eq!(store.len(), 1);
}

#[tokio::test]
async fn messagepack_values_round_trip_through_l2() {
    let store = MemoryStore::default();
    let build = || {
        HybridCache::builder("svc")
            .codec(Codec::MessagePack)
            .l1(L1::disabled())
            .l2(store.clone())
            .build()
    };
    let (a, b) = (build().await.unwrap(), build().await.unwrap());
    let db = Db::new();
    let loaded: Arc<Product> = a.get_or_load("p", db.loader(3)).await.unwrap();
    let read: Arc<Product> = b.get_or_load("p", db.loader(3)).await.unwrap();
    assert_eq!(loaded, read);
    assert_eq!(db.calls(), 1);
    let bytes = store.get("svc", "p").await.unwrap().unwrap();
    let env = strata::envelope::decode(&bytes).unwrap();
    assert_eq!(env.header.codec, Codec::MessagePack);
}

#[tokio::test]
async fn asking_for_another_type_is_an_error_not_a_panic() {
    let cache = HybridCache::builder("svc").build().await.unwrap();
    let db = Db::new();
    let _: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    let wrong = cache.get::<String>("p").await;
    assert!(
        matches!(wrong, Err(Error::TypeMismatch { .. })),
        "{wrong:?}"
    );
}

#[tokio::test]
async fn loader_errors_reach_the_caller_when_nothing_is_stale() {
    let cache = HybridCache::builder("svc").build().await.unwrap();
    let db = Db::new();
    db.set_failing(true);
    let err = cache
        .get_or_load::<Product, _, _, _>("p", db.loader(1))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Loader { key, .. } if key == "p"),
        "{err}"
    );
    assert!(err.to_string().contains("database unavailable"));
    assert_eq!(cache.stats().loader_errors, 1);
    db.set_failing(false);
    let p: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    assert_eq!(p.id, 1, "errors are not cached");
}

#[tokio::test]
async fn negative_results_are_cached_for_the_negative_ttl() {
    let (store, log, clock) = (MemoryStore::default(), MemoryLog::new(), clock());
    let cache = cache_on(&store, &log, &clock, EntryOptions::ttl(TTL)).await;
    let options = EntryOptions::ttl(TTL).negative_ttl(std::time::Duration::from_secs(5));
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let lookup = || {
        let calls = calls.clone();
        move || async move {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<Option<Product>, std::io::Error>(None)
        }
    };
    for _ in 0..3 {
        let found = cache
            .get_or_load_optional::<Product, _, _, _>("ghost", &options, lookup())
            .await;
        assert!(found.unwrap().is_none());
    }
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    let plain = cache
        .get_or_load::<Product, _, _, _>("ghost", Db::new().loader(1))
        .await;
    assert!(matches!(plain, Err(Error::NotFound(_))), "{plain:?}");

    clock.advance(std::time::Duration::from_secs(6));
    let found = cache
        .get_or_load_optional::<Product, _, _, _>("ghost", &options, lookup())
        .await;
    assert!(found.unwrap().is_none());
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "negative TTL elapsed"
    );
}

type Found = std::collections::HashMap<String, Product>;
type BatchLoad =
    std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Found>> + Send>>;
type Calls = Arc<std::sync::Mutex<Vec<Vec<String>>>>;

/// A batch loader over `db` that records the keys of each call and finds none of `absent`.
fn batch_loader(
    db: &Db,
    calls: &Calls,
    absent: &'static [&'static str],
) -> impl FnOnce(Vec<String>) -> BatchLoad + Send + 'static {
    let (db, calls) = (db.clone(), calls.clone());
    move |keys: Vec<String>| {
        calls.lock().unwrap().push(keys.clone());
        Box::pin(async move {
            let mut found = std::collections::HashMap::new();
            for key in keys.into_iter().filter(|k| !absent.contains(&k.as_str())) {
                let id = key.trim_start_matches("p:").parse().unwrap_or(0);
                found.insert(key, db.fetch(id).await?);
            }
            Ok(found)
        })
    }
}

/// The versions a batch answered, in order.
fn versions(got: Vec<Option<Arc<Product>>>) -> Vec<Option<u64>> {
    got.iter().map(|p| p.as_ref().map(|p| p.version)).collect()
}

/// Waits (bounded) until the cache answers `p:1` and `p:2` at `version`.
async fn both_at_version(cache: &HybridCache, version: u64, what: &str) {
    strata_testkit::eventually(what, Duration::from_secs(5), || async {
        let p1 = cache.get::<Product>("p:1").await.unwrap();
        let p2 = cache.get::<Product>("p:2").await.unwrap();
        p1.zip(p2)
            .is_some_and(|(a, b)| (a.version, b.version) == (version, version))
    })
    .await;
}

#[tokio::test]
async fn a_batch_reads_l1_then_l2_once_then_loads_the_rest_in_one_call() {
    let (store, log, clock, db) = (MemoryStore::default(), MemoryLog::new(), clock(), Db::new());
    let cache = cache_on(&store, &log, &clock, EntryOptions::ttl(TTL)).await;
    let other = cache_on(&store, &log, &clock, EntryOptions::ttl(TTL)).await;
    let _: Arc<Product> = cache.get_or_load("p:1", db.loader(1)).await.unwrap(); // L1
    let _: Arc<Product> = other.get_or_load("p:2", db.loader(2)).await.unwrap(); // L2 only
    other.run_pending_tasks().await; // its fill has landed in L2
    let calls = Arc::default();
    let options = EntryOptions::ttl(TTL);
    let got = cache
        .get_many_or_load(
            &["p:1", "p:2", "p:3", "p:4"],
            &options,
            batch_loader(&db, &calls, &["p:4"]),
        )
        .await
        .unwrap();
    let ids: Vec<Option<u64>> = got.iter().map(|p| p.as_ref().map(|p| p.id)).collect();
    assert_eq!(ids, [Some(1), Some(2), Some(3), None]);
    assert_eq!(
        *calls.lock().unwrap(),
        [vec!["p:3".to_owned(), "p:4".to_owned()]]
    );
    let s = cache.stats();
    // Misses and loader calls include the first read of p:1.
    assert_eq!(
        (s.l1_hits, s.l2_hits, s.misses, s.loader_calls),
        (1, 1, 3, 2)
    );
    // Everything is cached now, "not found" included: a second batch loads nothing.
    let again = cache
        .get_many_or_load(&["p:3", "p:4"], &options, batch_loader(&db, &calls, &[]))
        .await
        .unwrap();
    assert_eq!(again[0].as_ref().map(|p| p.id), Some(3));
    assert!(again[1].is_none(), "cached as not found");
    assert_eq!(calls.lock().unwrap().len(), 1);
}

/// A batch keeps `get_or_load`'s fail-safe: when the source fails, the stale value is served
/// and the source is not asked again for that key until the throttle has passed.
#[tokio::test]
async fn a_batch_serves_fail_safe_copies_and_throttles_the_failing_loader() {
    let (store, log, clock, db) = (MemoryStore::default(), MemoryLog::new(), clock(), Db::new());
    let throttle = Duration::from_secs(30);
    let options = EntryOptions::ttl(TTL)
        .fail_safe(Duration::from_secs(3600))
        .fail_safe_throttle(throttle);
    let cache = cache_on(&store, &log, &clock, options.clone()).await;
    let calls: Calls = Arc::default();
    let batch =
        || cache.get_many_or_load(&["p:1", "p:2"], &options, batch_loader(&db, &calls, &[]));
    assert_eq!(versions(batch().await.unwrap()), [Some(0), Some(0)]);
    clock.advance(TTL + Duration::from_secs(1));
    db.set_failing(true);
    db.update();

    assert_eq!(
        versions(batch().await.unwrap()),
        [Some(0), Some(0)],
        "the loader failed: stale served"
    );
    assert_eq!(calls.lock().unwrap().len(), 2);
    for _ in 0..3 {
        assert_eq!(versions(batch().await.unwrap()), [Some(0), Some(0)]);
    }
    assert_eq!(
        calls.lock().unwrap().len(),
        2,
        "no retry within the throttle"
    );
    let s = cache.stats();
    assert_eq!((s.stale_served, s.loader_errors, s.l1_hits), (8, 1, 0));

    clock.advance(throttle + Duration::from_secs(1));
    db.set_failing(false);
    assert_eq!(
        versions(batch().await.unwrap()),
        [Some(1), Some(1)],
        "asked again after the throttle"
    );
    assert_eq!(calls.lock().unwrap().len(), 3);
}

/// A batch that L1 answers whole serves its soft-expired keys at once, as `get_or_load` does,
/// and refreshes them in the background with one loader call (a key named twice, once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_serves_soft_expired_keys_at_once_and_refreshes_them_in_one_call() {
    let (store, log, clock, db) = (MemoryStore::default(), MemoryLog::new(), clock(), Db::new());
    let options = EntryOptions::ttl(TTL).soft_ttl(Duration::from_secs(10));
    let cache = cache_on(&store, &log, &clock, options.clone()).await;
    let calls: Calls = Arc::default();
    let first = cache
        .get_many_or_load(&["p:1", "p:2"], &options, batch_loader(&db, &calls, &[]))
        .await
        .unwrap();
    assert_eq!(versions(first), [Some(0), Some(0)]);
    cache.run_pending_tasks().await; // the fills have landed in L2
    db.update();
    clock.advance(Duration::from_secs(11));
    let _: Arc<Product> = cache.get_or_load("p:3", db.loader(3)).await.unwrap(); // fresh

    // The refresh's loader waits at a gate this test opens only once the batch has answered.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let gated = {
        let (load, gate) = (batch_loader(&db, &calls, &[]), gate.clone());
        move |keys: Vec<String>| -> BatchLoad {
            let load = load(keys);
            Box::pin(async move {
                let _open = gate.acquire().await;
                load.await
            })
        }
    };
    let batch = cache.get_many_or_load(&["p:1", "p:3", "p:2", "p:2"], &options, gated);
    let got = tokio::time::timeout(Duration::from_secs(5), batch)
        .await
        .expect("the batch answered without waiting for its refresh")
        .unwrap();
    assert_eq!(versions(got), [Some(0), Some(1), Some(0), Some(0)]);
    let s = cache.stats();
    assert_eq!(
        (s.stale_served, s.l1_hits, s.background_refreshes),
        (3, 1, 2),
        "{s:?}"
    );
    strata_testkit::eventually(
        "the refresh to call the loader",
        Duration::from_secs(5),
        || async { calls.lock().unwrap().len() == 2 },
    )
    .await;
    assert_eq!(
        calls.lock().unwrap()[1],
        ["p:1", "p:2"],
        "one call, each key once"
    );

    gate.add_permits(1);
    both_at_version(&cache, 1, "the refresh to land").await;
    let again = cache
        .get_many_or_load(&["p:1", "p:2"], &options, batch_loader(&db, &calls, &[]))
        .await
        .unwrap();
    assert_eq!(versions(again), [Some(1), Some(1)]);
    assert_eq!(calls.lock().unwrap().len(), 2, "answered fresh from L1");
}

/// A batch that L1 answers whole also refreshes, in its one background loader call, the fresh
/// keys [`EntryOptions::early_refresh`] picks, as `get_or_load` does; with a β that picks
/// none, nothing is loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refreshes_early_the_fresh_keys_early_refresh_picks() {
    // A huge β picks every hit; a tiny one none (the test is about what a refresh does).
    for (beta, picked) in [(1e12, true), (1e-9, false)] {
        let (store, log, clock, db) =
            (MemoryStore::default(), MemoryLog::new(), clock(), Db::new());
        let options = EntryOptions::ttl(TTL).early_refresh(beta);
        let cache = cache_on(&store, &log, &clock, options.clone()).await;
        let calls: Calls = Arc::default();
        let batch =
            || cache.get_many_or_load(&["p:1", "p:2"], &options, batch_loader(&db, &calls, &[]));
        assert_eq!(versions(batch().await.unwrap()), [Some(0), Some(0)]);
        cache.run_pending_tasks().await;
        db.update();
        assert_eq!(
            versions(batch().await.unwrap()),
            [Some(0), Some(0)],
            "answered from L1"
        );
        assert_eq!(cache.stats().l1_hits, 2);
        if picked {
            both_at_version(&cache, 1, "the early refresh to land").await;
            assert_eq!(
                calls.lock().unwrap()[1],
                ["p:1", "p:2"],
                "one call for both"
            );
        }
        cache.run_pending_tasks().await;
        let s = cache.stats();
        let expected = if picked { (2, 2) } else { (1, 0) };
        assert_eq!(
            (calls.lock().unwrap().len(), s.early_refreshes),
            expected,
            "β {beta}: {s:?}"
        );
    }
}

/// A batch that has to load a key anyway reloads its soft-expired keys with it and answers
/// them fresh.
#[tokio::test]
async fn a_batch_with_a_miss_reloads_its_soft_expired_keys_with_it() {
    let (store, log, clock, db) = (MemoryStore::default(), MemoryLog::new(), clock(), Db::new());
    let options = EntryOptions::ttl(TTL).soft_ttl(Duration::from_secs(10));
    let cache = cache_on(&store, &log, &clock, options.clone()).await;
    let calls: Calls = Arc::default();
    let _ = cache
        .get_many_or_load(&["p:1"], &options, batch_loader(&db, &calls, &[]))
        .await
        .unwrap();
    db.update();
    clock.advance(Duration::from_secs(11));
    let got = cache
        .get_many_or_load(&["p:2", "p:1"], &options, batch_loader(&db, &calls, &[]))
        .await
        .unwrap();
    assert_eq!(versions(got), [Some(1), Some(1)]);
    assert_eq!(
        calls.lock().unwrap()[1],
        ["p:2", "p:1"],
        "one call, in the batch's order"
    );
    let s = cache.stats();
    assert_eq!((s.stale_served, s.background_refreshes), (0, 0), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_waits_for_keys_already_loading_instead_of_loading_them_again() {
    let db = Db::new();
    let cache = HybridCache::builder("svc").build().await.unwrap();
    db.set_delay(std::time::Duration::from_millis(100));
    let slow = {
        let (cache, db) = (cache.clone(), db.clone());
        tokio::spawn(async move {
            cache
                .get_or_load::<Product, _, _, _>("p:1", db.loader(1))
                .await
        })
    };
    strata_testkit::eventually(
        "the single load to start",
        std::time::Duration::from_secs(5),
        || async { db.calls() == 1 },
    )
    .await;
    let calls = Arc::default();
    let got = cache
        .get_many_or_load(
            &["p:1", "p:2", "p:2"],
            &EntryOptions::ttl(TTL),
            batch_loader(&db, &calls, &[]),
        )
        .await
        .unwrap();
    assert!(got.iter().all(Option::is_some));
    assert_eq!(
        *calls.lock().unwrap(),
        [vec!["p:2".to_owned()]],
        "p:1 was in flight; p:2 once"
    );
    assert_eq!(slow.await.unwrap().unwrap().id, 1);
    assert_eq!(
        cache.stats().waited,
        2,
        "p:1 joined the flight, the second p:2 our own"
    );
}

#[tokio::test]
async fn a_failed_batch_load_serves_nothing_it_does_not_have() {
    let cache = HybridCache::builder("svc").build().await.unwrap();
    let failing = |_: Vec<String>| async {
        Err::<std::collections::HashMap<String, Product>, _>(std::io::Error::other("db down"))
    };
    let err = cache
        .get_many_or_load(&["a", "b"], &EntryOptions::ttl(TTL), failing)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Loader { .. }), "{err}");
    assert_eq!(cache.stats().loader_errors, 1, "one call for the batch");
}
