//! The durable invalidation log: followers that lose their connection resume where they left
//! off, and drop their L1 only when the log lost entries they had not read.

use std::sync::Arc;
use std::time::Duration;

use strata::{EntryOptions, HybridCache};
use strata_redis::{RedisConfig, RedisStore, RedisStreamLog};
use strata_testkit::source::{Db, Product};
use strata_testkit::{RedisServer, eventually};

use crate::{TTL, WAIT, raw_connection};

async fn instance_with_log(redis: &RedisServer, log: RedisStreamLog) -> HybridCache {
    HybridCache::builder("svc")
        .l2(RedisStore::connect(&redis.url()).await.unwrap())
        .invalidation(log)
        .default_entry(EntryOptions::ttl(TTL))
        .build()
        .await
        .unwrap()
}

async fn log(redis: &RedisServer, max_len: usize) -> RedisStreamLog {
    let config = RedisConfig::from_url(&redis.url()).unwrap();
    RedisStreamLog::connect_with(&config)
        .await
        .unwrap()
        .max_len(max_len)
}

/// Whether `key` is in `cache`'s L1: a read that neither loads nor touches L2.
async fn in_l1(cache: &HybridCache, db: &Db, key: &str) -> bool {
    let before = cache.stats();
    let _: Arc<Product> = cache.get_or_load(key, db.loader(1)).await.unwrap();
    cache.stats().l1_hits == before.l1_hits + 1
}

/// Cuts the follower of namespace `svc` off and keeps it off (its user cannot log in) until
/// the returned guard's `restore`.
struct Cut(redis::aio::MultiplexedConnection);

