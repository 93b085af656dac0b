//! What each step of the read and write paths costs Redis, counted with `INFO commandstats`
//! (commands a script runs are counted under their own names, beside its `evalsha`). Exact
//! counts: a regression that adds a round trip, or a command inside one, fails here.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::join_all;
use strata::{EntryOptions, Fence, HybridCache, L2Store, Read, WriteMode};
use strata_testkit::RedisServer;
use strata_testkit::source::{Db, Product};

use strata_redis::{RedisConfig, RedisStore};

use crate::{TTL, instance, instance_with};

const N: u64 = 50;

/// Calls per command so far, leaving out the followers' (their subscription, their reads of
/// the stream to catch up, their heartbeats) and the test's own `INFO`.
fn calls(redis: &RedisServer) -> BTreeMap<String, u64> {
    redis
        .cli(&["INFO", "commandstats"])
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "xread" | "xrange" | "xrevrange" | "info" | "ssubscribe" | "client|setname"
            )
        })
        .collect()
}

/// The commands `step` sent.
async fn counted<F: std::future::Future<Output = ()>>(
    redis: &RedisServer,
    step: F,
) -> BTreeMap<String, u64> {
    let before = calls(redis);
    step.await;
    calls(redis)
        .into_iter()
        .filter_map(|(name, n)| {
            let d = n - before.get(&name).copied().unwrap_or(0);
            (d > 0).then_some((name, d))
        })
        .collect()
}

