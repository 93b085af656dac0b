//! The store, the leases and the invalidation log on a real Redis Cluster: three masters,
//! three replicas, on loopback (`strata_testkit::RedisCluster`).

use std::time::Duration;

use bytes::Bytes;
use redis::cluster_routing::Slot;
use strata::{EntryOptions, L2Store, WriteMode};
use strata_redis::{RedisConfig, RedisStore};
use strata_testkit::{RedisCluster, eventually};

use crate::store::{fills_are_fenced_by_what_they_found, put};
use crate::{TTL, WAIT, instance_with};

/// The master listening on `port`.
fn master_at(cluster: &RedisCluster, port: u16) -> &strata_testkit::RedisServer {
    cluster
        .masters()
        .into_iter()
        .map(|i| cluster.node(i))
        .find(|n| n.port() == port)
        .expect("a master on that port")
}

/// Which master holds `key` now (its port), by asking every node (`CLUSTER KEYSLOT` +
/// `CLUSTER NODES` would do too; `EXISTS` on each master is what an operator would type).
fn holder(cluster: &RedisCluster, key: &str) -> Option<u16> {
    cluster
        .masters()
        .into_iter()
        .map(|i| cluster.node(i))
        .find(|n| n.cli(&["EXISTS", key]) == "1")
        .map(strata_testkit::RedisServer::port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_keeps_its_promises_across_slots_and_masters() {
    let _one = crate::HEAVY.lock().await;
    let cluster = RedisCluster::start();
    let config = RedisConfig::from_url(&cluster.url()).unwrap();
    assert!(config.is_cluster());
    let store = RedisStore::connect_with(&config).await.unwrap();

    // Values land on all three masters; one MGET reads them all back in order (the client
    // splits it by slot).
    let keys: Vec<String> = (0..30).map(|i| format!("k{i}")).collect();
    for key in &keys {
        put(&store, "svc", key, b"v", &["all".into()]).await;
    }
    let mut holders: Vec<u16> = keys
        .iter()
        .filter_map(|k| holder(&cluster, &format!("svc:{k}")))
        .collect();
    assert_eq!(holders.len(), 30, "every value is on some master");
    holders.sort_unstable();
    holders.dedup();
    assert_eq!(holders.len(), 3, "spread over the three masters");
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mut with_missing = refs.clone();
    with_missing.insert(5, "missing");
    let got = store.get_many("svc", &with_missing).await.unwrap();
    assert_eq!(got.len(), 31);
    assert_eq!(got[5], None);
    assert!(got.iter().enumerate().all(|(i, v)| i == 5 || v.is_some()));

    // A key's lease record, refresh lease and waiting mark share its slot; braces in a key
    // too: a fill's script runs in that one slot.
    for key in ["k1", "a{b}c", "}{"] {
        put(&store, "svc", key, b"v", &[]).await;
        store.delete("svc", key, None).await.unwrap();
        assert_eq!(store.get("svc", key).await.unwrap(), None, "{key}");
        let lease = Some((1, TTL));
        let read = store.read("svc", key, lease, true).await.unwrap();
        assert_eq!(read, strata::Read::Leased, "{key}");
        let mode = WriteMode::Fill {
            fence: strata::Fence::Lease(1),
            lease: Some(2),
            lease_ttl: TTL,
        };
        let v = Bytes::from_static(b"v");
        let written = store.set("svc", key, v, TTL, &[], mode).await.unwrap();
        assert!(written.stored, "{key}");
        store.delete("svc", key, None).await.unwrap();
    }
    assert_eq!(
        Slot::for_key("svc:a{b}c"),
        Slot::for_key("b"),
        "a key's own braces decide its data slot, as Redis hashes it"
    );

    // A tag's index lives in one slot, its members in others: all go together.
    assert_eq!(store.delete_by_tag("svc", "all").await.unwrap(), 29);
    let after = store.get_many("svc", &refs).await.unwrap();
    assert!(after.iter().all(Option::is_none), "{after:?}");

    // Clear scans every master.
    for key in &keys {
        put(&store, "svc", key, b"v", &["t".into()]).await;
    }
    put(&store, "other", "k0", b"v", &[]).await;
    assert_eq!(
        store.clear("svc").await.unwrap(),
        31,
        "30 values, one index"
    );
    assert_eq!(
        store.get("other", "k0").await.unwrap(),
        Some(Bytes::from_static(b"v"))
    );

    // The fencing contract, as on one server.
    fills_are_fenced_by_what_they_found(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_racing_a_clear_is_refused() {
    let _one = crate::HEAVY.lock().await;
    let cluster = RedisCluster::start();
    let store = RedisStore::connect(&cluster.url()).await.unwrap();
    let read = store.read("svc", "k", Some((1, TTL)), false).await.unwrap();
    assert_eq!(read, strata::Read::Leased);
    store.clear("svc").await.unwrap();
    let written = store
        .set(
            "svc",
            "k",
            Bytes::from_static(b"loaded before the clear"),
            TTL,
            &[],
            WriteMode::Fill {
                fence: strata::Fence::Lease(1),
                lease: None,
                lease_ttl: TTL,
            },
        )
        .await
        .unwrap();
    assert!(!written.stored);
    assert_eq!(store.get("svc", "k").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_stay_coherent_through_the_log_on_a_cluster() {
    let _one = crate::HEAVY.lock().await;
    let cluster = RedisCluster::start();
    let config = RedisConfig::from_url(&cluster.url()).unwrap();
    let options = EntryOptions::ttl(TTL);
    let a = instance_with(&config, options.clone()).await;
    let b = instance_with(&config, options.clone()).await;
    let tagged = EntryOptions::ttl(TTL).tags(["group"]);
    for i in 0..20 {
        let key = format!("k{i}");
        a.set(&key, format!("v1-{i}"), &tagged).await.unwrap();
        let seen: Option<std::sync::Arc<String>> = b.get(&key).await.unwrap();
        assert_eq!(
            seen.as_deref().map(String::as_str),
            Some(&*format!("v1-{i}"))
        );
    }
    // Every key is in B's L1 now; A's writes must reach it through the log.
    for i in 0..20 {
        a.set(&format!("k{i}"), format!("v2-{i}"), &tagged)
            .await
            .unwrap();
    }
    eventually("B sees every new value", WAIT, || async {
        for i in 0..20 {
            let seen: Option<std::sync::Arc<String>> = b.get(&format!("k{i}")).await.unwrap();
            if seen.as_deref() != Some(&format!("v2-{i}")) {
                return false;
            }
        }
        true
    })
    .await;
    a.invalidate_tag("group").await.unwrap();
    eventually("B drops the tag's keys", WAIT, || async {
        let seen: Option<std::sync::Arc<String>> = b.get("k7").await.unwrap();
        seen.is_none()
    })
    .await;
    // Single-flight across instances on the cluster: one load for both.
    let loads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let load = |cache: strata::HybridCache| {
        let loads = loads.clone();
        async move {
            cache
                .get_or_load("cold", move || async move {
                    loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok::<_, std::io::Error>("loaded".to_owned())
                })
                .await
                .unwrap()
        }
    };
    let (x, y) = tokio::join!(load(a.clone()), load(b.clone()));
    assert_eq!((x.as_str(), y.as_str()), ("loaded", "loaded"));
    assert_eq!(loads.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_one_node_serves_the_log_pubsub_and_clear() {
    let _one = crate::HEAVY.lock().await;
    let cluster = RedisCluster::start_alone();
    assert!(
        cluster.node(0).cli(&["CLUSTER", "NODES"]).contains(" :"),
        "the node does not know its own address"
    );
    let config = RedisConfig::from_url(&cluster.url()).unwrap();
    let options = EntryOptions::ttl(TTL);
    // Through the log (which waits on no replica: there is none).
    let (a, b) = (
        instance_with(&config, options.clone()).await,
        instance_with(&config, options.clone()).await,
    );
    // Through sharded pub/sub, which subscribes on the node serving the channel's slot.
    let pubsub = || async {
        let log = strata_redis::RedisPubSub::connect_with(&config)
            .await
            .unwrap();
        crate::instance_with_log(&config, log).await
    };
    let (c, d) = (pubsub().await, pubsub().await);
    for (writer, reader) in [(&a, &b), (&c, &d)] {
        writer.set("k", "v1".to_owned(), &options).await.unwrap();
        let seen: Option<std::sync::Arc<String>> = reader.get("k").await.unwrap();
        assert_eq!(seen.as_deref().map(String::as_str), Some("v1"));
        writer.set("k", "v2".to_owned(), &options).await.unwrap();
        eventually("the reader to see the new value", WAIT, || async {
            let seen: Option<std::sync::Arc<String>> = reader.get("k").await.unwrap();
            seen.as_deref().map(String::as_str) == Some("v2")
        })
        .await;
    }
    // `clear` scans the node by its address.
    let store = RedisStore::connect_with(&config).await.unwrap();
    store
        .set(
            "svc",
            "x",
            Bytes::from_static(b"1"),
            TTL,
            &[],
            WriteMode::REPLACE,
        )
        .await
        .unwrap();
    store.clear("svc").await.unwrap();
    assert_eq!(store.get("svc", "x").await.unwrap(), None);
}

/// Whether `key` is served from `cache`'s L1 (a read that counts an L1 hit).
async fn served_from_l1(cache: &strata::HybridCache, key: &str) -> bool {
    let before = cache.stats().l1_hits;
    let _: Option<std::sync::Arc<String>> = cache.get(key).await.unwrap();
    cache.stats().l1_hits == before + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_log_lives_on_every_master_and_one_stalled_part_stops_l1_trust() {
    let _one = crate::HEAVY.lock().await;
    let cluster = RedisCluster::start();
    let config = RedisConfig::from_url(&cluster.url()).unwrap();
    let a = crate::bounded_instance(&config, Duration::from_secs(60), 3).await;
    let b = crate::bounded_instance(&config, Duration::from_millis(400), 3).await;
    for i in 0..30 {
        a.set(&format!("k{i}"), "v1".to_owned(), &EntryOptions::ttl(TTL))
            .await
            .unwrap();
        assert!(b.get::<String>(&format!("k{i}")).await.unwrap().is_some());
    }
    for i in 0..30 {
        a.set(&format!("k{i}"), "v2".to_owned(), &EntryOptions::ttl(TTL))
            .await
            .unwrap();
    }
    eventually("B sees every new value through the parts", WAIT, || async {
        for i in 0..30 {
            let seen = b.get::<String>(&format!("k{i}")).await.unwrap();
            if seen.as_deref().map(String::as_str) != Some("v2") {
                return false;
            }
        }
        true
    })
    .await;
    // One part per master.
    let mut parts = Vec::new();
    for i in cluster.masters() {
        let node = cluster.node(i);
        for key in node.cli(&["--scan", "--pattern", "svc#log*"]).lines() {
            if node.cli(&["TYPE", key]) == "stream" {
                parts.push((node.port(), key.to_owned()));
            }
        }
    }
    let mut ports: Vec<u16> = parts.iter().map(|(port, _)| *port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!((parts.len(), ports.len()), (3, 3), "{parts:?}");

    // Stall the master of part 1 (not part 0's, which also carries the lease releases): B's
    // reader of it cannot report, the others do; past the bound B passes its L1 over. The
    // key read lives on another master, so the read itself goes on.
    let (stalled, _) = parts
        .iter()
        .find(|(_, key)| key.starts_with("svc#log.1{"))
        .cloned()
        .unwrap();
    let mut key = String::new();
    for i in 0.. {
        key = format!("p{i}");
        a.set(&key, "v".to_owned(), &EntryOptions::ttl(TTL))
            .await
            .unwrap();
        if holder(&cluster, &format!("svc:{key}")) != Some(stalled) {
            break;
        }
    }
    assert!(b.get::<String>(&key).await.unwrap().is_some());
    assert!(
        served_from_l1(&b, &key).await,
        "trusted while every part reports"
    );
    let node = cluster.node(cluster.index_of(stalled));
    assert_eq!(node.cli(&["CLIENT", "PAUSE", "3000", "ALL"]), "OK");
    let bypassed = b.stats().l1_bypassed;
    eventually("B to pass its L1 over", WAIT, || async {
        !served_from_l1(&b, &key).await
    })
    .await;
    assert!(b.stats().l1_bypassed > bypassed, "{:?}", b.stats());
    eventually(
        "B to trust its L1 again once the master answers",
        WAIT,
        || served_from_l1(&b, &key),
    )
    .await;
}

/// The master (by start index) with `subscribers` shard subscribers to `channel`.
fn shard_channel_master(cluster: &RedisCluster, channel: &str, subscribers: &str) -> Option<usize> {
    cluster.masters().into_iter().find(|i| {
        let reply = cluster.node(*i).cli(&["PUBSUB", "SHARDNUMSUB", channel]);
        reply.lines().nth(1) == Some(subscribers)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_is_sharded_on_a_cluster_and_follows_its_channel_through_a_failover() {
    let _one = crate::HEAVY.lock().await;
    let mut cluster = RedisCluster::start();
    let config = RedisConfig::from_url(&cluster.url()).unwrap();
    let instance = || async {
        let pubsub = strata_redis::RedisPubSub::connect_with(&config)
            .await
            .unwrap();
        // Other stacks' plain pub/sub too, which a cluster broadcasts to every node.
        let log = strata_redis::CompatChannel::wrap(pubsub, &config)
            .await
            .unwrap();
        crate::instance_with_log(&config, log).await
    };
    let (a, b) = (instance().await, instance().await);
    let channel = strata_redis::channel("svc");
    // Both followers sit on the master of the channel's slot, and nowhere else.
    let owner = shard_channel_master(&cluster, &channel, "2").expect("two shard subscribers");
    let set_and_read = |value: &'static str| {
        let (a, b) = (a.clone(), b.clone());
        async move {
            let heard = b.stats().invalidations_received;
            a.set("k", value.to_owned(), &EntryOptions::ttl(TTL))
                .await
                .unwrap();
            // The write's invalidation reaches B first: a read before it could fill L1 with the
            // new value only for that message to drop it again (pub/sub is not ordered with L2).
            eventually("B to hear of the write", WAIT, || async {
                b.stats().invalidations_received > heard
            })
            .await;
            eventually("B to see the new value", WAIT, || async {
                b.get::<String>("k")
                    .await
                    .unwrap()
                    .as_deref()
                    .map(String::as_str)
                    == Some(value)
            })
            .await;
        }
    };
    set_and_read("v1").await;
    assert!(served_from_l1(&b, "k").await);
    set_and_read("v2").await;
    let published = cluster.node(owner).cli(&["INFO", "commandstats"]);
    assert!(published.contains("cmdstat_spublish:"), "{published}");

    // A plain message from another stack, sent to whichever node: B drops the key.
    let other = cluster.masters().into_iter().find(|i| *i != owner).unwrap();
    let message = r#"{"service":"svc","key":"k","timestamp":1}"#;
    cluster
        .node(other)
        .cli(&["PUBLISH", strata_redis::DEFAULT_COMPAT_CHANNEL, message]);
    eventually(
        "B to drop the key another stack invalidated",
        WAIT,
        || async { !served_from_l1(&b, "k").await },
    )
    .await;

    // The channel's master dies; its replica takes over. The followers find the slot's new
    // master, subscribe there and drop L1 (what was published meanwhile is lost).
    let resyncs = b.stats().resyncs;
    tokio::task::block_in_place(|| cluster.fail_over(owner));
    eventually(
        "both followers to subscribe on the new master",
        WAIT,
        || async { shard_channel_master(&cluster, &channel, "2").is_some() },
    )
    .await;
    assert_ne!(shard_channel_master(&cluster, &channel, "2"), Some(owner));
    assert!(b.stats().resyncs > resyncs, "B dropped its L1");
    // And the channel carries invalidations again.
    set_and_read("v3").await;
    set_and_read("v4").await;

    // The channel's slot moves to another master: the old one unsubscribes the followers,
    // which subscribe on the new one.
    let owner = shard_channel_master(&cluster, &channel, "2").unwrap();
    let to = cluster.masters().into_iter().find(|i| *i != owner).unwrap();
    let slot: u16 = cluster
        .node(owner)
        .cli(&["CLUSTER", "KEYSLOT", &channel])
        .parse()
        .unwrap();
    let resyncs = b.stats().resyncs;
    tokio::task::block_in_place(|| cluster.move_slot(slot, to));
    eventually(
        "both followers to subscribe where the slot went",
        WAIT,
        || async { shard_channel_master(&cluster, &channel, "2") == Some(to) },
    )
    .await;
    assert!(b.stats().resyncs > resyncs, "B dropped its L1");
    set_and_read("v5").await;
    set_and_read("v6").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_behind_flushes_and_dead_letters_on_a_cluster() {
    let _one = crate::HEAVY.lock().await;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use strata::{Flusher, HybridCache, QueuedWrite};
    use strata_redis::RedisWriteQueue;

    let cluster = RedisCluster::start();
    let config = RedisConfig::from_url(&cluster.url()).unwrap();
    let cache = HybridCache::builder("orders")
        .l2(RedisStore::connect_with(&config).await.unwrap())
        .write_queue(RedisWriteQueue::connect_with(&config).await.unwrap())
        .build()
        .await
        .unwrap();
    for id in 0..20u64 {
        cache
            .write_behind(&format!("order:{id}"), id, &EntryOptions::ttl(TTL))
            .await
            .unwrap();
    }
    let applied = Arc::new(AtomicU64::new(0));
    let seen = applied.clone();
    let flusher = tokio::spawn(
        Flusher::new(
            RedisWriteQueue::connect_with(&config).await.unwrap(),
            "orders",
        )
        .max_attempts(2)
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .run(move |write: QueuedWrite<u64>| {
            let seen = seen.clone();
            async move {
                if write.value == 13 {
                    return Err("constraint violation");
                }
                seen.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }),
    );
    let mut conn = config
        .connect_cluster(Duration::from_secs(1))
        .await
        .unwrap();
    let len = |key: &'static str| {
        let mut conn = conn.clone();
        async move {
            redis::cmd("XLEN")
                .arg(key)
                .query_async::<u64>(&mut conn)
                .await
                .unwrap()
        }
    };
    eventually("the queue drains", WAIT, || async {
        len("orders#wb{orders}").await == 0
    })
    .await;
    flusher.abort();
    assert_eq!(applied.load(Ordering::SeqCst), 19);
    assert_eq!(len("orders#wb:dead{orders}").await, 1);
    let dead: String = redis::cmd("XRANGE")
        .arg("orders#wb:dead{orders}")
        .arg("-")
        .arg("+")
        .query_async::<redis::Value>(&mut conn)
        .await
        .map(|v| format!("{v:?}"))
        .unwrap();
    assert!(dead.contains("order:13"), "{dead}");
}

/// The coherence checker's workers (`checker.rs`), three processes on the cluster, reading
/// and writing 200 keys at random until [`Checker::finish`] (at most two minutes: the run
/// lasts as long as the test's schedule of faults takes); the versions live in `source`
/// (another Redis, the service's database).
struct Checker {
    workers: Vec<tokio::process::Child>,
    stop: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Checker {
    fn start(
        cluster: &RedisCluster,
        source: &strata_testkit::RedisServer,
        max_staleness: Duration,
        log_shards: usize,
    ) -> Checker {
        let dir = tempfile::tempdir().unwrap();
        let stop = dir.path().join("stop");
        let run = crate::checker::Run {
            url: cluster.url(),
            source: source.url(),
            keys: 200,
            run_ms: 120_000,
            stop_file: Some(stop.clone()),
            max_staleness_ms: max_staleness.as_millis() as u64,
            log_shards,
        };
        Checker {
            workers: crate::checker::spawn(&vec![run; 3]),
            stop,
            _dir: dir,
        }
    }

    /// Ends the run; the workers' records.
    async fn finish(self) -> Vec<crate::checker::Record> {
        std::fs::write(&self.stop, b"").unwrap();
        crate::checker::records(self.workers).await
    }
}

/// What the checker found: reads, commits, errors and reads past `bound`, printed.
fn checked(
    what: &str,
    records: &[crate::checker::Record],
    bound: Duration,
) -> crate::checker::Errors {
    let reads: usize = records.iter().map(|r| r.reads.len()).sum();
    let writes: usize = records.iter().map(|r| r.commits.len()).sum();
    let errors = crate::checker::errors(records);
    let stale = crate::checker::violations(records, bound);
    let pause = crate::checker::longest_write_pause(records);
    println!(
        "{what}: {reads} reads, {writes} writes, {errors:?}, {stale} reads past the {bound:?} \
         bound, longest pause between acknowledged writes {pause:.1?}"
    );
    assert!(reads > 1000 && writes > 100, "a real workload ran");
    assert_eq!(stale, 0, "no read past the staleness bound");
    errors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_slot_migration_serves_no_stale_read_and_no_error() {
    let _one = crate::HEAVY.lock().await;
    let cluster = RedisCluster::start();
    let source = strata_testkit::RedisServer::start();
    let bound = Duration::from_millis(500);
    let masters = cluster.masters();
    let (from, to) = (masters[0], masters[1]);
    // The namespace's log in three parts, one on each master: some move with the slots.
    let checker = Checker::start(&cluster, &source, bound, 3);
    // The migration starts a second into the run (the run's schedule, not a synchronisation)
    // and moves most of a master's slots (keys move with MIGRATE while clients are redirected
    // with ASK, then MOVED); the run goes on for two seconds after it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    tokio::task::block_in_place(|| cluster.reshard(from, to, 5000));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let records = checker.finish().await;
    let moved = cluster
        .topology()
        .into_iter()
        .find(|n| n.port == cluster.node(to).port())
        .map(|n| n.slots)
        .unwrap();
    assert!(moved > 5461 + 4000, "the slots moved: {moved}");
    let errors = checked("cluster reshard", &records, bound);
    // Redirects are followed: no read fails and no write is lost. (A write the breaker
    // refuses — the policy the issue allows, should a loaded machine time commands out — is
    // retried and counted, not lost.)
    assert_eq!(
        (errors.reads, errors.other_write_errors),
        (0, 0),
        "no error reached a caller: {errors:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_and_a_fail_back_serve_no_stale_read_and_fail_no_read() {
    let _one = crate::HEAVY.lock().await;
    let mut cluster = RedisCluster::start();
    let source = strata_testkit::RedisServer::start();
    let bound = Duration::from_millis(500);
    let checker = Checker::start(&cluster, &source, bound, 1);
    let log_master = |cluster: &RedisCluster| {
        cluster
            .masters()
            .into_iter()
            .find(|i| cluster.node(*i).cli(&["EXISTS", "chk#log{chk}"]) == "1")
    };
    // A second into the run (once the workers have written), the master that holds the
    // namespace's log is killed; its replica takes its slots over.
    let started = Duration::from_secs(30);
    eventually("the workers' first writes", started, || async {
        log_master(&cluster).is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let first = log_master(&cluster).expect("the log's master");
    tokio::task::block_in_place(|| cluster.fail_over(first));
    let second = log_master(&cluster).expect("the log's new master");
    assert_ne!(first, second);
    // The dead master comes back: it rejoins as the new master's replica. Acknowledged
    // writes are safe from the next failover only once the caches wait for that replica
    // (`WAIT`), which they must find out by themselves — seen here as `WAIT`s reaching the
    // new master.
    tokio::task::block_in_place(|| cluster.rejoin(first));
    let waits =
        |cluster: &RedisCluster| wait_calls(&cluster.node(second).cli(&["INFO", "commandstats"]));
    let before = waits(&cluster);
    eventually(
        "a cache to wait for the rejoined replica",
        started,
        || async { waits(&cluster) > before },
    )
    .await;
    // Then the new master dies in turn: the rejoined node takes its slots back, with every
    // acknowledged invalidation.
    tokio::time::sleep(Duration::from_secs(1)).await;
    tokio::task::block_in_place(|| cluster.fail_over(second));
    assert_eq!(log_master(&cluster), Some(first), "failed back");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let records = checker.finish().await;
    let errors = checked("cluster failover and fail-back", &records, bound);
    assert_eq!(errors.reads, 0, "no read failed");
    assert_eq!(
        errors.other_write_errors, 0,
        "writes were only refused by the breaker while a master was down"
    );
}

/// `calls` of `cmdstat_wait` in `INFO commandstats`.
/// The `WAIT`s the masters served since [`reset_stats`]: on the master at `log_master` (the
/// log's), and on the others.
pub(crate) fn waits_on(cluster: &RedisCluster, log_master: u16) -> (u64, u64) {
    let mut on = (0, 0);
    for i in cluster.masters() {
        let n = wait_calls(&cluster.node(i).cli(&["INFO", "commandstats"]));
        if cluster.node(i).port() == log_master {
            on.0 += n;
        } else {
            on.1 += n;
        }
    }
    on
}

/// Zeroes every master's command counts.
pub(crate) fn reset_stats(cluster: &RedisCluster) {
    for i in cluster.masters() {
        cluster.node(i).cli(&["CONFIG", "RESETSTAT"]);
    }
}

fn wait_calls(info: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_wait:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hit_rates_are_kept_and_read_across_masters() {
    let _one = crate::HEAVY.lock().await;
    use strata_redis::{StatsReader, StatsReporter};
    let cluster = RedisCluster::start();
    let config = RedisConfig::from_url(&cluster.url()).unwrap();
    let conn = config.connect().await.unwrap();
    // Namespaces whose hashes land on different masters.
    let mut reporters = Vec::new();
    for ns in ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"] {
        let cache = strata::HybridCache::builder(ns)
            .l2(RedisStore::connect_with(&config).await.unwrap())
            .build()
            .await
            .unwrap();
        let reporter = StatsReporter::start(cache.clone(), conn.clone(), Duration::from_secs(3600));
        // Hot keys too (one read in 16 sampled: none of 300 is a chance of 4 in 10⁹).
        for _ in 0..300 {
            let _: std::sync::Arc<u8> = cache
                .get_or_load("k", || async { Ok::<_, std::io::Error>(1) })
                .await
                .unwrap();
        }
        reporter.flush().await.unwrap();
        reporters.push(reporter);
    }
    let holders: std::collections::HashSet<u16> =
        ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
            .iter()
            .filter_map(|ns| holder(&cluster, &strata_redis::stats_key(ns)))
            .collect();
    assert!(holders.len() > 1, "the hashes are spread: {holders:?}");
    let reader = StatsReader::connect(&config).await.unwrap();
    let stats = reader.read().await.unwrap();
    assert_eq!(stats.len(), 6, "{stats:?}");
    assert!(
        stats.iter().all(|s| s.misses == 1 && s.l1_hits == 299),
        "{stats:?}"
    );
    let hot = reader.hot_keys(None, 3).await.unwrap();
    assert_eq!(hot.len(), 6, "{hot:?}");
    assert!(
        hot.iter().all(|h| h.keys.len() == 1 && h.keys[0].0 == "k"),
        "{hot:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_leave_no_old_copy_on_a_cluster() {
    let _one = crate::HEAVY.lock().await;
    let cluster = RedisCluster::start();
    let config = RedisConfig::from_url(&cluster.url()).unwrap();
    let (a, b) = (
        crate::acknowledging(&config).await,
        crate::acknowledging(&config).await,
    );
    let db = strata_testkit::source::Db::new();
    for round in 0..30 {
        let seen: std::sync::Arc<strata_testkit::source::Product> =
            b.get_or_load("p", db.loader(1)).await.unwrap();
        assert_eq!(seen.version, round);
        db.update();
        a.invalidate("p").await.unwrap();
        let after: std::sync::Arc<strata_testkit::source::Product> =
            b.get_or_load("p", db.loader(1)).await.unwrap();
        assert_eq!(after.version, round + 1, "round {round}");
    }
    assert_eq!(a.stats().writes_unacknowledged, 0);
}

/// A writer outside Strata deletes a key on its master while a load of it is held open: the
/// fill does not land there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_overtaken_by_a_foreign_delete_does_not_land_on_a_cluster() {
    let _one = crate::HEAVY.lock().await;
    let cluster = RedisCluster::start();
    let config = RedisConfig::from_url(&cluster.url()).unwrap();
    let cache = instance_with(&config, EntryOptions::ttl(TTL)).await;
    let held = crate::tracking::Held::start(&cache, "k").await;
    let master = cluster
        .masters()
        .into_iter()
        .map(|i| cluster.node(i))
        .find(|n| n.cli(&["EXISTS", "svc:k"]) == "1")
        .expect("the lease record is in the data key");
    master.cli(&["DEL", "svc:k"]);
    assert_eq!(
        held.finish().await.version,
        0,
        "the caller gets what it loaded"
    );
    assert_eq!(master.cli(&["EXISTS", "svc:k"]), "0", "the fill landed");
}

/// Foreign deletes on every master reach the tracking instances (a receiver per master); an
/// untracked one keeps its copies. A master's connections killed: tracking comes back there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_writes_leave_tracking_instances_l1_on_a_cluster() {
    use std::sync::Arc;
    use strata_testkit::source::{Db, Product};

    let _one = crate::HEAVY.lock().await;
    let cluster = RedisCluster::start();
    let config = RedisConfig::from_url(&cluster.url()).unwrap();
    let mut caches = Vec::new();
    for on in [true, true, false] {
        caches.push(crate::tracking::tracking_with(&config, on).await);
    }
    let db = Db::new();
    let keys: Vec<String> = (0..8).map(|i| format!("k{i}")).collect();
    for cache in &caches {
        for key in &keys {
            let _: Arc<Product> = cache.get_or_load(key, db.loader(1)).await.unwrap();
        }
    }
    let mut masters = std::collections::HashSet::new();
    for key in &keys {
        let data = format!("svc:{key}");
        let port = holder(&cluster, &data).expect("each key is in L2");
        masters.insert(port);
        master_at(&cluster, port).cli(&["DEL", &data]);
    }
    assert!(masters.len() >= 2, "the keys span masters: {masters:?}");
    db.update();
    for cache in &caches[..2] {
        for key in &keys {
            eventually(&format!("{key}'s report"), WAIT, || async {
                let read: Arc<Product> = cache.get_or_load(key, db.loader(1)).await.unwrap();
                read.version == 1
            })
            .await;
        }
    }
    for key in &keys {
        let read: Arc<Product> = caches[2].get_or_load(key, db.loader(1)).await.unwrap();
        assert_eq!(read.version, 0, "{key}: the untracked copy is the old one");
    }

    // Every connection to one master killed (the cluster connection's and the receiver):
    // the probe finds it, L1 goes, and reports resume on that master.
    let port = holder(&cluster, "svc:k0").expect("k0 was loaded again");
    let master = master_at(&cluster, port);
    let resyncs = caches[0].stats().resyncs;
    master.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    eventually("the lost tracking found", WAIT, || async {
        caches[0].stats().resyncs > resyncs
    })
    .await;
    crate::tracking::reports_resume(&caches[0], "k0", || drop(master.cli(&["DEL", "svc:k0"])))
        .await;
}

/// Tracking follows a cluster failover: the master holding a key is killed and its replica
/// promoted; the tracking instance finds the masters changed, drops L1, tracks the new master
/// and is told of a foreign delete there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_follows_a_cluster_failover() {
    use std::sync::Arc;
    use strata_testkit::source::{Db, Product};

    let _one = crate::HEAVY.lock().await;
    let mut cluster = RedisCluster::start();
    let config = RedisConfig::from_url(&cluster.url()).unwrap();
    let cache = crate::tracking::tracking_with(&config, true).await;
    let db = Db::new();
    let _: Arc<Product> = cache.get_or_load("k", db.loader(1)).await.unwrap();
    cache.run_pending_tasks().await;
    let port = holder(&cluster, "svc:k").expect("k in L2");
    let index = cluster
        .masters()
        .into_iter()
        .find(|i| cluster.node(*i).port() == port)
        .unwrap();
    let resyncs = cache.stats().resyncs;
    tokio::task::block_in_place(|| cluster.fail_over(index));
    eventually(
        "the changed masters found",
        Duration::from_secs(30),
        || async { cache.stats().resyncs > resyncs },
    )
    .await;
    let port = holder(&cluster, "svc:k").expect("k on the promoted replica");
    let master = master_at(&cluster, port);
    crate::tracking::reports_resume(&cache, "k", || drop(master.cli(&["DEL", "svc:k"]))).await;
}

/// A cluster invalidation appends its log entry while the removal still waits for a replica
/// of the key's master: the append needs the removal done, not replicated, so the write takes
/// three round trips one after another rather than four. With that replica frozen and a long
/// replica wait, another instance drops its copy while the write is still waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_is_logged_while_its_removal_waits_for_a_replica() {
    let b = logged_while_the_replica_waits(|a, key| {
        tokio::spawn(async move { a.invalidate(&key).await })
    })
    .await;
    assert_eq!(b, 1, "b loaded the key again");
}

/// The same for a write-through: the value is stored, its log entry appended while the
/// value's replica wait runs, and the other instance reads the new value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_is_logged_while_its_value_waits_for_a_replica() {
    let b = logged_while_the_replica_waits(|a, key| {
        tokio::spawn(async move { a.set(&key, 2_u64, &EntryOptions::ttl(TTL)).await })
    })
    .await;
    assert_eq!(b, 2, "b read the new value from L2");
}

/// Runs `write` of a key on instance A with the replica of the key's master frozen and a
/// replica wait longer than the test looks; checks that instance B applies the write's log
/// entry while the write still waits; returns what B then reads (its loader answers 1).
async fn logged_while_the_replica_waits(
    write: impl FnOnce(
        strata::HybridCache,
        String,
    ) -> tokio::task::JoinHandle<Result<(), strata::Error>>,
) -> u64 {
    let _one = crate::HEAVY.lock().await;
    let cluster = RedisCluster::start();
    replicas_in_sync(&cluster).await;
    // The replica wait outlasts the test's look, and no timeout cuts it short.
    let hold = Duration::from_secs(6);
    let config = RedisConfig::from_url(&cluster.url())
        .unwrap()
        .replica_wait(hold)
        .command_timeout(2 * hold);
    let patient = || async {
        crate::builder(&config, EntryOptions::ttl(TTL))
            .await
            .resilience(strata::Resilience::default().write_timeout(2 * hold))
            .build()
            .await
            .unwrap()
    };
    let (a, b) = (patient().await, patient().await);
    let topology = cluster.topology();
    let master_of = |key: &str| master_of(&cluster, &topology, key);
    // A key whose master does not hold the log: a `WAIT` holds up what follows it on its
    // master's connection, the append included.
    let log_master = master_of("svc#log{svc}").port;
    let key = (0..100)
        .map(|i| format!("k{i}"))
        .find(|k| master_of(&format!("svc:{k}")).port != log_master)
        .expect("a key on another master");
    let data_master = master_of(&format!("svc:{key}"));
    let replica = topology
        .iter()
        .find(|n| n.master_id.as_deref() == Some(data_master.id.as_str()))
        .map(|n| cluster.index_of(n.port))
        .expect("the master's replica");
    let load = || async { Ok::<_, std::io::Error>(1_u64) };
    for cache in [&a, &b] {
        let _: std::sync::Arc<u64> = cache.get_or_load(&key, load).await.unwrap();
    }
    a.run_pending_tasks().await;
    b.run_pending_tasks().await;
    let data = cluster.node(cluster.index_of(data_master.port));
    assert_eq!(data.cli(&["EXISTS", &format!("svc:{key}")]), "1", "filled");
    // A write first, with the replica answering: the instances learn which masters have one.
    a.invalidate("warm-up").await.unwrap();
    eventually("b to apply the first write", WAIT, || async {
        b.stats().invalidations_received == 1
    })
    .await;

    cluster.node(replica).freeze();
    let writer = write(a.clone(), key.clone());
    eventually(
        "b to drop its copy while the write waits",
        hold / 2,
        || async { b.stats().invalidations_received == 2 },
    )
    .await;
    assert!(
        !writer.is_finished(),
        "the write still waits for the replica"
    );
    cluster.node(replica).thaw();
    writer.await.unwrap().unwrap();
    let after: std::sync::Arc<u64> = b.get_or_load(&key, load).await.unwrap();
    assert_eq!(b.stats().l1_hits, 0, "b read the key past its L1");
    *after
}

/// The master serving `key`'s slot in `topology`.
pub(crate) fn master_of(
    cluster: &RedisCluster,
    topology: &[strata_testkit::ClusterNode],
    key: &str,
) -> strata_testkit::ClusterNode {
    let slot: u16 = cluster
        .node(0)
        .cli(&["CLUSTER", "KEYSLOT", key])
        .parse()
        .expect("a slot");
    topology
        .iter()
        .find(|n| n.master && n.ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&slot)))
        .expect("a master serving the slot")
        .clone()
}

/// Where a write's key and the log share a master, the log's `WAIT` (sent after the append,
/// on the same connection) covers the write too: one `WAIT` there, not two. Elsewhere, one on
/// each master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_the_log_s_master_waits_for_a_replica_once() {
    let _one = crate::HEAVY.lock().await;
    let cluster = RedisCluster::start();
    replicas_in_sync(&cluster).await;
    let config = RedisConfig::from_url(&cluster.url()).unwrap();
    let a = instance_with(&config, EntryOptions::ttl(TTL)).await;
    a.invalidate("warm-up").await.unwrap();
    let topology = cluster.topology();
    let log_master = master_of(&cluster, &topology, "svc#log{svc}").port;
    let keys = |same: bool| -> Vec<String> {
        (0..200)
            .map(|i| format!("k{i}"))
            .filter(|k| {
                (master_of(&cluster, &topology, &format!("svc:{k}")).port == log_master) == same
            })
            .take(10)
            .collect()
    };
    let waits = || waits_on(&cluster, log_master);
    let reset = || reset_stats(&cluster);

    reset();
    for key in keys(true) {
        a.invalidate(&key).await.unwrap();
    }
    assert_eq!(waits(), (10, 0), "one WAIT per write on the log's master");
    reset();
    for key in keys(false) {
        a.invalidate(&key).await.unwrap();
    }
    assert_eq!(waits(), (10, 10), "one on each master");
    reset();
    for key in keys(true) {
        a.set(&key, 1_u64, &EntryOptions::ttl(TTL)).await.unwrap();
    }
    assert_eq!(waits(), (10, 0), "a write-through the same");
}

/// Waits until every master's replica is in sync, so that a `WAIT` is answered (and counted
/// on masters known to have a replica) from the first write on.
pub(crate) async fn replicas_in_sync(cluster: &RedisCluster) {
    eventually("every replica in sync", WAIT, || async {
        cluster.masters().into_iter().all(|i| {
            cluster
                .node(i)
                .cli(&["INFO", "replication"])
                .contains("state=online")
        })
    })
    .await;
}
