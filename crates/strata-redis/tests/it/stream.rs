//! The durable invalidation log: followers that lose their connection resume where they left
//! off, and drop their L1 only when the log lost entries they had not read.

use std::sync::Arc;
use std::time::Duration;

use strata::HybridCache;
use strata_redis::{RedisConfig, RedisStore, RedisStreamLog};
use strata_testkit::source::{Db, Product};
use strata_testkit::{RedisServer, eventually};

use crate::{TTL, WAIT, bounded_instance, instance_with_log, raw_connection};

fn config(redis: &RedisServer) -> RedisConfig {
    RedisConfig::from_url(&redis.url()).unwrap()
}

async fn log(redis: &RedisServer, max_len: usize) -> RedisStreamLog {
    RedisStreamLog::connect_with(&config(redis))
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

/// Cuts the followers of namespace `svc` off and keeps them off (their user cannot log in)
/// until the returned guard's `restore`.
struct Cut(redis::aio::MultiplexedConnection);

impl Cut {
    async fn new(redis: &RedisServer) -> Cut {
        Cut::named(redis, "strata-log:svc").await
    }

    /// Cuts the connections whose name starts with `name`.
    async fn named(redis: &RedisServer, name: &str) -> Cut {
        let mut admin = raw_connection(redis).await;
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut admin)
            .await
            .unwrap();
        let ids: Vec<&str> = clients
            .lines()
            .filter(|l| l.contains(&format!("name={name}")))
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
    let a = instance_with_log(&config(&redis), log(&redis, 10_000).await).await;
    let b = instance_with_log(&config(&redis), log(&redis, 10_000).await).await;
    let db = Db::new();
    for key in ["p", "q"] {
        let _: Arc<Product> = b.get_or_load(key, db.loader(1)).await.unwrap();
    }
    b.run_pending_tasks().await;
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
    let a = instance_with_log(&config(&redis), log(&redis, 10).await).await;
    let b = instance_with_log(&config(&redis), log(&redis, 10).await).await;
    let db = Db::new();
    let _: Arc<Product> = b.get_or_load("q", db.loader(1)).await.unwrap();
    b.run_pending_tasks().await;
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
    let a = instance_with_log(&config(&redis), log(&redis, 10_000).await).await;
    let b = instance_with_log(&config(&redis), log(&redis, 10_000).await).await;
    let db = Db::new();
    a.invalidate("warm-up").await.unwrap(); // b now has a position in the log
    eventually("b to read it", WAIT, || async {
        b.stats().invalidations_received == 1
    })
    .await;
    let _: Arc<Product> = b.get_or_load("q", db.loader(1)).await.unwrap();
    b.run_pending_tasks().await; // the fill has landed: only the resync can drop L1
    // No persistence: the stream is gone, and with it whatever b had not read yet.
    redis.restart();
    eventually("b to resync", WAIT, || async { !in_l1(&b, &db, "q").await }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_a_waited_on_load_is_announced_to_followers() {
    use strata::invalidation::{Invalidation, LogEvent, Target};
    use strata::{Fence, InvalidationLog, L2Store, Read, WriteMode};

    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let log = log(&redis, 10_000).await;
    let mut events = log.follow("svc").await.unwrap();
    let claim = |token| Some((token, TTL));
    let bytes = bytes::Bytes::from_static(b"v");
    let fill = |token| WriteMode::Fill {
        fence: Fence::Lease(token),
        lease: None,
        lease_ttl: TTL,
    };

    // Waited on, ended by the fill: announced.
    assert_eq!(
        store.read("svc", "k", claim(1), false).await.unwrap(),
        Read::Leased
    );
    assert_eq!(
        store.read("svc", "k", claim(2), true).await.unwrap(),
        Read::Loading { waited_on: false }
    );
    let written = store
        .set("svc", "k", bytes.clone(), TTL, &[], fill(1))
        .await
        .unwrap();
    assert!(written.stored);
    assert_eq!(next(&mut events).await, LogEvent::Filled("k".into()));

    // Waited on, released by a holder whose load failed: announced too.
    assert_eq!(
        store.read("svc", "f", claim(3), false).await.unwrap(),
        Read::Leased
    );
    assert_eq!(
        store.read("svc", "f", claim(4), true).await.unwrap(),
        Read::Loading { waited_on: false }
    );
    store.release("svc", "f", 3).await.unwrap();
    assert_eq!(next(&mut events).await, LogEvent::Filled("f".into()));

    // Nobody waited: nothing announced (the next event is the marker invalidation).
    assert_eq!(
        store.read("svc", "quiet", claim(5), false).await.unwrap(),
        Read::Leased
    );
    store
        .set("svc", "quiet", bytes, TTL, &[], fill(5))
        .await
        .unwrap();
    let marker = Invalidation {
        origin: 7,
        target: Target::Key("marker".into()),
    };
    let position = log.publish("svc", &marker).await.unwrap();
    assert_eq!(
        position,
        Some(strata::invalidation::Position { part: 0, seq: 1 }),
        "the log's first entry"
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_follower_stops_trusting_l1_after_max_staleness_and_resumes_once_caught_up() {
    let redis = RedisServer::start();
    let max = Duration::from_millis(400);
    let a = bounded_instance(&config(&redis), max, 1).await;
    let b = bounded_instance(&config(&redis), max, 1).await;
    let db = Db::new();
    let _: Arc<Product> = b.get_or_load("p", db.loader(1)).await.unwrap();
    b.run_pending_tasks().await;
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

fn key_invalidation(key: &str) -> strata::invalidation::Invalidation {
    strata::invalidation::Invalidation {
        origin: 1,
        target: strata::invalidation::Target::Key(key.into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_split_in_shards_delivers_everything_and_every_instance_agrees_on_the_count() {
    use strata::InvalidationLog;
    use strata::invalidation::{Invalidation, LogEvent, Target};
    let redis = RedisServer::start();
    let mut admin = raw_connection(&redis).await;
    // The namespace's owner splits its log; a follower that configures nothing adopts it.
    let owner = log(&redis, 10_000).await.shards("svc", 4);
    let _owner_events = owner.follow("svc").await.unwrap();
    let mut events = log(&redis, 10_000).await.follow("svc").await.unwrap();
    for i in 0..200 {
        owner
            .publish("svc", &key_invalidation(&format!("k{i}")))
            .await
            .unwrap();
    }
    let mut keys = std::collections::HashSet::new();
    while keys.len() < 200 {
        match next(&mut events).await {
            LogEvent::Apply(Invalidation {
                target: Target::Key(k),
                ..
            }) => assert!(keys.insert(k), "delivered once"),
            other => panic!("{other:?}"),
        }
    }
    let mut lengths = Vec::new();
    for part in ["svc#log", "svc#log.1", "svc#log.2", "svc#log.3"] {
        let len: usize = redis::cmd("XLEN")
            .arg(part)
            .query_async(&mut admin)
            .await
            .unwrap();
        lengths.push(len);
    }
    assert_eq!(lengths.iter().sum::<usize>(), 200, "{lengths:?}");
    assert!(lengths.iter().all(|l| *l > 20), "spread: {lengths:?}");
    // Tags and clears reach the followers of every part too.
    for target in [Target::Tag("t".into()), Target::Clear] {
        let inv = Invalidation { origin: 1, target };
        owner.publish("svc", &inv).await.unwrap();
        assert_eq!(next(&mut events).await, LogEvent::Apply(inv));
    }

    // An instance configured otherwise is refused, following and publishing, and says why.
    for shards in [2, 0] {
        let wrong = log(&redis, 10_000).await.shards("svc", shards);
        let e = wrong.follow("svc").await.unwrap_err();
        assert!(
            matches!(&e, strata::Error::Config(m) if m.contains("svc")),
            "{e}"
        );
        let e = wrong
            .publish("svc", &key_invalidation("k"))
            .await
            .unwrap_err();
        assert!(matches!(e, strata::Error::Config(_)), "{e}");
    }
    assert_eq!(
        lengths.iter().sum::<usize>(),
        200,
        "nothing published by them"
    );

    // Entries lost from one part (its sequence jumps) drop L1: parts 1 to 3 skip 5 each,
    // and the next keys, some of which land there, bring a resync.
    for part in 1..4 {
        redis::cmd("INCRBY")
            .arg(format!("svc#log.{part}:seq"))
            .arg(5)
            .exec_async(&mut admin)
            .await
            .unwrap();
    }
    for i in 0..10 {
        owner
            .publish("svc", &key_invalidation(&format!("again{i}")))
            .await
            .unwrap();
    }
    let mut resyncs = 0;
    for _ in 0..10 {
        loop {
            match next(&mut events).await {
                LogEvent::Resync => resyncs += 1,
                LogEvent::Apply(_) => break,
                other => panic!("{other:?}"),
            }
        }
    }
    assert!(
        (1..=3).contains(&resyncs),
        "one per part that skipped: {resyncs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stalled_part_of_a_split_log_is_enough_to_stop_trusting_l1() {
    let redis = RedisServer::start();
    let cache = bounded_instance(&config(&redis), Duration::from_millis(400), 3).await;
    let db = Db::new();
    let _: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    cache.run_pending_tasks().await;
    assert!(
        in_l1(&cache, &db, "p").await,
        "trusted while every part reports"
    );
    // Part 2's reader is cut off; parts 0 and 1 go on reporting every 100 ms.
    let cut = Cut::named(&redis, "strata-log:svc#2:").await;
    eventually("L1 to be passed over", WAIT, || async {
        !in_l1(&cache, &db, "p").await
    })
    .await;
    assert!(cache.stats().l1_bypassed >= 1, "{:?}", cache.stats());
    cut.restore().await;
    eventually("L1 to be trusted again", WAIT, || in_l1(&cache, &db, "p")).await;
}

/// A namespace written with a newer protocol is refused, following and publishing, with the
/// versions in the message; the first instance records the version it speaks.
#[tokio::test]
async fn a_namespace_of_a_newer_protocol_is_refused() {
    use strata::InvalidationLog;
    let redis = RedisServer::start();
    let first = log(&redis, 10_000).await;
    first.publish("svc", &key_invalidation("k")).await.unwrap();
    assert_eq!(
        redis.cli(&["GET", "svc#protocol"]).trim(),
        strata_redis::PROTOCOL_VERSION.to_string()
    );
    redis.cli(&["SET", "newer#protocol", "2"]);
    let later = log(&redis, 10_000).await;
    let e = later.follow("newer").await.unwrap_err();
    assert!(
        matches!(&e, strata::Error::Config(m) if m.contains(&format!(
            "is written with protocol version 2; this instance speaks version {}: upgrade it",
            strata_redis::PROTOCOL_VERSION
        ))),
        "{e}"
    );
    let e = later
        .publish("newer", &key_invalidation("k"))
        .await
        .unwrap_err();
    assert!(matches!(e, strata::Error::Config(_)), "{e}");
    assert_eq!(
        redis.cli(&["XLEN", "newer#log"]).trim(),
        "0",
        "nothing published"
    );
}

/// A follower is pushed every entry as it is appended — in order, none lost, however fast
/// they come (here ten times the log's length, so a follower that fell back on reading the
/// stream would find its place trimmed away) — and reads the stream only for what it was
/// not pushed: entries appended by a writer that pushes nothing are applied by the next
/// heartbeat, and one pushed after them makes it read them at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_are_pushed_every_entry_and_read_the_stream_only_for_a_gap() {
    use strata::invalidation::{Invalidation, InvalidationLog, LogEvent, Target};
    let redis = RedisServer::start();
    let log = log(&redis, 100).await;
    let mut events = log.follow("svc").await.unwrap();
    let key = |i: usize| Invalidation {
        origin: 1,
        target: Target::Key(format!("k{i}")),
    };
    for i in 0..1_000 {
        log.publish("svc", &key(i)).await.unwrap();
    }
    for i in 0..1_000 {
        assert_eq!(
            next(&mut events).await,
            LogEvent::Apply(key(i)),
            "entry {i}"
        );
    }
    let stats = redis.cli(&["INFO", "commandstats"]);
    assert!(!stats.contains("cmdstat_xread:"), "{stats}");

    // Two entries appended as a writer without pub/sub would: not pushed.
    let mut raw = raw_connection(&redis).await;
    // The log's numbering and entry, as `docs/protocol.md` §4 has them, without the push.
    let mut append_unpushed = async |invalidation: &Invalidation| {
        let seq: u64 = redis::cmd("INCR")
            .arg("svc#log:seq")
            .query_async(&mut raw)
            .await
            .unwrap();
        let _: String = redis::cmd("XADD")
            .arg("svc#log")
            .arg("*")
            .arg("s")
            .arg(seq)
            .arg("d")
            .arg(invalidation.encode())
            .query_async(&mut raw)
            .await
            .unwrap();
    };
    append_unpushed(&key(1_000)).await;
    append_unpushed(&key(1_001)).await;
    // The heartbeat (1 s) finds them.
    assert_eq!(next(&mut events).await, LogEvent::Apply(key(1_000)));
    assert_eq!(next(&mut events).await, LogEvent::Apply(key(1_001)));
    // One more unpushed, then a pushed one: the gap is read from the stream (an `XRANGE`) in
    // order — not applied out of order, nor taken for lost entries (a resync).
    let xranges = || {
        let stats = redis.cli(&["INFO", "commandstats"]);
        assert!(!stats.contains("cmdstat_xread:"), "{stats}");
        stats
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_xrange:calls="))
            .and_then(|rest| rest.split(',').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = xranges();
    append_unpushed(&key(1_002)).await;
    log.publish("svc", &key(1_003)).await.unwrap();
    assert_eq!(next(&mut events).await, LogEvent::Apply(key(1_002)));
    assert_eq!(next(&mut events).await, LogEvent::Apply(key(1_003)));
    assert!(xranges() > before, "the gap was read from the stream");
}
