//! Several instances sharing one Redis, each with its own connections and L1.

use std::sync::Arc;
use std::time::Duration;

use strata::EntryOptions;
use strata_testkit::source::{Db, Product};
use strata_testkit::{RedisServer, eventually};

use crate::{TTL, WAIT, instance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_on_one_instance_reaches_the_others_l1() {
    let redis = RedisServer::start();
    let a = instance(&redis, EntryOptions::ttl(TTL)).await;
    let b = instance(&redis, EntryOptions::ttl(TTL)).await;
    let db = Db::new();
    let _: Arc<Product> = a.get_or_load("p", db.loader(1)).await.unwrap();
    a.run_pending_tasks().await; // a's fill has landed in L2
    let _: Arc<Product> = b.get_or_load("p", db.loader(1)).await.unwrap();
    assert_eq!(
        (db.calls(), b.stats().l2_hits),
        (1, 1),
        "b read a's value from Redis"
    );

    db.update();
    a.invalidate("p").await.unwrap();
    assert_eq!(redis.cli(&["EXISTS", "svc:p"]), "0");
    eventually("b to drop its L1 copy", WAIT, || async {
        b.get::<Product>("p").await.unwrap().is_none()
    })
    .await;
    let fresh: Arc<Product> = b.get_or_load("p", db.loader(1)).await.unwrap();
    assert_eq!(fresh.version, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_tags_and_clear_reach_every_instance() {
    let redis = RedisServer::start();
    let a = instance(&redis, EntryOptions::ttl(TTL)).await;
    let b = instance(&redis, EntryOptions::ttl(TTL)).await;
    let db = Db::new();
    let tagged = EntryOptions::ttl(TTL).tags(["category:7"]);
    let _: Arc<Product> = b
        .get_or_load_with("t1", &tagged, db.loader(1))
        .await
        .unwrap();
    let _: Arc<Product> = b.get_or_load("plain", db.loader(2)).await.unwrap();
    let _: Arc<Product> = b.get_or_load("p", db.loader(3)).await.unwrap();
    b.run_pending_tasks().await;

    let renamed = Product {
        id: 3,
        version: 9,
        name: "renamed".into(),
    };
    a.set("p", renamed, &EntryOptions::ttl(TTL)).await.unwrap();
    eventually("b to see a's write", WAIT, || async {
        b.get::<Product>("p")
            .await
            .unwrap()
            .is_some_and(|p| p.version == 9)
    })
    .await;

    a.invalidate_tag("category:7").await.unwrap();
    eventually("b to drop the tagged entry", WAIT, || async {
        b.get::<Product>("t1").await.unwrap().is_none()
    })
    .await;
    assert!(b.get::<Product>("plain").await.unwrap().is_some());

    a.clear().await.unwrap();
    eventually("b to clear", WAIT, || async {
        b.get::<Product>("plain").await.unwrap().is_none()
    })
    .await;
    assert_eq!(redis.cli(&["KEYS", "svc:*"]), "", "no value left");
    assert_eq!(redis.cli(&["KEYS", "svc#tag:*"]), "", "no tag index left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_cold_reads_load_once() {
    let redis = RedisServer::start();
    let cache = instance(&redis, EntryOptions::ttl(TTL)).await;
    let db = Db::new();
    db.set_delay(Duration::from_millis(50));
    let reads: Vec<_> = (0..1000)
        .map(|_| {
            let (cache, db) = (cache.clone(), db.clone());
            tokio::spawn(async move {
                cache
                    .get_or_load::<Product, _, _, _>("cold", db.loader(1))
                    .await
            })
        })
        .collect();
    for r in reads {
        r.await.unwrap().unwrap();
    }
    assert_eq!(db.calls(), 1);
    assert_eq!(cache.stats().loader_calls, 1);
    // The crowd is answered once the fill is sent, not once it landed: wait for it, then the
    // value has replaced the lease record (`\xFFSL…` → `\xFFST…`).
    cache.run_pending_tasks().await;
    assert_eq!(redis.cli(&["GETRANGE", "svc:cold", "1", "2"]), "ST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pubsub_follower_that_lost_its_connection_drops_its_l1() {
    let mut redis = RedisServer::start();
    let cache = strata::HybridCache::builder("svc")
        .l2(strata_redis::RedisStore::connect(&redis.url())
            .await
            .unwrap())
        .invalidation(
            strata_redis::RedisPubSub::connect(&redis.url())
                .await
                .unwrap(),
        )
        .default_entry(EntryOptions::ttl(TTL))
        .build()
        .await
        .unwrap();
    let db = Db::new();
    let _: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    cache.run_pending_tasks().await; // the fill has landed: only the resync can drop L1
    // Invalidations published while the follower is away are lost with pub/sub; the follower
    // must assume the worst when it is back.
    redis.restart();
    eventually("the follower to resync", WAIT, || async {
        cache.get::<Product>("p").await.unwrap().is_none()
    })
    .await;
    assert!(cache.stats().invalidations_received >= 1);
}

/// An instance on `redis` whose writes wait for the others' acknowledgements.
async fn acknowledging(redis: &RedisServer) -> strata::HybridCache {
    let config = strata_redis::RedisConfig::from_url(&redis.url()).unwrap();
    crate::acknowledging(&config).await
}

/// An instance that shuts down has withdrawn from the acknowledgements when `shutdown`
/// returns — a process exiting right after it would otherwise leave its last sign of life
/// behind, and every write of the others would wait for it until that expired (W5's fleet
/// lost up to 3 s so, when one process finished before the others) — and it does not come
/// back when it applies the next invalidation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_shut_down_is_no_longer_waited_for() {
    let redis = RedisServer::start();
    let (a, b) = (acknowledging(&redis).await, acknowledging(&redis).await);
    assert_eq!(redis.cli(&["HLEN", "svc#acks"]), "2");
    b.shutdown().await;
    assert_eq!(
        redis.cli(&["HLEN", "svc#acks"]),
        "1",
        "withdrawn before shutdown returned"
    );
    a.invalidate("p").await.unwrap();
    strata_testkit::eventually("b to apply the invalidation", crate::WAIT, || async {
        b.stats().invalidations_received == 1
    })
    .await;
    assert_eq!(redis.cli(&["HLEN", "svc#acks"]), "1", "b did not come back");
    assert_eq!(a.stats().writes_unacknowledged, 0);
}

/// An instance's log on its store's connection ([`strata_redis::RedisStreamLog::sharing`]):
/// its acknowledgements and its looks at the others' go out there, so the server serves each
/// instance's commands on one socket; the follower keeps its own. On two, the server read and
/// answered both on nearly every turn of its loop (W5: 10 % of its CPU).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_sharing_the_store_adds_no_connection_for_its_commands() {
    let redis = RedisServer::start();
    let (a, b) = (acknowledging(&redis).await, acknowledging(&redis).await);
    a.invalidate("p").await.unwrap();
    assert_eq!(a.stats().writes_unacknowledged, 0, "b acknowledged");
    assert_eq!(b.stats().invalidations_received, 1);
    let clients = redis.cli(&["CLIENT", "LIST"]);
    let of = |kind: fn(&str) -> bool| clients.lines().filter(|l| kind(l)).count();
    let followers = of(|l| l.contains(" name=strata-log:"));
    let commands = of(|l| !l.contains(" name=strata-log:") && !l.contains(" cmd=client|list"));
    assert_eq!((commands, followers), (2, 2), "{clients}");
}

/// Writes waiting at the same time share their looks at the acknowledgements: one `HGETALL`
/// in flight per namespace, its answer read by every write waiting meanwhile. Shown against an
/// instance that never acknowledges (a field alive for an hour that applied nothing), so that
/// every write waits out its whole bound: 32 concurrent writes look about as often as one
/// write alone, where each sending its own would look 32 times as often. The assertion is a
/// ratio of two waits of the same length on the same machine, so a slow machine cannot fail
/// it (an earlier form, "fewer looks than writes" with a live second instance, depended on
/// how fast that instance acknowledged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_acknowledged_writes_share_their_looks() {
    let redis = RedisServer::start();
    let a = acknowledging(&redis).await;
    silent_instance(&redis, "1", Duration::from_secs(3600));
    let looks = || -> u64 {
        redis
            .cli(&["INFO", "commandstats"])
            .lines()
            .find_map(|line| line.strip_prefix("cmdstat_hgetall:"))
            .and_then(|rest| rest.split(',').find_map(|kv| kv.strip_prefix("calls=")))
            .map_or(0, |n| n.parse().unwrap())
    };
    let before = looks();
    a.invalidate("p").await.unwrap();
    let alone = looks() - before;
    let before = looks();
    let writes = (0..32).map(|i| {
        let a = &a;
        async move { a.invalidate(&format!("p{i}")).await.unwrap() }
    });
    futures_util::future::join_all(writes).await;
    let together = looks() - before;
    assert_eq!(
        a.stats().writes_unacknowledged,
        33,
        "every write waited out its bound"
    );
    assert!(alone >= 8, "a write alone kept looking: {alone}");
    assert!(
        together < 3 * alone,
        "32 concurrent writes looked {together} times, one write alone {alone}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_leave_no_old_copy_on_any_instance() {
    let redis = RedisServer::start();
    let (a, b) = (acknowledging(&redis).await, acknowledging(&redis).await);
    assert_eq!(
        redis.cli(&["HLEN", "svc#acks"]),
        "2",
        "each instance acknowledged where it started before build returned"
    );
    let db = Db::new();
    for round in 0..100 {
        let seen: Arc<Product> = b.get_or_load("p", db.loader(1)).await.unwrap();
        assert_eq!(seen.version, round);
        db.update();
        a.invalidate("p").await.unwrap();
        // b applied it before the invalidation returned: no L1 copy of the old version.
        let after: Arc<Product> = b.get_or_load("p", db.loader(1)).await.unwrap();
        assert_eq!(after.version, round + 1, "round {round}");
    }
    assert_eq!(a.stats().writes_unacknowledged, 0);

    // An instance that stopped answering but still counts as alive holds a write up for the
    // wait (a second without a staleness bound), then no longer once its life ran out.
    silent_instance(&redis, "42", Duration::from_millis(1_500));
    a.invalidate("p").await.unwrap();
    assert_eq!(a.stats().writes_unacknowledged, 1);
    strata_testkit::eventually(
        "the silent instance to be forgotten",
        crate::WAIT,
        || async {
            a.invalidate("p").await.unwrap();
            redis.cli(&["HEXISTS", "svc#acks", "42"]) == "0"
        },
    )
    .await;

    // An instance that leaves says so: nobody waits for it.
    drop(b);
    strata_testkit::eventually("b to leave", crate::WAIT, || async {
        redis.cli(&["HLEN", "svc#acks"]) == "1"
    })
    .await;
}

/// Plants instance `id` in `svc`'s acknowledgements: alive for `alive_for`, having applied
/// nothing — an instance that stopped answering but still counts as alive.
fn silent_instance(redis: &RedisServer, id: &str, alive_for: Duration) {
    let alive_until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        + alive_for;
    let ack = format!("{}:0", alive_until.as_millis());
    redis.cli(&["HSET", "svc#acks", id, &ack]);
}
