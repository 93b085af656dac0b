//! Two instances sharing one store and one log, as two service replicas share one Redis.

use std::sync::Arc;
use std::time::Duration;

use strata::{EntryOptions, HybridCache, MemoryLog, MemoryStore};
use strata_testkit::eventually;
use strata_testkit::source::{Db, Product};

use crate::{TTL, cache_on, clock};

const WAIT: Duration = Duration::from_secs(5);

async fn pair() -> (HybridCache, HybridCache, MemoryStore) {
    let (store, log, clock) = (MemoryStore::default(), MemoryLog::new(), clock());
    let a = cache_on(&store, &log, &clock, EntryOptions::ttl(TTL)).await;
    let b = cache_on(&store, &log, &clock, EntryOptions::ttl(TTL)).await;
    (a, b, store)
}

#[tokio::test]
async fn invalidate_on_one_instance_drops_the_key_from_the_others_l1() {
    let (a, b, _) = pair().await;
    let db = Db::new();
    let _: Arc<Product> = a.get_or_load("p", db.loader(1)).await.unwrap();
    a.run_pending_tasks().await; // a's fill has landed in L2
    let _: Arc<Product> = b.get_or_load("p", db.loader(1)).await.unwrap();
    assert_eq!(b.stats().l2_hits, 1);
    db.update();
    a.invalidate("p").await.unwrap();
    eventually("b to drop its L1 copy", WAIT, || async {
        b.get_or_load::<Product, _, _, _>("p", db.loader(1))
            .await
            .unwrap()
            .version
            == 1
    })
    .await;
    assert_eq!(
        a.stats().invalidations_received,
        0,
        "own messages are skipped"
    );
    assert!(b.stats().invalidations_received >= 1);
}

#[tokio::test]
async fn set_writes_through_and_replaces_other_instances_copies() {
    let (a, b, _) = pair().await;
    let db = Db::new();
    let _: Arc<Product> = b.get_or_load("p", db.loader(1)).await.unwrap();
    let new = Product {
        id: 1,
        version: 5,
        name: "renamed".into(),
    };
    a.set("p", new.clone(), a.default_entry_options())
        .await
        .unwrap();
    assert_eq!(*a.get::<Product>("p").await.unwrap().unwrap(), new);
    eventually("b to see the new value", WAIT, || async {
        b.get_or_load::<Product, _, _, _>("p", db.loader(1))
            .await
            .unwrap()
            .version
            == 5
    })
    .await;
    assert_eq!(db.calls(), 1, "b read the new value from L2");
}

#[tokio::test]
async fn invalidate_tag_drops_tagged_entries_everywhere() {
    let (a, b, store) = pair().await;
    let db = Db::new();
    let tagged = EntryOptions::ttl(TTL).tags(["category:7"]);
    for key in ["p:1", "p:2"] {
        let _: Arc<Product> = a
            .get_or_load_with(key, &tagged, db.loader(1))
            .await
            .unwrap();
    }
    let _: Arc<Product> = a.get_or_load("p:3", db.loader(3)).await.unwrap();
    a.run_pending_tasks().await; // a's fills have landed in L2
    for key in ["p:1", "p:2", "p:3"] {
        assert!(
            b.get::<Product>(key).await.unwrap().is_some(),
            "b holds {key}"
        );
    }
    a.invalidate_tag("category:7").await.unwrap();
    for key in ["p:1", "p:2"] {
        assert!(
            a.get::<Product>(key).await.unwrap().is_none(),
            "a dropped {key}"
        );
    }
    eventually("b to drop the tagged entries", WAIT, || async {
        b.get::<Product>("p:1").await.unwrap().is_none()
            && b.get::<Product>("p:2").await.unwrap().is_none()
    })
    .await;
    assert!(
        b.get::<Product>("p:3").await.unwrap().is_some(),
        "untagged entry kept"
    );
    assert_eq!(store.len(), 1);
}

