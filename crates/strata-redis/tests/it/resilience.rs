//! The guard around Redis, against real faults: a frozen server (SIGSTOP), killed
//! connections, a full bulkhead. Counts, not timings, are asserted.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use strata::{BreakerConfig, BreakerState, Bulkhead, EntryOptions, Resilience};
use strata_redis::{RedisConfig, RedisStreamLog};
use strata_testkit::source::{Db, Product};
use strata_testkit::{Proxy, RedisServer};

use crate::{TTL, WAIT, builder, builder_with_log, instance};

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
async fn with_a_staleness_bound_or_acknowledged_writes_a_deferred_write_is_not_acknowledged() {
    let redis = RedisServer::start();
    let bounded = quick_builder(&redis)
        .await
        .max_staleness(Duration::from_secs(3))
        .build()
        .await
        .unwrap();
    let acknowledged = quick_builder(&redis)
        .await
        .acknowledged_writes(true)
        .build()
        .await
        .unwrap();
    redis.freeze();
    for cache in [&bounded, &acknowledged] {
        let err = cache.invalidate("p").await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert_eq!(
            cache.health().deferred_writes,
            1,
            "and replayed all the same"
        );
    }
    redis.thaw();
    for cache in [&bounded, &acknowledged] {
        strata_testkit::eventually("the replay", WAIT, || async {
            cache.health().deferred_writes == 0
        })
        .await;
    }
}

/// A stall of this instance alone (its connection cut here; a starved process does the same)
/// opens its breaker while it holds a key's load lease: its fill is refused, but the lease
/// still goes back, so other instances load instead of waiting out the lease's TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_opened_here_still_gives_back_the_lease_others_wait_on() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(redis.port()).await.unwrap();
    let through = RedisConfig::from_url(&format!("redis://127.0.0.1:{}", proxy.port())).unwrap();
    let log = RedisStreamLog::connect_with(&config(&redis)).await.unwrap();
    let a = builder_with_log(&through, log)
        .await
        .lease_ttl(Duration::from_secs(60))
        .resilience(
            // The release's own timeout is the write timeout: ample, on a loaded machine.
            quick().write_timeout(WAIT).breaker(
                BreakerConfig::default()
                    .consecutive_failures(1)
                    .open_for(Duration::from_secs(60)),
            ),
        )
        .build()
        .await
        .unwrap();
    let (started, has_started) = oneshot::channel();
    let (finish, may_finish) = oneshot::channel::<()>();
    let load = tokio::spawn({
        let a = a.clone();
        async move {
            let loader = move || async move {
                let _ = started.send(());
                let _ = may_finish.await;
                Ok::<_, std::io::Error>(Product {
                    id: 1,
                    version: 7,
                    name: "k".into(),
                })
            };
            a.get_or_load::<Product, _, _, _>("k", loader).await
        }
    });
    has_started.await.unwrap(); // the read that missed took the key's lease
    let key = strata::keys::data_key("svc", "k");
    assert_ne!(redis.cli(&["EXISTS", &key]), "0", "the lease record");

    proxy.cut();
    // Reads go on, loading (a command already on its way when the cut came may still be
    // answered), until one fails and the breaker opens for a minute.
    let db = Db::new();
    let next = std::sync::atomic::AtomicU64::new(100);
    strata_testkit::eventually("a's breaker to open", WAIT, || async {
        let id = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p: Arc<Product> = a
            .get_or_load(&format!("p{id}"), db.loader(id))
            .await
            .unwrap();
        assert_eq!(p.id, id);
        a.health().l2 == BreakerState::Open
    })
    .await;
    proxy.restore();
    finish.send(()).unwrap();
    assert_eq!(load.await.unwrap().unwrap().version, 7);

    // The fill was refused (the breaker is open for a minute); the lease went back anyway.
    strata_testkit::eventually("the lease record to go", WAIT, || async {
        redis.cli(&["EXISTS", &key]) == "0"
    })
    .await;
    let b = instance(&redis, EntryOptions::ttl(TTL)).await;
    let loads = db.calls();
    let p: Arc<Product> = b.get_or_load("k", db.loader(1)).await.unwrap();
    assert_eq!((p.id, db.calls()), (1, loads + 1), "b loaded k itself");
    assert_eq!(b.stats().lease_waits, 0, "without waiting on a's lease");
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
