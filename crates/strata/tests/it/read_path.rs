use std::sync::Arc;

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
    assert_eq!(s.misses + s.coalesced + s.l1_hits, 1000);
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
