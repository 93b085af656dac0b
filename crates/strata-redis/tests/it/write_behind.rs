//! Write-behind on Redis, with real processes: a flusher SIGKILLed mid-flush and another
//! taking over; every acknowledged write reaches the source of truth exactly once.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use strata::{EntryOptions, Flusher, HybridCache, QueuedWrite};
use strata_redis::{RedisStore, RedisStreamLog, RedisWriteQueue};
use strata_testkit::RedisServer;

use crate::{TTL, WAIT, raw_connection};

const QUEUE_VAR: &str = "STRATA_WB_QUEUE";
const DB_VAR: &str = "STRATA_WB_DB";
const CONSUMER_VAR: &str = "STRATA_WB_CONSUMER";
/// The order after whose persist (applied, not yet acknowledged) flusher A hangs until killed.
const HANG_VAR: &str = "STRATA_WB_HANG_AFTER";
const HANG_AFTER: u64 = 150;
const NS: &str = "orders";
const WRITES: u64 = 300;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Order {
    id: u64,
    total_cents: u64,
}

/// The source of truth: a Redis of its own. A persist applies an entry once — the set of
/// applied ids is the idempotency check, in the same script as the write — and counts every
/// delivery, duplicates included.
const APPLY: &str = r"
redis.call('INCR', 'deliveries')
if redis.call('SADD', 'applied', ARGV[1]) == 1 then
  redis.call('RPUSH', 'orders', ARGV[1])
  redis.call('SET', 'order:' .. ARGV[2], ARGV[3])
