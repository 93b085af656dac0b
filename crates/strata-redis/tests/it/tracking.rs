//! Writes made outside Strata's protocol: server-assisted invalidation
//! (`track_foreign_writes`), and fills that never overwrite a foreign write.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata::{EntryOptions, Error, HybridCache, MemoryStore};
use strata_redis::RedisConfig;
use strata_testkit::source::{Db, Product};
use strata_testkit::{RedisServer, eventually};
use tokio::sync::oneshot;

use crate::{TTL, WAIT, builder};

/// An instance in `svc` on `redis` that tracks foreign writes (or not).
async fn tracking(redis: &RedisServer, on: bool) -> HybridCache {
    tracking_with(&RedisConfig::from_url(&redis.url()).unwrap(), on).await
}

/// An instance in `svc` on `config` (a server, Sentinel, a cluster) that tracks foreign
/// writes (or not).
pub(crate) async fn tracking_with(config: &RedisConfig, on: bool) -> HybridCache {
    builder(config, EntryOptions::ttl(TTL))
        .await
        .track_foreign_writes(on)
        .build()
        .await
        .unwrap()
}

/// Whether `cache` answers `key` from L1 (a hit counted as one, no load).
async fn in_l1(cache: &HybridCache, key: &str, db: &Db) -> bool {
    let (hits, calls) = (cache.stats().l1_hits, db.calls());
    let _: Arc<Product> = cache.get_or_load(key, db.loader(1)).await.unwrap();
    cache.stats().l1_hits == hits + 1 && db.calls() == calls
}

/// Waits until every report the server sent `cache` before now has been applied: a foreign
/// delete of a key it holds, seen to leave its L1 (reports come in order).
async fn settled(redis: &RedisServer, cache: &HybridCache, db: &Db) {
    let _: Arc<Product> = cache.get_or_load("barrier", db.loader(0)).await.unwrap();
    cache.run_pending_tasks().await; // its fill has landed: only a report can drop it now
    redis.cli(&["DEL", "svc:barrier"]);
    eventually("the barrier's report", WAIT, || async {
        cache.get::<Product>("barrier").await.unwrap().is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_write_leaves_every_tracking_instances_l1() {
    let redis = RedisServer::start();
    let (a, b) = (tracking(&redis, true).await, tracking(&redis, true).await);
    let untracked = tracking(&redis, false).await;
    let db = Db::new();
    for cache in [&a, &b, &untracked] {
        for key in ["p", "q"] {
            let _: Arc<Product> = cache.get_or_load(key, db.loader(1)).await.unwrap();
        }
    }
    assert_eq!(db.calls(), 2, "one load per key, the others read L2");

    // A legacy service deletes one key and overwrites the other, speaking plain Redis.
    redis.cli(&["DEL", "svc:p"]);
    redis.cli(&["SET", "svc:q", "written by someone else"]);
    for cache in [&a, &b] {
        settled(&redis, cache, &db).await;
    }
    // The source changed too: the tracking instances read it; the other keeps its copies
    // until their L1 TTL.
    db.update();
    for cache in [&a, &b] {
        for key in ["p", "q"] {
            let read: Arc<Product> = cache.get_or_load(key, db.loader(1)).await.unwrap();
            assert_eq!(read.version, 1, "{key}: an old copy served");
        }
    }
    for key in ["p", "q"] {
        let read: Arc<Product> = untracked.get_or_load(key, db.loader(1)).await.unwrap();
        assert_eq!(read.version, 0, "{key}: the untracked copy is the old one");
    }
    assert!(a.stats().invalidations_received >= 2);
}

/// `NOLOOP` keeps an instance's plain commands from coming back as reports (the lease a miss
/// takes, in the same `SET` as its read): were they reported, every load would be overtaken
/// by its own lease and never reach L1. What its scripts write (a fill on Redis 7, a
/// write-through) is reported all the same — the server runs a script as no client — and
/// costs the key one read of L2 afterwards: never a load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instances_own_writes_cost_it_no_load() {
    own_writes(&RedisServer::start(), false).await;
}

/// Where the server compares (`SET … IFEQ`), a miss's fill is a plain command too: nothing of
/// a miss comes back, and every key stays in L1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instances_own_plain_writes_are_not_reported_back() {
    if let Some(program) = strata_testkit::conditional_set_server() {
        own_writes(&RedisServer::options().program(program).start(), true).await;
    }
}

async fn own_writes(redis: &RedisServer, plain_fills: bool) {
    let a = tracking(redis, true).await;
    let db = Db::new();
    let keys: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
    for key in &keys {
        let _: Arc<Product> = a.get_or_load(key, db.loader(1)).await.unwrap();
    }
    a.run_pending_tasks().await;
    let written = Product {
        id: 2,
        version: 0,
        name: "written".into(),
    };
    a.set("written", written, &EntryOptions::ttl(TTL))
        .await
        .unwrap();
    // Every report of those writes has arrived once the barrier's has.
    settled(redis, &a, &db).await;
    let calls = db.calls();
    assert_eq!(calls, 51, "50 keys and the barrier, each loaded once");
    let (l1, l2) = (a.stats().l1_hits, a.stats().l2_hits);
    for key in keys.iter().chain([&"written".to_owned()]) {
        let _: Arc<Product> = a.get_or_load(key, db.loader(1)).await.unwrap();
    }
    let (l1, l2) = (a.stats().l1_hits - l1, a.stats().l2_hits - l2);
    assert_eq!(l1 + l2, 51, "each read a hit of L1 or L2");
    assert_eq!(db.calls(), calls, "no load");
    if plain_fills {
        // At most the write-through, a script, came back (before or after its L1 copy).
        assert!(l1 >= 50, "{:?}", a.stats());
    }
    // Reading L2 reports nothing: from now on, L1 holds them all.
    settled(redis, &a, &db).await;
    for key in keys.iter().chain([&"written".to_owned()]) {
        assert!(in_l1(&a, key, &db).await, "{key} left L1: {:?}", a.stats());
    }
}

/// A load holds its lease in the data key; a writer outside the protocol deletes (or
/// overwrites) the key meanwhile. The fill finds its lease gone and does not land: neither L2
/// nor L1 gets the value read before the write — with tracking or without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_overtaken_by_a_foreign_write_does_not_land() {
    let redis = RedisServer::start();
    for on in [false, true] {
        let a = tracking(&redis, on).await;
        for (key, foreign) in [("deleted", None), ("overwritten", Some("theirs"))] {
            let held = Held::start(&a, key).await;
            let data = format!("svc:{key}");
            match foreign {
                None => drop(redis.cli(&["DEL", &data])),
                Some(value) => drop(redis.cli(&["SET", &data, value])),
            }
            let answered = held.finish().await;
            assert_eq!(answered.version, 0, "the caller still gets what it loaded");
            assert_eq!(
                redis.cli(&["GET", &data]),
                foreign.unwrap_or(""),
                "tracking {on}: the fill of {key} landed"
            );
            let db = Db::new();
            assert!(
                !in_l1(&a, key, &db).await,
                "tracking {on}: {key} reached L1"
            );
            assert_eq!(db.calls(), 1, "the next read loads again");
        }
        redis.cli(&["FLUSHALL"]);
    }
}