#[tokio::test]
async fn clear_empties_the_namespace_everywhere_and_nothing_else() {
    let (store, log, clock) = (MemoryStore::default(), MemoryLog::new(), clock());
    let a = cache_on(&store, &log, &clock, EntryOptions::ttl(TTL)).await;
    let b = cache_on(&store, &log, &clock, EntryOptions::ttl(TTL)).await;
    let other = HybridCache::builder("other")
        .l2(store.clone())
        .invalidation(log.clone())
        .build()
        .await
        .unwrap();
    let db = Db::new();
    for key in ["x", "y"] {
        let _: Arc<Product> = a.get_or_load(key, db.loader(1)).await.unwrap();
        let _: Arc<Product> = b.get_or_load(key, db.loader(1)).await.unwrap();
    }
    let _: Arc<Product> = other.get_or_load("x", db.loader(1)).await.unwrap();
    a.clear().await.unwrap();
    eventually("b to clear its L1", WAIT, || async {
        b.get::<Product>("x").await.unwrap().is_none()
            && b.get::<Product>("y").await.unwrap().is_none()
    })
    .await;
    assert_eq!(store.len(), 1, "only the other namespace's entry is left");
    assert!(other.get::<Product>("x").await.unwrap().is_some());
}

/// Instances on one store and log whose writes wait for the others' acknowledgements.
async fn acknowledged(store: &MemoryStore, log: &MemoryLog, on: bool) -> HybridCache {
    HybridCache::builder("test")
        .l2(store.clone())
        .invalidation(log.clone())
        .default_entry(EntryOptions::ttl(TTL))
        .acknowledged_writes(on)
        .build()
        .await
        .unwrap()
}

/// How many of `rounds` reads on `b`, each started right after `a`'s invalidation returned,
/// still saw the old version.
async fn old_reads_after_writes(a: &HybridCache, b: &HybridCache, rounds: u64) -> u64 {
    let db = Db::new();
    let mut old = 0;
    for round in 0..rounds {
        // b holds the current version in L1 (without acknowledgements, once it caught up).
        eventually("b to hold the current version", WAIT, || async {
            let seen: Arc<Product> = b.get_or_load("p", db.loader(1)).await.unwrap();
            seen.version == round
        })
        .await;
        db.update();
        a.invalidate("p").await.unwrap();
        let after: Arc<Product> = b.get_or_load("p", db.loader(1)).await.unwrap();
        old += u64::from(after.version == round);
    }
    old
}

// One thread: b's follower runs only when the test's task waits, so without acknowledgements
// b is sure to read before it applied the invalidation.
#[tokio::test]
async fn with_acknowledged_writes_no_instance_serves_a_value_invalidated_before_its_read() {
    let (store, log) = (MemoryStore::default(), MemoryLog::new());
    let (a, b) = (
        acknowledged(&store, &log, true).await,
        acknowledged(&store, &log, true).await,
    );
    assert_eq!(old_reads_after_writes(&a, &b, 200).await, 0);
    assert_eq!(a.stats().writes_unacknowledged, 0);
    assert_eq!(b.stats().invalidations_received, 200);
}

#[tokio::test]
async fn without_them_another_instance_may_still_serve_it_for_a_moment() {
    // What the option is for: the same run, writes returning before b applied them.
    let (store, log) = (MemoryStore::default(), MemoryLog::new());
    let (a, b) = (
        acknowledged(&store, &log, false).await,
        acknowledged(&store, &log, false).await,
    );
    assert_eq!(old_reads_after_writes(&a, &b, 200).await, 200);
}

#[tokio::test]
async fn acknowledged_writes_need_a_log_that_acknowledges() {
    struct Silent;
    impl std::fmt::Debug for Silent {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Silent")
        }
    }
    #[async_trait::async_trait]
    impl strata::InvalidationLog for Silent {
        async fn publish(
            &self,
            _: &str,
            _: &strata::invalidation::Invalidation,
        ) -> Result<Option<strata::invalidation::Position>, strata::Error> {
            Ok(None)
        }
        async fn follow(
            &self,
            _: &str,
        ) -> Result<strata::invalidation::Subscription, strata::Error> {
            Ok(tokio::sync::mpsc::unbounded_channel().1)
        }
    }
    let err = HybridCache::builder("test")
        .invalidation(Silent)
        .acknowledged_writes(true)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, strata::Error::Config(_)), "{err}");
}
