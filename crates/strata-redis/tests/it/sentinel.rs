//! Sentinel: a real master, a replica and three sentinels on loopback; the master is killed
//! and the cache follows the failover without a restart.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use strata::EntryOptions;
use strata_redis::RedisConfig;
use strata_testkit::source::{Db, Product};
use strata_testkit::{RedisServer, eventually};

use crate::{TTL, instance_with};

const MASTER: &str = "mymaster";

/// A master, a replica in sync with it, and three sentinels that know them both and each other.
pub(crate) async fn group() -> (RedisServer, RedisServer, Vec<RedisServer>) {
    let master = RedisServer::start();
    let replica = RedisServer::options().replica_of(master.port()).start();
    let sentinels: Vec<_> = (0..3)
        .map(|_| {
            RedisServer::options()
                .sentinel(MASTER, master.port())
                .start()
        })
        .collect();
    let formed = || async {
        replica
            .cli(&["INFO", "replication"])
            .contains("master_link_status:up")
            && sentinels.iter().all(|s| {
                let info = s.cli(&["SENTINEL", "MASTER", MASTER]);
                // `redis-cli` prints the reply's fields one per line: name, then value.
                let field = |name: &str| {
                    let mut lines = info.lines();
                    lines.find(|l| *l == name)?;
                    lines.next().map(str::to_owned)
                };
                field("num-slaves").as_deref() == Some("1")
                    && field("num-other-sentinels").as_deref() == Some("2")
            })
    };
    eventually(
        "the Sentinel group to form",
        Duration::from_secs(30),
        formed,
    )
    .await;
    (master, replica, sentinels)
}

/// The URL of `sentinels`' master, as a client in any language is given it.
pub(crate) fn url_of(sentinels: &[RedisServer]) -> String {
    let hosts: Vec<String> = sentinels
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port()))
        .collect();
    format!("redis+sentinel://{}/{MASTER}", hosts.join(","))
}

/// The settings a client of `sentinels` uses.
fn config_of(sentinels: &[RedisServer]) -> RedisConfig {
    RedisConfig::from_url(&url_of(sentinels)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_follows_a_failover_without_a_restart() {
    let (mut master, replica, sentinels) = group().await;
    let config = config_of(&sentinels);
    let cache = instance_with(&config, EntryOptions::ttl(TTL)).await;
    let db = Db::new();
    let _: Arc<Product> = cache.get_or_load("before", db.loader(1)).await.unwrap();
    cache.run_pending_tasks().await;
    assert!(
        master.cli(&["EXISTS", "svc:before"]).ends_with('1'),
        "written to the master"
    );

    master.kill();
    let killed = Instant::now();
    // Reads go on through the failover (L1 and the loader); each new key is loaded and, once
    // the replica is promoted and found, written to it.
    let n = AtomicU64::new(0);
    let named_after = Mutex::new(None);
    let reached_replica = || async {
        let n = n.fetch_add(1, Ordering::Relaxed) + 1;
        let named = sentinels[0].cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER]);
        if named.ends_with(&replica.port().to_string()) {
            named_after.lock().unwrap().get_or_insert(killed.elapsed());
        }
        let key = format!("during{n}");
        let p: Arc<Product> = cache.get_or_load(&key, db.loader(n)).await.unwrap();
        assert_eq!(p.id, n, "reads are answered all along");
        cache.run_pending_tasks().await; // its fill has landed, or failed
        replica
            .cli(&["EXISTS", &format!("svc:{key}")])
            .ends_with('1')
    };
    eventually(
        "a write to reach the promoted replica",
        Duration::from_secs(30),
        reached_replica,
    )
    .await;
    let promoted_after = killed.elapsed();
    let (n, named_after) = (n.into_inner(), named_after.into_inner().unwrap());
    assert!(
        replica.cli(&["ROLE"]).starts_with("master"),
        "the replica was promoted"
    );
    println!(
        "SENTINEL: master killed; the sentinels named the replica after {named_after:?}, \
         the cache wrote to it after {promoted_after:?}"
    );

    // Another instance, connected after the failover, reads what this one wrote.
    let other = instance_with(&config, EntryOptions::ttl(TTL)).await;
    let key = format!("during{n}");
    let _: Arc<Product> = other.get_or_load(&key, db.loader(n)).await.unwrap();
    assert_eq!(other.stats().l2_hits, 1);
    // And invalidations reach across again.
    cache.invalidate(&key).await.unwrap();
    strata_testkit::eventually(
        "the invalidation to reach the other",
        crate::WAIT,
        || async { other.stats().invalidations_received >= 1 },
    )
    .await;
}

/// Tracking foreign writes follows a failover: the receiver and the engine's connection move
/// to the promoted replica, L1 is dropped once (writes in between went unreported), and a
/// foreign delete on the new master reaches L1 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_follows_a_failover() {
    let (mut master, replica, sentinels) = group().await;
    let config = config_of(&sentinels);
    let cache = crate::tracking::tracking_with(&config, true).await;
    let db = Db::new();
    let _: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    master.kill();
    // Reads (misses) go on until one is written to the promoted replica.
    let n = AtomicU64::new(0);
    eventually(
        "a write to reach the promoted replica",
        Duration::from_secs(30),
        || async {
            let n = n.fetch_add(1, Ordering::Relaxed) + 1;
            let key = format!("during{n}");
            let _: Arc<Product> = cache.get_or_load(&key, db.loader(n)).await.unwrap();
            cache.run_pending_tasks().await; // its fill has landed, or failed
            replica
                .cli(&["EXISTS", &format!("svc:{key}")])
                .ends_with('1')
        },
    )
    .await;
    eventually("L1 dropped for the failover", crate::WAIT, || async {
        cache.stats().resyncs >= 1
    })
    .await;
    crate::tracking::reports_resume(&cache, "q", || drop(replica.cli(&["DEL", "svc:q"]))).await;
}