impl Cut {
    async fn new(redis: &RedisServer) -> Cut {
        let mut admin = raw_connection(redis).await;
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut admin)
            .await
            .unwrap();
        let ids: Vec<&str> = clients
            .lines()
            .filter(|l| l.contains("name=strata-log:svc"))
            .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
            .collect();
        assert!(!ids.is_empty(), "followers are named: {clients}");
        // Both in one transaction, so the follower cannot slip back in between.
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("ACL")
            .arg("SETUSER")
            .arg("default")
            .arg("off");
        for id in ids {
            pipe.cmd("CLIENT").arg("KILL").arg("ID").arg(id);
        }
        pipe.exec_async(&mut admin).await.unwrap();
        Cut(admin)
    }

    async fn restore(mut self) {
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg("default")
            .arg("on")
            .exec_async(&mut self.0)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_sent_while_a_follower_was_cut_off_are_applied_when_it_is_back() {
    let redis = RedisServer::start();
    let a = instance_with_log(&redis, log(&redis, 10_000).await).await;
    let b = instance_with_log(&redis, log(&redis, 10_000).await).await;
    let db = Db::new();
    for key in ["p", "q"] {
        let _: Arc<Product> = b.get_or_load(key, db.loader(1)).await.unwrap();
    }
    let cut = Cut::new(&redis).await;
    a.invalidate("p").await.unwrap();
    assert_eq!(b.stats().invalidations_received, 0, "b is cut off");
    cut.restore().await;
    eventually("b to apply the invalidation it missed", WAIT, || async {
        b.stats().invalidations_received == 1
    })
    .await;
    assert!(!in_l1(&b, &db, "p").await, "p was dropped");
    assert!(in_l1(&b, &db, "q").await, "no resync: q stayed in L1");
    assert_eq!(
        a.stats().invalidations_received,
        0,
        "a skips its own entries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_position_was_trimmed_away_drops_its_l1() {
    let redis = RedisServer::start();
    let a = instance_with_log(&redis, log(&redis, 10).await).await;
    let b = instance_with_log(&redis, log(&redis, 10).await).await;
    let db = Db::new();
    let _: Arc<Product> = b.get_or_load("q", db.loader(1)).await.unwrap();
    let cut = Cut::new(&redis).await;
    // Trimming is approximate (whole stream nodes of 100 entries): send enough to trim.
    for i in 0..500 {
        a.invalidate(&format!("other:{i}")).await.unwrap();
    }
    cut.restore().await;
    let len: u64 = redis.cli(&["XLEN", "svc#log"]).parse().unwrap();
    assert!(len < 500, "the stream was trimmed: {len}");
    eventually("b to resync", WAIT, || async { !in_l1(&b, &db, "q").await }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_log_was_lost_with_a_restart_drops_its_l1() {
    let mut redis = RedisServer::start();
    let a = instance_with_log(&redis, log(&redis, 10_000).await).await;
    let b = instance_with_log(&redis, log(&redis, 10_000).await).await;
    let db = Db::new();
    a.invalidate("warm-up").await.unwrap(); // b now has a position in the log
    eventually("b to read it", WAIT, || async {
        b.stats().invalidations_received == 1
    })
    .await;
    let _: Arc<Product> = b.get_or_load("q", db.loader(1)).await.unwrap();
    // No persistence: the stream is gone, and with it whatever b had not read yet.
    redis.restart();
    eventually("b to resync", WAIT, || async { !in_l1(&b, &db, "q").await }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_release_of_a_waited_on_lease_is_announced_to_followers() {
    use strata::invalidation::{Invalidation, LogEvent, Target};
    use strata::{InvalidationLog, L2Store, WriteMode};

    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let log = log(&redis, 10_000).await;
    let mut events = log.follow("svc").await.unwrap();
    let claim = |token| Some((token, TTL));
    let bytes = bytes::Bytes::from_static(b"v");

    // Waited on, released by the fill: announced.
    let start = store.begin_load("svc", "k", claim(1), true).await.unwrap();
    let read = start.generation;
    assert!(start.lease_taken);
    assert!(
        !store
            .begin_load("svc", "k", claim(2), true)
            .await
            .unwrap()
            .lease_taken
    );
    let fill = WriteMode::Fill {
        read,
        lease: Some(1),
    };
    assert!(
        store
            .set("svc", "k", bytes.clone(), TTL, &[], fill)
            .await
            .unwrap()
    );
    assert_eq!(next(&mut events).await, LogEvent::Filled("k".into()));

    // Waited on, released by a holder whose load failed: announced too.
    assert!(
        store
            .begin_load("svc", "f", claim(3), true)
            .await
            .unwrap()
            .lease_taken
    );
    assert!(
        !store
            .begin_load("svc", "f", claim(4), true)
            .await
            .unwrap()
            .lease_taken
    );
    store.lease().unwrap().release("svc", "f", 3).await.unwrap();
    assert_eq!(next(&mut events).await, LogEvent::Filled("f".into()));

    // Nobody waited: nothing announced (the next event is the marker invalidation).
    let read = store
        .begin_load("svc", "quiet", claim(5), true)
        .await
        .unwrap()
        .generation;
    let fill = WriteMode::Fill {
        read,
        lease: Some(5),
    };
    store
        .set("svc", "quiet", bytes, TTL, &[], fill)
        .await
        .unwrap();
    let marker = Invalidation {
        origin: 7,
        target: Target::Key("marker".into()),
    };
    log.publish("svc", &marker).await.unwrap();
    assert_eq!(next(&mut events).await, LogEvent::Apply(marker));
}

/// The next event that is not a heartbeat.
async fn next(events: &mut strata::invalidation::Subscription) -> strata::invalidation::LogEvent {
    loop {
        let event = tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("an event within the wait")
            .expect("the subscription is open");
        if !matches!(event, strata::invalidation::LogEvent::CaughtUp { .. }) {
            return event;
        }
    }
}

async fn bounded_instance(redis: &RedisServer, max_staleness: Duration) -> HybridCache {
    let log = log(redis, 10_000)
        .await
        .heartbeat_every(Duration::from_millis(100));
    HybridCache::builder("svc")
        .l2(RedisStore::connect(&redis.url()).await.unwrap())
        .invalidation(log)
        .max_staleness(max_staleness)
        .default_entry(EntryOptions::ttl(TTL))
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_follower_stops_trusting_l1_after_max_staleness_and_resumes_once_caught_up() {
    let redis = RedisServer::start();
    let max = Duration::from_millis(400);
    let a = bounded_instance(&redis, max).await;
    let b = bounded_instance(&redis, max).await;
    let db = Db::new();
    let _: Arc<Product> = b.get_or_load("p", db.loader(1)).await.unwrap();
    assert!(in_l1(&b, &db, "p").await, "trusted while connected");

    let cut = Cut::new(&redis).await;
    db.update();
    a.invalidate("p").await.unwrap(); // b cannot hear of it
    // Within the bound b may still serve version 0; past it, its L1 is passed over and the
    // read goes to L2 (emptied by the invalidation), so it loads version 1.
    eventually("b to read the new version while cut off", WAIT, || async {
        let p: Arc<Product> = b.get_or_load("p", db.loader(1)).await.unwrap();
        p.version == 1
    })
    .await;
    assert!(b.stats().l1_bypassed >= 1, "{:?}", b.stats());

    cut.restore().await;
    eventually("b to trust its L1 again", WAIT, || in_l1(&b, &db, "p")).await;
}

#[tokio::test]
async fn max_staleness_must_leave_room_for_two_heartbeats() {
    let redis = RedisServer::start();
    let log = log(&redis, 10_000)
        .await
        .heartbeat_every(Duration::from_millis(300));
    let err = HybridCache::builder("svc")
        .invalidation(log)
        .max_staleness(Duration::from_millis(500))
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, strata::Error::Config(_)), "{err}");
}
