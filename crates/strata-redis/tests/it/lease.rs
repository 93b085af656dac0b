//! Single-flight across instances: separate caches sharing one Redis, each with its own
//! connections, L1 and local flights.

use std::sync::Arc;
use std::time::Duration;

use strata::{EntryOptions, HybridCache, L2Store, Lease};
use strata_redis::{RedisConfig, RedisLease, RedisStore, RedisStreamLog};
use strata_testkit::RedisServer;
use strata_testkit::source::{Db, Product};

use crate::{TTL, instance};

async fn instance_with_lease_ttl(redis: &RedisServer, lease_ttl: Duration) -> HybridCache {
    let config = RedisConfig::from_url(&redis.url()).unwrap();
    HybridCache::builder("svc")
        .lease_ttl(lease_ttl)
        .l2(RedisStore::connect_with(&config).await.unwrap())
        .invalidation(RedisStreamLog::connect_with(&config).await.unwrap())
        .default_entry(EntryOptions::ttl(TTL))
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stampede_over_four_instances_loads_once() {
    let redis = RedisServer::start();
    let mut instances = Vec::new();
    for _ in 0..4 {
        instances.push(instance(&redis, EntryOptions::ttl(TTL)).await);
    }
    let db = Db::new();
    db.set_delay(Duration::from_millis(50));
    let reads: Vec<_> = (0..1000)
        .map(|i| {
            let (cache, db) = (instances[i % 4].clone(), db.clone());
            tokio::spawn(async move {
                let p: Arc<Product> = cache.get_or_load("cold", db.loader(7)).await?;
                Ok::<_, strata::Error>(p.version)
            })
        })
        .collect();
    for r in reads {
        assert_eq!(r.await.unwrap().unwrap(), 0, "the version loaded");
    }
    assert_eq!(db.calls(), 1, "one load for the whole service");
    let loads: u64 = instances.iter().map(|c| c.stats().loader_calls).sum();
    let waits: u64 = instances.iter().map(|c| c.stats().lease_waits).sum();
    assert_eq!(loads, 1);
    assert_eq!(waits, 3, "each other instance's flight waited on the lease");
    // The fill replaced the lease record with the value (an envelope: `\xFFST…`).
    assert_eq!(redis.cli(&["GETRANGE", "svc:cold", "1", "2"]), "ST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holder_lease_expires_and_a_waiter_takes_over() {
    let redis = RedisServer::start();
    let a = instance_with_lease_ttl(&redis, Duration::from_millis(300)).await;
    let b = instance_with_lease_ttl(&redis, Duration::from_millis(300)).await;
    let db = Db::new();
    // A's holder hangs, then its task is aborted: its lease is never released (as if the
    // process died); only the lease's TTL frees the key.
    db.set_delay(Duration::from_secs(3600));
    let stuck = {
        let (a, db) = (a.clone(), db.clone());
        tokio::spawn(async move { a.get_or_load::<Product, _, _, _>("k", db.loader(1)).await })
    };
    // A's lease is the record its read left in the data key.
    strata_testkit::eventually("A to hold the lease", crate::WAIT, || async {
        redis.cli(&["GETRANGE", "svc:k", "1", "2"]) == "SL"
    })
    .await;
    stuck.abort();
    let _ = stuck.await;
    // Aborting ran A's release; make the lease a dead process's, which nobody releases.
    strata_testkit::eventually("A's release", crate::WAIT, || async {
        redis.cli(&["EXISTS", "svc:k"]) == "0"
    })
    .await;
    let dead = RedisStore::connect(&redis.url()).await.unwrap();
    let held = dead
        .read("svc", "k", Some((99, Duration::from_millis(300))), false)
        .await
        .unwrap();
    assert_eq!(held, strata::Read::Leased);
    db.set_delay(Duration::ZERO);
    let p: Arc<Product> = b.get_or_load("k", db.loader(1)).await.unwrap();
    assert_eq!(p.id, 1);
    assert_eq!(b.stats().lease_waits, 1, "B waited for the holder first");
    assert_eq!(b.stats().loader_calls, 1, "then took over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_with_a_stale_copy_serves_it_while_another_instance_loads() {
    let redis = RedisServer::start();
    let options = EntryOptions::ttl(Duration::from_millis(200)).fail_safe(Duration::from_secs(60));
    let b = instance(&redis, options).await;
    let db = Db::new();
    let old: Arc<Product> = b.get_or_load("k", db.loader(1)).await.unwrap();
    // Let the entry expire (L2 keeps it for fail-safe), then have another instance hold the
    // key's lease as if it were loading.
    strata_testkit::eventually("the entry to expire", crate::WAIT, || async {
        b.get::<Product>("k").await.unwrap().is_none()
    })
    .await;
    let holder = RedisLease::connect_with(&RedisConfig::from_url(&redis.url()).unwrap())
        .await
        .unwrap();
    assert!(holder.try_acquire("svc", "k", 42, TTL).await.unwrap());
    db.update();
    let served: Arc<Product> = b.get_or_load("k", db.loader(1)).await.unwrap();
    assert_eq!(served.version, old.version, "the stale copy, at once");
    assert_eq!(b.stats().lease_waits, 1);
    assert_eq!(db.calls(), 1, "no second load while the lease is held");
    holder.release("svc", "k", 42).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_holder_releases_a_lease() {
    let redis = RedisServer::start();
    let config = RedisConfig::from_url(&redis.url()).unwrap();
    let lease = RedisLease::connect_with(&config).await.unwrap();
    assert!(lease.try_acquire("svc", "k", 1, TTL).await.unwrap());
    assert!(!lease.try_acquire("svc", "k", 2, TTL).await.unwrap());
    lease.release("svc", "k", 2).await.unwrap();
    assert_eq!(
        redis.cli(&["GET", "svc#lease:k"]),
        "1",
        "a stranger's release is a no-op"
    );
    let pttl: u64 = redis.cli(&["PTTL", "svc#lease:k"]).parse().unwrap();
    assert!(
        pttl > 0 && pttl <= 60_000,
        "the lease carries its TTL: {pttl}"
    );
    lease.release("svc", "k", 1).await.unwrap();
    assert_eq!(redis.cli(&["EXISTS", "svc#lease:k"]), "0");
}
