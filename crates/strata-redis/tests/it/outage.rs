//! Redis going away under a running cache: reads keep working, writes are deferred and replayed.

use std::sync::Arc;
use std::time::Duration;

use strata::EntryOptions;
use strata_testkit::RedisServer;
use strata_testkit::source::{Db, Product};

use crate::{TTL, WAIT, instance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_fall_back_to_l1_and_the_loader_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let cache = instance(&redis, EntryOptions::ttl(TTL)).await;
    let db = Db::new();
    let _: Arc<Product> = cache.get_or_load("warm", db.loader(1)).await.unwrap();
    redis.kill();

    let warm: Arc<Product> = cache.get_or_load("warm", db.loader(1)).await.unwrap();
    assert_eq!((warm.id, db.calls()), (1, 1), "L1 still serves");
    let cold: Arc<Product> = cache.get_or_load("cold", db.loader(2)).await.unwrap();
    assert_eq!((cold.id, db.calls()), (2, 2), "the loader serves, no error");
    assert!(cache.stats().l2_errors >= 1);

    // The write's shared half waits for Redis; its local half is done.
    cache.invalidate("warm").await.unwrap();
    assert_eq!(cache.health().deferred_writes, 1);
    assert_eq!(cache.stats().writes_deferred, 1);
    assert!(
        cache.get::<Product>("warm").await.unwrap().is_none(),
        "applied locally"
    );

    redis.restart();
    strata_testkit::eventually("the deferred write to be replayed", WAIT, || async {
        cache.health().deferred_writes == 0
    })
    .await;
    assert_eq!(cache.stats().writes_replayed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_safe_serves_stale_from_redis_when_the_loader_fails() {
    let redis = RedisServer::start();
    let options = EntryOptions::ttl(Duration::from_millis(300)).fail_safe(Duration::from_secs(60));
    let writer = instance(&redis, options.clone()).await;
    let db = Db::new();
    let _: Arc<Product> = writer.get_or_load("p", db.loader(1)).await.unwrap();

    // Another instance, empty L1, after the entry's TTL: only Redis has the stale copy.
    let reader = instance(&redis, options).await;
    strata_testkit::eventually("the entry to expire", Duration::from_secs(5), || async {
        writer.get::<Product>("p").await.unwrap().is_none()
    })
    .await;
    db.set_failing(true);
    let stale: Arc<Product> = reader.get_or_load("p", db.loader(1)).await.unwrap();
    assert_eq!(stale.id, 1);
    let s = reader.stats();
    assert_eq!((s.stale_served, s.loader_errors), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_timeout_returns_stale_then_the_background_fill_lands_in_redis() {
    let redis = RedisServer::start();
    let options = EntryOptions::ttl(Duration::from_millis(300))
        .fail_safe(Duration::from_secs(60))
        .soft_timeout(Duration::from_millis(50));
    let cache = instance(&redis, options).await;
    let db = Db::new();
    let _: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    strata_testkit::eventually("the entry to expire", Duration::from_secs(5), || async {
        cache.get::<Product>("p").await.unwrap().is_none()
    })
    .await;
    db.update();
    db.set_delay(Duration::from_millis(500));
    let stale: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    assert_eq!(stale.version, 0, "answered at the soft timeout");

    let other = crate::instance(&redis, EntryOptions::ttl(TTL)).await;
    strata_testkit::eventually(
        "the background load to fill Redis",
        Duration::from_secs(5),
        || async {
            other
                .get::<Product>("p")
                .await
                .unwrap()
                .is_some_and(|p| p.version == 1)
        },
    )
    .await;
    assert_eq!(db.calls(), 2);
}
