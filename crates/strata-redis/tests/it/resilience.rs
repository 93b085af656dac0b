//! The guard around Redis, against real faults: a frozen server (SIGSTOP), killed
//! connections, a full bulkhead. Counts, not timings, are asserted.

use std::sync::Arc;
use std::time::Duration;

use strata::{BreakerConfig, BreakerState, Bulkhead, EntryOptions, Resilience};
use strata_redis::RedisConfig;
use strata_testkit::RedisServer;
use strata_testkit::source::{Db, Product};

use crate::{TTL, WAIT, builder, instance};

fn config(redis: &RedisServer) -> RedisConfig {
    RedisConfig::from_url(&redis.url()).unwrap()
}

/// Short timeouts and a quick breaker, so that a frozen Redis costs the test little.
fn quick() -> Resilience {
    Resilience::default()
        .read_timeout(Duration::from_millis(100))
        .write_timeout(Duration::from_millis(100))
        .breaker(
            BreakerConfig::default()
                .consecutive_failures(3)
                .open_for(Duration::from_millis(200)),
        )
}

/// A cache builder on `redis` with [`quick`] resilience.
async fn quick_builder(redis: &RedisServer) -> strata::HybridCacheBuilder {
    builder(&config(redis), EntryOptions::ttl(TTL))
        .await
        .resilience(quick())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_on_a_frozen_redis_and_closes_after_it_thaws() {
    let redis = RedisServer::start();
    let cache = quick_builder(&redis).await.build().await.unwrap();
    let db = Db::new();
    redis.freeze();

    for id in 0..40 {
        let p: Arc<Product> = cache
            .get_or_load(&format!("p{id}"), db.loader(id))
            .await
            .unwrap();
        assert_eq!(p.id, id, "the loader answers, no error");
    }
    let s = cache.stats();
    assert_eq!(db.calls(), 40);
    assert!(s.breaker_opened >= 1, "{s:?}");
    // Once open, calls are refused without reaching Redis: most of the 40 reads (each one L2
    // read; a load whose read failed leaves L2 alone) never waited on it.
    assert!(s.calls_rejected >= 30, "{s:?}");
    assert_eq!(cache.health().l2, BreakerState::Open);
    // The log's follower, on a connection of its own, goes quiet too; health says so.
    let silent = |over: bool| {
        let cache = cache.clone();
        async move {
            let quiet = cache.health().log_silent_for.expect("a stream log reports");
            (quiet > Duration::from_secs(2)) == over
        }
    };
    strata_testkit::eventually("the follower to go quiet", WAIT, || silent(true)).await;

    redis.thaw();
    strata_testkit::eventually("the follower to catch up", WAIT, || silent(false)).await;
    // Probes go out with the reads (misses: L1 hits need no L2); one success closes it.
    let probes = std::sync::atomic::AtomicU64::new(100);
    strata_testkit::eventually("the breaker to close", WAIT, || async {
        let id = probes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _: Arc<Product> = cache
            .get_or_load(&format!("p{id}"), db.loader(id))
            .await
            .unwrap();
        cache.health().l2 == BreakerState::Closed
    })
    .await;
    let fresh: Arc<Product> = cache.get_or_load("after", db.loader(7)).await.unwrap();
    cache.run_pending_tasks().await;
    let other = instance(&redis, EntryOptions::ttl(TTL)).await;
    let from_l2: Arc<Product> = other.get_or_load("after", db.loader(7)).await.unwrap();
    assert_eq!(from_l2.version, fresh.version);
    assert_eq!(other.stats().l2_hits, 1, "L2 is written and read again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_during_a_freeze_is_replayed_after_it() {
    let redis = RedisServer::start();
    let a = quick_builder(&redis).await.build().await.unwrap();
    let b = instance(&redis, EntryOptions::ttl(TTL)).await;
    let db = Db::new();
    let _: Arc<Product> = a.get_or_load("p", db.loader(1)).await.unwrap();
    let held: Arc<Product> = b.get_or_load("p", db.loader(1)).await.unwrap();
    assert_eq!((held.version, db.calls()), (0, 1), "b holds v0 in L1");

    redis.freeze();
    db.update();
    a.invalidate("p").await.unwrap();
    assert_eq!(a.health().deferred_writes, 1);
    let mine: Arc<Product> = a.get_or_load("p", db.loader(1)).await.unwrap();
    assert_eq!(mine.version, 1, "the writer reads its write");

    redis.thaw();
    strata_testkit::eventually("the replay", WAIT, || async {
        a.health().deferred_writes == 0
    })
    .await;
    strata_testkit::eventually("b to drop v0", WAIT, || async {
        let p: Arc<Product> = b.get_or_load("p", db.loader(1)).await.unwrap();
        p.version == 1
    })
    .await;
    let c = instance(&redis, EntryOptions::ttl(TTL)).await;
    let p: Arc<Product> = c.get_or_load("p", db.loader(1)).await.unwrap();
    assert_eq!(p.version, 1, "no v0 left in L2");
    assert_eq!(a.stats().writes_replayed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_staleness_bound_a_deferred_write_is_not_acknowledged() {
    let redis = RedisServer::start();
    let cache = quick_builder(&redis)
        .await
        .max_staleness(Duration::from_secs(3))
        .build()
        .await
        .unwrap();
    redis.freeze();
    let err = cache.invalidate("p").await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(
        cache.health().deferred_writes,
        1,
        "and replayed all the same"
    );
    redis.thaw();
    strata_testkit::eventually("the replay", WAIT, || async {
        cache.health().deferred_writes == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_retried_not_reported() {
    let redis = RedisServer::start();
    let cache = instance(&redis, EntryOptions::ttl(TTL)).await;
    let db = Db::new();
    let _: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    let reader = instance(&redis, EntryOptions::ttl(TTL)).await;
    let connections = || -> u64 {
        let info = redis.cli(&["INFO", "stats"]);
        info.lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("INFO stats")
    };
    let before = connections();
    for round in 0..5 {
        // Every client's connection dies. The engine's connection sees it closed and opens a
        // new one for the next command; a command that was sent on it first fails and is
        // retried on a new one. Either way no error reaches the caller.
        redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
        let p: Arc<Product> = reader
            .get_or_load(&format!("p{round}"), db.loader(1))
            .await
            .unwrap();
        assert_eq!(p.id, 1);
    }
    let s = reader.stats();
    // Each round's read went over a connection opened after its kill: five at least, besides
    // this test's own six `redis-cli` calls since `before` (five kills, this `INFO`).
    let opened = connections() - before - 6;
    assert!(opened >= 5, "{opened} connections opened; {s:?}");
    assert_eq!(s.l2_errors, 0, "no failure got past the retries: {s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_l2_bulkhead_turns_reads_into_loads_not_errors() {
    let redis = RedisServer::start();
    let cache = builder(&config(&redis), EntryOptions::ttl(TTL))
        .await
        .resilience(
            quick().read_timeout(Duration::from_millis(500)).bulkhead(
                Bulkhead::default()
                    .l2_operations(2)
                    .max_wait(Duration::from_millis(20)),
            ),
        )
        .build()
        .await
        .unwrap();
    let db = Db::new();
    redis.freeze();
    // Two reads hold both slots, waiting on the frozen server; the others cannot get one.
    let reads: Vec<_> = (0..6)
        .map(|id| {
            let cache = cache.clone();
            let loader = db.loader(id);
            tokio::spawn(async move {
                cache
                    .get_or_load::<Product, _, _, _>(&format!("p{id}"), loader)
                    .await
            })
        })
        .collect();
    for read in reads {
        read.await.unwrap().unwrap();
    }
    redis.thaw();
    let s = cache.stats();
    assert!(s.calls_rejected >= 4, "{s:?}");
    assert_eq!(db.calls(), 6);
}