/// A read of `key` whose load is held open until [`finish`](Self::finish).
pub(crate) struct Held {
    cache: HybridCache,
    release: oneshot::Sender<()>,
    read: tokio::task::JoinHandle<strata::Result<Arc<Product>>>,
}

impl Held {
    /// Starts the read; returns once its loader runs (its lease taken).
    pub(crate) async fn start(cache: &HybridCache, key: &'static str) -> Self {
        let (started_tx, started) = oneshot::channel();
        let (release, released) = oneshot::channel::<()>();
        let reader = cache.clone();
        let read = tokio::spawn(async move {
            reader
                .get_or_load(key, move || async move {
                    let _ = started_tx.send(());
                    let _ = released.await;
                    Ok::<_, io::Error>(Product {
                        id: 1,
                        version: 0,
                        name: "read before the write".into(),
                    })
                })
                .await
        });
        started.await.unwrap();
        Held {
            cache: cache.clone(),
            release,
            read,
        }
    }

    /// Lets the load end; what the read answered, once its fill has landed or been refused.
    pub(crate) async fn finish(self) -> Arc<Product> {
        self.release.send(()).unwrap();
        let answered = self.read.await.unwrap().unwrap();
        self.cache.run_pending_tasks().await;
        answered
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_tracking_drops_l1_and_comes_back() {
    let redis = RedisServer::start();
    let a = tracking(&redis, true).await;
    let db = Db::new();
    let _: Arc<Product> = a.get_or_load("p", db.loader(1)).await.unwrap();

    // The receiver of the reports is killed: what is written until it is back goes
    // unreported, so L1 goes.
    let receiver = redis
        .cli(&["CLIENT", "LIST"])
        .lines()
        .find(|l| l.contains("name=strata:tracking"))
        .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .expect("the receiver names itself")
        .to_owned();
    redis.cli(&["CLIENT", "KILL", "ID", &receiver]);
    // p is still in L2: only a read through L1 tells.
    eventually("L1 dropped", WAIT, || async {
        a.stats().resyncs >= 1 && !in_l1(&a, "p", &Db::new()).await
    })
    .await;

    // Every connection killed at once (the engine's too): reports resume on new ones. Each
    // try holds q in L1, deletes it as a foreign writer, and waits for the report — a try
    // that a late resync interfered with does not count.
    redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    reports_resume(&a, "q", || drop(redis.cli(&["DEL", "svc:q"]))).await;
}

/// Waits until a foreign write is reported to `cache` again (after tracking was lost). Each
/// try holds `key` in L1, has `delete` delete it as a foreign writer, and waits up to a second
/// for the key to leave L1 — a try that a late resync (not the report) emptied L1 in does not
/// count.
pub(crate) async fn reports_resume(cache: &HybridCache, key: &str, delete: impl Fn()) {
    let db = Db::new();
    eventually("reports to resume", Duration::from_secs(30), || async {
        let _: Arc<Product> = cache.get_or_load(key, db.loader(2)).await.unwrap();
        let resyncs = cache.stats().resyncs;
        if !in_l1(cache, key, &db).await {
            return false;
        }
        delete();
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            if cache.get::<Product>(key).await.unwrap().is_none() {
                return cache.stats().resyncs == resyncs;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        false
    })
    .await;
}

#[tokio::test]
async fn a_store_that_cannot_report_writes_is_refused() {
    let built = HybridCache::builder("svc")
        .l2(MemoryStore::default())
        .track_foreign_writes(true)
        .build()
        .await;
    assert!(
        matches!(&built, Err(Error::Config(m)) if m.contains("track_foreign_writes")),
        "{:?}",
        built.err()
    );
}
