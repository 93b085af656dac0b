//! Several instances sharing one Redis, each with its own connections and L1.

use std::sync::Arc;

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
    db.set_delay(std::time::Duration::from_millis(50));
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
    // The fill released the lease before anyone was answered.
    assert_eq!(redis.cli(&["EXISTS", "svc#lease:cold"]), "0");
    let commands = redis.cli(&["INFO", "commandstats"]);
    // One read of the value (GET); one script that reads its generations (MGET), checks that
    // no fill landed meanwhile (GET) and takes the lease (SET NX); one fenced fill: a script
    // that releases the lease (GET, UNLINK), reads the generations again (MGET) and sets the
    // value. The other GETs are the log follower's start and the log's shard count, agreed
    // (GET, and SET by the first instance) once per namespace.
    assert!(
        commands.contains("cmdstat_get:calls=5,"),
        "one L2 read: {commands}"
    );
    assert!(
        commands.contains("cmdstat_mget:calls=2,"),
        "one generation read, one in the fill: {commands}"
    );
    assert!(
        commands.contains("cmdstat_set:calls=3,"),
        "the lease, the fill's write and the shard count: {commands}"
    );
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
    // Invalidations published while the follower is away are lost with pub/sub; the follower
    // must assume the worst when it is back.
    redis.restart();
    eventually("the follower to resync", WAIT, || async {
        cache.get::<Product>("p").await.unwrap().is_none()
    })
    .await;
    assert!(cache.stats().invalidations_received >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_cold_keys_is_one_read_one_generation_read_and_one_load() {
    let redis = RedisServer::start();
    let cache = instance(&redis, EntryOptions::ttl(TTL)).await;
    let db = Db::new();
    let loads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let loader = {
        let (db, loads) = (db.clone(), loads.clone());
        move |keys: Vec<String>| async move {
            loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut found = std::collections::HashMap::new();
            for (id, key) in keys.into_iter().enumerate() {
                found.insert(key, db.fetch(id as u64).await?);
            }
            Ok::<_, std::io::Error>(found)
        }
    };
    let got = cache
        .get_many_or_load::<Product, _, _, _>(&["a", "b", "c"], &EntryOptions::ttl(TTL), loader)
        .await
        .unwrap();
    assert!(got.iter().all(Option::is_some));
    assert_eq!(loads.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(
        redis.cli(&["EXISTS", "svc:a", "svc:b", "svc:c"]),
        "3",
        "all filled"
    );
    let commands = redis.cli(&["INFO", "commandstats"]);
    // One MGET of the values, one MGET of their generations, and one fill script per key
    // (each reads its generations with an MGET inside); the only GETs are the log follower's
    // start and the log's shard count.
    assert!(commands.contains("cmdstat_mget:calls=5,"), "{commands}");
    assert!(commands.contains("cmdstat_get:calls=2,"), "{commands}");
}