fn expect(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

async fn read(cache: &HybridCache, db: &Db, key: &str, id: u64) {
    let p: Arc<Product> = cache.get_or_load(key, db.loader(id)).await.unwrap();
    assert_eq!(p.id, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_step_is_one_round_trip() {
    let redis = RedisServer::start();
    each_step(&redis, &redis.url(), Fill::Script).await;
}

/// With the documented ACL (a user confined to its namespace), the same: the features of the
/// server are read (`+info`), so a miss is not sent through a script as on Redis 6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_gets_the_same_round_trips() {
    let redis = RedisServer::options()
        .acl_user(crate::security::ACL)
        .start();
    each_step(
        &redis,
        &redis.url_with_user("app", "app-secret"),
        Fill::Script,
    )
    .await;
}

/// On a server with `SET … IFEQ` the fill is that one command: no script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_step_is_one_round_trip_and_a_fill_one_command_with_ifeq() {
    let Some(program) = strata_testkit::conditional_set_server() else {
        return;
    };
    let redis = RedisServer::options().program(program).start();
    each_step(&redis, &redis.url(), Fill::IfEq).await;
}

/// How the server compares a fill's lease record.
enum Fill {
    /// In the small fill script, `FILL_LEASED` (Redis 7: `SET … XX GET`, compared after).
    Script,
    /// `SET … IFEQ <record> GET`.
    IfEq,
}

/// Counts every step on `redis`, by two instances connected as `url` says (its user).
async fn each_step(redis: &RedisServer, url: &str, fill: Fill) {
    let config = RedisConfig::from_url(url).unwrap();
    let (a, b) = (
        instance_with(&config, EntryOptions::ttl(TTL)).await,
        instance_with(&config, EntryOptions::ttl(TTL)).await,
    );
    let db = Db::new();
    // Every path once, so that each script is loaded (a first EVALSHA meets NOSCRIPT).
    read(&a, &db, "warm", 0).await;
    a.run_pending_tasks().await;
    read(&b, &db, "warm", 0).await;
    a.invalidate("warm").await.unwrap();
    a.set("warm", db.fetch(0).await.unwrap(), &EntryOptions::ttl(TTL))
        .await
        .unwrap();

    // A miss: one `SET … NX GET` (the read, leaving the lease record), then one fill: the
    // script (stores with `SET … XX GET` and compares the record it replaced), or where the
    // server compares, `SET … IFEQ`.
    let mut cold = counted(redis, async {
        for i in 1..=N {
            read(&a, &db, &format!("k{i}"), i).await;
        }
        a.run_pending_tasks().await; // the fills answered before have landed
    })
    .await;
    if let Fill::Script = fill {
        // Fills that meet on their way go as one call (`fills_that_meet_go_in_one_call`).
        let calls = cold.remove("evalsha").unwrap_or(0);
        assert!(
            (1..=N).contains(&calls),
            "{calls} fill scripts for {N} fills"
        );
    }
    assert_eq!(cold, expect(&[("set", 2 * N)]), "{N} cold reads");
    assert_eq!(a.stats().loader_calls, N + 1);
    if let Fill::Script = fill {
        // The script with six arguments (the filled stream among them), not `FILL` with
        // eleven: no run has loaded `FILL`.
        let loaded = |name: &str| {
            let (_, source) = strata_redis::protocol_scripts()
                .find(|(n, _)| *n == name)
                .unwrap();
            redis.cli(&["SCRIPT", "EXISTS", redis::Script::new(source).get_hash()])
        };
        assert_eq!(
            (loaded("FILL_LEASED").as_str(), loaded("FILL").as_str()),
            ("1", "0"),
            "the fills' script"
        );
    }

    // An L2 hit on another instance: the same single `SET … NX GET`, answered with the value
    // as a `GET` would be.
    let warm = counted(redis, async {
        for i in 1..=N {
            read(&b, &db, &format!("k{i}"), i).await;
        }
    })
    .await;
    assert_eq!(warm, expect(&[("set", N)]), "{N} L2 hits");
    assert_eq!(b.stats().l2_hits, N + 1);

    // An L1 hit: nothing.
    let hits = counted(redis, async {
        for i in 1..=N {
            read(&a, &db, &format!("k{i}"), i).await;
        }
    })
    .await;
    assert_eq!(hits, expect(&[]), "{N} L1 hits");

    // An invalidation: one script — the delete and the log entry (numbered: INCR; XADD;
    // pushed to the followers: SPUBLISH).
    let invalidations = counted(redis, async {
        for i in 1..=N {
            a.invalidate(&format!("k{i}")).await.unwrap();
        }
    })
    .await;
    assert_eq!(
        invalidations,
        expect(&[
            ("evalsha", N),
            ("unlink", N),
            ("incr", N),
            ("xadd", N),
            ("spublish", N)
        ]),
        "{N} invalidations"
    );

    // A write-through: one script — the value and its log entry.
    let writes = counted(redis, async {
        for i in 1..=N {
            let p = db.fetch(i).await.unwrap();
            a.set(&format!("k{i}"), p, &EntryOptions::ttl(TTL))
                .await
                .unwrap();
        }
    })
    .await;
    assert_eq!(
        writes,
        expect(&[
            ("evalsha", N),
            ("set", N),
            ("incr", N),
            ("xadd", N),
            ("spublish", N)
        ]),
        "{N} write-throughs"
    );
    assert_eq!(a.stats().invalidations_sent, 2 * N + 2);
    assert_eq!(a.stats().log_errors, 0);
    // The followers were pushed every entry: none read the stream with a blocking `XREAD`.
    let commands = redis.cli(&["INFO", "commandstats"]);
    assert!(!commands.contains("cmdstat_xread:"), "{commands}");
}

/// Instances waiting on another's load: the first marks its lease record waited on (the
/// `READ` script: `GET`, `APPEND`), the next finds the mark and reads plainly; woken by the
/// fill's announcement, each reads the value with one `SET … NX GET`. Marking every waiter's
/// reads made four scripts of what is now one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_on_another_instance_mark_its_load_once() {
    let redis = RedisServer::start();
    let (a, b, c) = (
        instance(&redis, EntryOptions::ttl(TTL)).await,
        instance(&redis, EntryOptions::ttl(TTL)).await,
        instance(&redis, EntryOptions::ttl(TTL)).await,
    );
    let db = Db::new();
    // Once so that each script is loaded (a first `EVALSHA` meets `NOSCRIPT`), then counted.
    wait_on_another(&redis, [&a, &b, &c], &db, "warm").await;
    let (waits, steps) = wait_on_another(&redis, [&a, &b, &c], &db, "k").await;
    assert_eq!(waits, [1, 1], "each waiter waited on A's lease");
    let plain_reads = steps.get("set").copied().unwrap_or(0);
    let mut scripts = steps;
    scripts.remove("set");
    scripts.remove("strlen"); // the test's own look at the mark
    assert_eq!(
        scripts,
        expect(&[
            ("evalsha", 2), // B's marking read, A's fill
            ("get", 1),     // in the marking read
            ("append", 1),  // the mark
            ("xadd", 1),    // the fill's announcement
            ("spublish", 1),
        ])
    );
    // B: its read and its read once told; C: its read, its read once waiting (after the
    // mark), its read once told; A's fill: its `SET … XX GET`. A poll that came first (50
    // ms) would add a plain read.
    assert!(plain_reads >= 6, "{plain_reads} `SET`s");
    assert_eq!(db.calls(), 2, "one load per key, A's");
}