end
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a flusher process of the write-behind test, started by it"]
async fn flusher_worker() {
    let queue = std::env::var(QUEUE_VAR).expect("run by the test");
    let db = std::env::var(DB_VAR).expect("run by the test");
    let consumer = std::env::var(CONSUMER_VAR).expect("run by the test");
    let queue = RedisWriteQueue::connect(&queue).await.unwrap();
    let db = redis::Client::open(db.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let script = redis::Script::new(APPLY);
    let hang_after: Option<u64> = std::env::var(HANG_VAR).ok().and_then(|v| v.parse().ok());
    Flusher::new(queue, NS)
        .consumer(consumer)
        .batch(10)
        .claim_after(Duration::from_millis(300))
        .run(|write: QueuedWrite<Order>| {
            let (mut db, script) = (db.clone(), script.clone());
            async move {
                // A slow source: the kill lands mid-flush.
                tokio::time::sleep(Duration::from_millis(5)).await;
                script
                    .arg(&write.id)
                    .arg(write.value.id)
                    .arg(write.value.total_cents)
                    .invoke_async::<()>(&mut db)
                    .await?;
                if hang_after == Some(write.value.id) {
                    // Applied, not acknowledged: the worst moment to die.
                    std::future::pending::<()>().await;
                }
                Ok::<(), redis::RedisError>(())
            }
        })
        .await;
}

fn flusher(
    queue: &RedisServer,
    db: &RedisServer,
    consumer: &str,
    hang_after: Option<u64>,
) -> tokio::process::Child {
    let mut command = tokio::process::Command::new(std::env::current_exe().unwrap());
    if let Some(id) = hang_after {
        command.env(HANG_VAR, id.to_string());
    }
    command
        .args(["--ignored", "--exact", "write_behind::flusher_worker"])
        .env(QUEUE_VAR, queue.url())
        .env(DB_VAR, db.url())
        .env(CONSUMER_VAR, consumer)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

fn count(db: &RedisServer, cmd: &[&str]) -> u64 {
    db.cli(cmd).parse().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flusher_killed_mid_flush_loses_and_repeats_nothing() {
    let (redis, db) = (RedisServer::start(), RedisServer::start());
    let cache = HybridCache::builder(NS)
        .l2(RedisStore::connect(&redis.url()).await.unwrap())
        .invalidation(RedisStreamLog::connect(&redis.url()).await.unwrap())
        .write_queue(RedisWriteQueue::connect(&redis.url()).await.unwrap())
        .build()
        .await
        .unwrap();
    for id in 0..WRITES {
        let order = Order {
            id,
            total_cents: id * 100,
        };
        cache
            .write_behind(&format!("order:{id}"), order, &EntryOptions::ttl(TTL))
            .await
            .unwrap();
    }
    // Acknowledged writes are readable at once, from the cache.
    let read: Arc<Order> = cache
        .get_or_load("order:7", || async {
            Err::<Order, _>(std::io::Error::other("not from the source"))
        })
        .await
        .unwrap();
    assert_eq!(read.total_cents, 700);

    let mut first = flusher(&redis, &db, "a", Some(HANG_AFTER));
    strata_testkit::eventually("A to apply the order it hangs after", WAIT, || async {
        count(&db, &["EXISTS", &format!("order:{HANG_AFTER}")]) == 1
    })
    .await;
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    let applied_by_a = count(&db, &["LLEN", "orders"]);
    assert!(applied_by_a < WRITES, "killed mid-flush");
    // What it held and had not acknowledged is pending under its name.
    let pending = redis.cli(&["XPENDING", "orders#wb", "strata-flushers"]);
    assert!(
        !pending.starts_with('0'),
        "entries were in flight: {pending}"
    );

    let _second = flusher(&redis, &db, "b", None);
    let started = Instant::now();
    strata_testkit::eventually("every write to be applied", WAIT, || async {
        count(&db, &["LLEN", "orders"]) >= WRITES && count(&redis, &["XLEN", "orders#wb"]) == 0
    })
    .await;
    let took = started.elapsed();

    let mut conn = raw_connection(&db).await;
    let applied: Vec<String> = redis::cmd("LRANGE")
        .arg("orders")
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let unique: std::collections::HashSet<_> = applied.iter().collect();
    assert_eq!(applied.len() as u64, WRITES, "each write applied once");
    assert_eq!(unique.len() as u64, WRITES);
    for id in 0..WRITES {
        let total: u64 = db.cli(&["GET", &format!("order:{id}")]).parse().unwrap();
        assert_eq!(total, id * 100);
    }
    let deliveries = count(&db, &["GET", "deliveries"]);
    assert!(
        deliveries > WRITES,
        "the entry A applied but never acknowledged came again (and was absorbed)"
    );
    println!(
        "WRITE-BEHIND: {WRITES} writes; flusher a applied {applied_by_a} before SIGKILL; \
         b finished in {took:?}; {deliveries} deliveries ({} repeated, absorbed by the idempotency check)",
        deliveries - WRITES
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_that_keeps_failing_becomes_a_dead_letter() {
    let redis = RedisServer::start();
    let queue = RedisWriteQueue::connect(&redis.url()).await.unwrap();
    let cache = HybridCache::builder(NS)
        .l2(RedisStore::connect(&redis.url()).await.unwrap())
        .write_queue(RedisWriteQueue::connect(&redis.url()).await.unwrap())
        .build()
        .await
        .unwrap();
    for id in 0..3 {
        let order = Order { id, total_cents: 1 };
        cache
            .write_behind(&format!("order:{id}"), order, &EntryOptions::ttl(TTL))
            .await
            .unwrap();
    }
    let attempts = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = attempts.clone();
    let flusher = tokio::spawn(
        Flusher::new(queue, NS)
            .max_attempts(3)
            .backoff(Duration::from_millis(1), Duration::from_millis(5))
            .run(move |write: QueuedWrite<Order>| {
                let seen = seen.clone();
                async move {
                    if write.value.id == 1 {
                        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        return Err("constraint violation");
                    }
                    Ok(())
                }
            }),
    );
    strata_testkit::eventually("the queue to drain", WAIT, || async {
        redis.cli(&["XLEN", "orders#wb"]) == "0"
    })
    .await;
    flusher.abort();
    assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 3);
    let dead = redis.cli(&["XRANGE", "orders#wb:dead", "-", "+"]);
    assert!(
        dead.contains("order:1") && dead.contains("constraint violation"),
        "{dead}"
    );
    assert_eq!(redis.cli(&["XLEN", "orders#wb:dead"]), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_queue_serves_several_namespaces_and_outlives_a_lost_group() {
    use strata::WriteQueue;
    let redis = RedisServer::start();
    let queue = Arc::new(RedisWriteQueue::connect(&redis.url()).await.unwrap());
    let take = |ns: &'static str| {
        let queue = queue.clone();
        async move {
            let taken = queue
                .take(
                    ns,
                    "c",
                    10,
                    Duration::from_secs(30),
                    Duration::from_millis(10),
                )
                .await
                .unwrap();
            for write in &taken {
                queue.ack(ns, &write.id).await.unwrap();
            }
            taken.into_iter().map(|w| w.key).collect::<Vec<_>>()
        }
    };
    for ns in ["a", "b"] {
        queue.append(ns, "k1", "1".into()).await.unwrap();
        assert_eq!(take(ns).await, ["k1"], "namespace {ns}");
    }
    // The stream and its group are gone (a Redis that lost its data): made again on use.
    redis.cli(&["FLUSHALL"]);
    queue.append("a", "k2", "2".into()).await.unwrap();
    assert_eq!(take("a").await, ["k2"]);
}