/// A loads `key` and holds its lease until B, then C, wait on it; the lease waits of B and
/// C, and the commands sent from B's first read until all three have the value.
async fn wait_on_another(
    redis: &RedisServer,
    [a, b, c]: [&HybridCache; 3],
    db: &Db,
    key: &'static str,
) -> ([u64; 2], BTreeMap<String, u64>) {
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let holder = {
        let (a, db) = (a.clone(), db.clone());
        tokio::spawn(async move {
            let loader = move || async move {
                let _ = released.await;
                db.fetch(1).await
            };
            let p: Arc<Product> = a.get_or_load(key, loader).await.unwrap();
            p.id
        })
    };
    let data = format!("svc:{key}");
    strata_testkit::eventually("A to hold the lease", crate::WAIT, || async {
        redis.cli(&["GETRANGE", &data, "1", "2"]) == "SL"
    })
    .await;
    let waits = |cache: &HybridCache| cache.stats().lease_waits;
    let before = [waits(b), waits(c)];
    let wait = |cache: &HybridCache| {
        let (cache, db) = (cache.clone(), db.clone());
        tokio::spawn(async move { read(&cache, &db, key, 1).await })
    };
    let steps = counted(redis, async {
        let b_waits = wait(b);
        strata_testkit::eventually("B to mark the lease", crate::WAIT, || async {
            redis.cli(&["STRLEN", &data]) == "13"
        })
        .await;
        let c_waits = wait(c);
        strata_testkit::eventually("C to wait", crate::WAIT, || async { waits(c) > before[1] })
            .await;
        release.send(()).unwrap();
        assert_eq!(holder.await.unwrap(), 1);
        b_waits.await.unwrap();
        c_waits.await.unwrap();
        a.run_pending_tasks().await;
    })
    .await;
    ([waits(b) - before[0], waits(c) - before[1]], steps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_one_round_trip_of_reads_one_load_and_a_fill_per_key() {
    let redis = RedisServer::start();
    let cache = instance(&redis, EntryOptions::ttl(TTL)).await;
    let db = Db::new();
    let loads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let batch = |keys: &'static [&'static str]| {
        let (cache, db, loads) = (cache.clone(), db.clone(), loads.clone());
        async move {
            let loader = move |keys: Vec<String>| async move {
                loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut found = std::collections::HashMap::new();
                for (id, key) in keys.into_iter().enumerate() {
                    found.insert(key, db.fetch(id as u64).await?);
                }
                Ok::<_, std::io::Error>(found)
            };
            let got = cache
                .get_many_or_load::<Product, _, _, _>(keys, &EntryOptions::ttl(TTL), loader)
                .await
                .unwrap();
            assert!(got.iter().all(Option::is_some));
            cache.run_pending_tasks().await; // the fills answered before have landed
        }
    };
    batch(&["warm"]).await;
    // One pipeline of `SET … NX GET`s (each key read, and leased), one load, one fill each
    // (a `SET` in the fills' script: one call, or more if they did not meet on their way).
    let mut counted = counted(&redis, batch(&["a", "b", "c"])).await;
    let calls = counted.remove("evalsha").unwrap_or(0);
    assert!((1..=3).contains(&calls), "{calls} fill scripts for 3 fills");
    assert_eq!(counted, expect(&[("set", 6)]));
    assert_eq!(loads.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(
        redis.cli(&["EXISTS", "svc:a", "svc:b", "svc:c"]),
        "3",
        "all filled"
    );
}

/// Fills that meet on their way go as one script call: of ten at once over ten leases (one
/// taken over by another load, one invalidated meanwhile) the first two go alone and the
/// eight queued behind them go together when they are answered (in one call, or two if both
/// are answered before the first of the eight sends) — each fill its `SET`, the displaced
/// lease record put back — and each gets its own answer.
#[tokio::test]
async fn fills_that_meet_go_in_one_call() {
    let redis = RedisServer::start();
    let store = leased(&redis, 11).await;
    assert!(fill(&store, 10, 11).await, "the script loaded");
    store.delete("ns", &key(3), None).await.unwrap();
    take_lease(&store, 3, 99).await;
    store.delete("ns", &key(4), None).await.unwrap();

    // On this one-thread runtime the eight queue while the first two are on their way.
    let mut steps = counted(&redis, async {
        let fills = join_all((0..10).map(|i| fill(&store, i, i + 1))).await;
        let stored: Vec<u64> = (0..10).filter(|&i| fills[i as usize]).collect();
        assert_eq!(stored, [0, 1, 2, 5, 6, 7, 8, 9], "all but the overtaken");
    })
    .await;
    let calls = steps.remove("evalsha").unwrap_or(0);
    assert!((3..=4).contains(&calls), "{calls} calls for 10 fills");
    assert_eq!(steps, expect(&[("set", 11)]));
    let read = store.read("ns", &key(3), Some((5, TTL)), false).await;
    assert_eq!(read.unwrap(), Read::Loading { waited_on: false });
    let value = store.get("ns", &key(9)).await.unwrap();
    assert_eq!(value.as_deref(), Some(&b"loaded 9"[..]));
}

/// Fills leading their calls that are dropped before their answers hand the lead on: the
/// fills queued behind them are sent, not stranded.
#[tokio::test]
async fn a_dropped_leader_strands_no_fill() {
    let redis = RedisServer::start();
    let store = leased(&redis, 5).await;
    let mut first = Box::pin(join_all((0..2).map(|i| fill(&store, i, i + 1))));
    let mut rest = Box::pin(join_all((2..5).map(|i| fill(&store, i, i + 1))));
    assert!(
        first.as_mut().now_or_never().is_none(),
        "the first two lead, on their way"
    );
    assert!(
        rest.as_mut().now_or_never().is_none(),
        "the others queue behind it"
    );
    drop(first);
    let stored = tokio::time::timeout(crate::WAIT, rest).await;
    assert_eq!(stored.expect("no fill stranded"), [true, true, true]);
}

/// A queued fill told to lead whose caller stops waiting before it runs hands the lead on:
/// the fills queued after it are sent, not stranded.
#[tokio::test]
async fn a_lead_handed_to_a_dropped_fill_passes_on() {
    let redis = RedisServer::start();
    let store = leased(&redis, 5).await;
    let mut leaders = Box::pin(join_all((0..2).map(|i| fill(&store, i, i + 1))));
    let mut queued: Vec<_> = (2..5).map(|i| Box::pin(fill(&store, i, i + 1))).collect();
    assert!(
        leaders.as_mut().now_or_never().is_none(),
        "two lead, on their way"
    );
    for fill in &mut queued {
        assert!(
            fill.as_mut().now_or_never().is_none(),
            "three queue behind them"
        );
    }
    // Answered, the two leaders hand the lead to the first two queued, which never run.
    assert_eq!(leaders.await, [true, true]);
    let last = queued.pop().unwrap();
    drop(queued);
    let stored = tokio::time::timeout(crate::WAIT, last).await;
    assert!(stored.expect("the last fill not stranded"));
}

/// A store on `redis` whose keys `k0…k{n-1}` were read and leased, key `i` under token `i + 1`.
async fn leased(redis: &RedisServer, n: u64) -> RedisStore {
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    for i in 0..n {
        take_lease(&store, i, i + 1).await;
    }
    store
}

fn key(i: u64) -> String {
    format!("k{i}")
}

/// A read of key `i` that finds nothing and takes its lease under `token`.
async fn take_lease(store: &RedisStore, i: u64, token: u64) {
    let read = store.read("ns", &key(i), Some((token, TTL)), false).await;
    assert_eq!(read.unwrap(), Read::Leased);
}

/// A miss's fill of key `i` fenced by the lease taken under `token`: whether it was stored.
async fn fill(store: &RedisStore, i: u64, token: u64) -> bool {
    let mode = WriteMode::Fill {
        fence: Fence::Lease(token),
        lease: None,
        lease_ttl: TTL,
    };
    let value = Bytes::from(format!("loaded {i}"));
    let written = store.set("ns", &key(i), value, TTL, &[], mode).await;
    written.unwrap().stored
}

/// A server that lost its scripts (restarted, `SCRIPT FLUSH`) answers a fill's and an
/// invalidation's `EVALSHA` with `NOSCRIPT`: the script is loaded and the call sent again,
/// once, and nothing fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_lost_by_the_server_are_loaded_again() {
    let redis = RedisServer::start();
    let cache = instance(&redis, EntryOptions::ttl(TTL)).await;
    let db = Db::new();
    read(&cache, &db, "warm", 0).await;
    cache.invalidate("warm").await.unwrap();
    redis.cli(&["SCRIPT", "FLUSH"]);
    let steps = counted(&redis, async {
        read(&cache, &db, "k", 1).await;
        cache.run_pending_tasks().await;
        cache.invalidate("k").await.unwrap();
    })
    .await;
    // Each script: a refused `EVALSHA`, `SCRIPT LOAD`, the `EVALSHA` again.
    assert_eq!(
        steps.get("evalsha").copied(),
        Some(4),
        "fill and invalidation, each sent twice: {steps:?}"
    );
    assert_eq!(steps.get("script|load").copied(), Some(2), "{steps:?}");
    assert_eq!(cache.stats().l2_errors, 0);
    assert_eq!(db.calls(), 2, "one load each for `warm` and `k`");
}
