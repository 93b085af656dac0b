//! Single-flight across instances: separate caches sharing one Redis, each with its own
//! connections, L1 and local flights.

use std::sync::Arc;
use std::time::Duration;

use strata::{EntryOptions, HybridCache, L2Store, Lease};
use strata_redis::{RedisConfig, RedisLease, RedisStore};
use strata_testkit::RedisServer;
use strata_testkit::source::{Db, Product};

use crate::{TTL, instance};

async fn instance_with_lease_ttl(redis: &RedisServer, lease_ttl: Duration) -> HybridCache {
    let config = RedisConfig::from_url(&redis.url()).unwrap();
    crate::builder(&config, EntryOptions::ttl(TTL))
        .await
        .lease_ttl(lease_ttl)
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stampede_over_four_instances_loads_once() {
    let redis = RedisServer::start();
    let mut instances = Vec::new();
    for _ in 0..4 {
        instances.push(instance(&redis, EntryOptions::ttl(TTL)).await);
    }
    let db = Db::new();
    db.set_delay(Duration::from_millis(50));
    let reads: Vec<_> = (0..1000)
        .map(|i| {
            let (cache, db) = (instances[i % 4].clone(), db.clone());
            tokio::spawn(async move {
                let p: Arc<Product> = cache.get_or_load("cold", db.loader(7)).await?;
                Ok::<_, strata::Error>(p.version)
            })
        })
        .collect();
    for r in reads {
        assert_eq!(r.await.unwrap().unwrap(), 0, "the version loaded");
    }
    assert_eq!(db.calls(), 1, "one load for the whole service");
    let loads: u64 = instances.iter().map(|c| c.stats().loader_calls).sum();
    let waits: u64 = instances.iter().map(|c| c.stats().lease_waits).sum();
    assert_eq!(loads, 1);
    assert_eq!(waits, 3, "each other instance's flight waited on the lease");
    // The fill replaced the lease record with the value (an envelope: `\xFFST…`).
    assert_eq!(redis.cli(&["GETRANGE", "svc:cold", "1", "2"]), "ST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holder_lease_expires_and_a_waiter_takes_over() {
    let redis = RedisServer::start();
    let a = instance_with_lease_ttl(&redis, Duration::from_millis(300)).await;
    let b = instance_with_lease_ttl(&redis, Duration::from_millis(300)).await;
    let db = Db::new();
    // A's holder hangs, then its task is aborted: its lease is never released (as if the
    // process died); only the lease's TTL frees the key.
    db.set_delay(Duration::from_secs(3600));
    let stuck = {
        let (a, db) = (a.clone(), db.clone());
        tokio::spawn(async move { a.get_or_load::<Product, _, _, _>("k", db.loader(1)).await })
    };
    // A's lease is the record its read left in the data key.
    strata_testkit::eventually("A to hold the lease", crate::WAIT, || async {
        redis.cli(&["GETRANGE", "svc:k", "1", "2"]) == "SL"
    })
    .await;
    stuck.abort();
    let _ = stuck.await;
    // Aborting ran A's release; make the lease a dead process's, which nobody releases.
    strata_testkit::eventually("A's release", crate::WAIT, || async {
        redis.cli(&["EXISTS", "svc:k"]) == "0"
    })
    .await;
    let dead = RedisStore::connect(&redis.url()).await.unwrap();
    let held = dead
        .read("svc", "k", Some((99, Duration::from_millis(300))), false)
        .await
        .unwrap();
    assert_eq!(held, strata::Read::Leased);
    db.set_delay(Duration::ZERO);
    let p: Arc<Product> = b.get_or_load("k", db.loader(1)).await.unwrap();
    assert_eq!(p.id, 1);
    assert_eq!(b.stats().lease_waits, 1, "B waited for the holder first");
    assert_eq!(b.stats().loader_calls, 1, "then took over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_with_a_stale_copy_serves_it_while_another_instance_loads() {
    let redis = RedisServer::start();
    let options = EntryOptions::ttl(Duration::from_millis(200)).fail_safe(Duration::from_secs(60));
    let b = instance(&redis, options).await;
    let db = Db::new();
    let old: Arc<Product> = b.get_or_load("k", db.loader(1)).await.unwrap();
    // Let the entry expire (L2 keeps it for fail-safe), then have another instance hold the
    // key's lease as if it were loading.
    strata_testkit::eventually("the entry to expire", crate::WAIT, || async {
        b.get::<Product>("k").await.unwrap().is_none()
    })
    .await;
    let holder = RedisLease::connect_with(&RedisConfig::from_url(&redis.url()).unwrap())
        .await
        .unwrap();
    assert!(holder.try_acquire("svc", "k", 42, TTL).await.unwrap());
    db.update();
    let served: Arc<Product> = b.get_or_load("k", db.loader(1)).await.unwrap();
    assert_eq!(served.version, old.version, "the stale copy, at once");
    assert_eq!(b.stats().lease_waits, 1);
    assert_eq!(db.calls(), 1, "no second load while the lease is held");
    holder.release("svc", "k", 42).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_holder_releases_a_lease() {
    let redis = RedisServer::start();
    let config = RedisConfig::from_url(&redis.url()).unwrap();
    let lease = RedisLease::connect_with(&config).await.unwrap();
    assert!(lease.try_acquire("svc", "k", 1, TTL).await.unwrap());
    assert!(!lease.try_acquire("svc", "k", 2, TTL).await.unwrap());
    lease.release("svc", "k", 2).await.unwrap();
    assert_eq!(
        redis.cli(&["GET", "svc#lease:k"]),
        "1",
        "a stranger's release is a no-op"
    );
    let pttl: u64 = redis.cli(&["PTTL", "svc#lease:k"]).parse().unwrap();
    assert!(
        pttl > 0 && pttl <= 60_000,
        "the lease carries its TTL: {pttl}"
    );
    lease.release("svc", "k", 1).await.unwrap();
    assert_eq!(redis.cli(&["EXISTS", "svc#lease:k"]), "0");
}

/// Runs `redis-cli` against the server on `port` (from inside a loader, which must be
/// `'static`).
fn cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A loader that runs `before` against the server (its lease is taken by then), then stops
/// the server taking writes — the fill included — and returns version 0 of product 1.
fn pausing_loader(
    port: u16,
    before: &'static [&'static str],
    calls: &Arc<std::sync::atomic::AtomicU64>,
) -> impl FnOnce() -> std::future::Ready<Result<Product, std::io::Error>> + Send + 'static {
    let calls = calls.clone();
    move || {
        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if !before.is_empty() {
            cli(port, before);
        }
        cli(port, &["CLIENT", "PAUSE", "20000", "WRITE"]);
        std::future::ready(Ok(Product {
            id: 1,
            version: 0,
            name: "loaded".into(),
        }))
    }
}

/// An instance whose writes wait out a long pause of the server instead of timing out.
async fn patient(redis: &RedisServer) -> HybridCache {
    let long = Duration::from_secs(60);
    let config = RedisConfig::from_url(&redis.url())
        .unwrap()
        .command_timeout(long);
    crate::builder(&config, EntryOptions::ttl(TTL))
        .await
        .resilience(strata::Resilience::default().write_timeout(long))
        .build()
        .await
        .unwrap()
}

/// A miss answers once its value is in L1; its fill follows. With the server taking no
/// writes, the caller still gets its answer, this instance serves the key from L1, and L2
/// holds the load's lease record — so another instance waits for the fill instead of
/// loading. Once writes resume, the fill lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_answers_before_its_fill_and_another_instance_waits_for_the_fill() {
    let redis = RedisServer::start();
    let (a, b) = (patient(&redis).await, patient(&redis).await);
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let loader = pausing_loader(redis.port(), &[], &calls);
    let answered =
        tokio::time::timeout(crate::WAIT, a.get_or_load::<Product, _, _, _>("k", loader))
            .await
            .expect("answered while the fill cannot land")
            .unwrap();
    assert_eq!(answered.name, "loaded");
    assert_eq!(
        redis.cli(&["GETRANGE", "svc:k", "1", "2"]),
        "SL",
        "L2 still holds the lease record"
    );
    let again: Arc<Product> = a
        .get_or_load("k", pausing_loader(redis.port(), &[], &calls))
        .await
        .unwrap();
    assert_eq!((again.name.as_str(), a.stats().l1_hits), ("loaded", 1));

    let from_b = {
        let (b, calls) = (b.clone(), calls.clone());
        tokio::spawn(async move {
            b.get_or_load::<Product, _, _, _>("k", pausing_loader(0, &[], &calls))
                .await
        })
    };
    redis.cli(&["CLIENT", "UNPAUSE"]);
    assert_eq!(from_b.await.unwrap().unwrap().name, "loaded");
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one load"
    );
    a.run_pending_tasks().await;
    assert!(
        redis.cli(&["GET", "svc:k"]).contains("loaded"),
        "the fill landed"
    );
    assert_eq!((a.stats().fills_fenced, a.stats().l2_errors), (0, 0));
}

/// A fill refused after the answer (something else changed the key while it loaded — here a
/// writer outside the protocol, whose change this instance does not hear of) takes the value
/// back out of L1: until the refusal, this instance serves the loaded value, as a caller
/// joining the load would have got it; after it, the next read loads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_refused_after_the_answer_takes_the_value_out_of_l1() {
    let redis = RedisServer::start();
    let a = patient(&redis).await;
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let loader = pausing_loader(redis.port(), &["DEL", "svc:k"], &calls);
    let answered: Arc<Product> = a.get_or_load("k", loader).await.unwrap();
    assert_eq!(answered.name, "loaded");
    let before: Arc<Product> = a
        .get_or_load("k", pausing_loader(0, &[], &calls))
        .await
        .unwrap();
    assert_eq!((before.name.as_str(), a.stats().l1_hits), ("loaded", 1));

    redis.cli(&["CLIENT", "UNPAUSE"]);
    a.run_pending_tasks().await;
    assert_eq!(a.stats().fills_fenced, 1, "{:?}", a.stats());
    assert_eq!(
        redis.cli(&["EXISTS", "svc:k"]),
        "0",
        "the fill did not land"
    );
    let db = Db::new();
    let after: Arc<Product> = a.get_or_load("k", db.loader(1)).await.unwrap();
    assert_eq!(
        (after.name.as_str(), db.calls()),
        ("product 1", 1),
        "loaded again"
    );
}

/// A crowd on one key is answered as a caller alone is: once the value is in L1 and the fill
/// is sent, not when the fill lands — the fill is queued before anyone of the crowd wakes, so
/// waking them does not hold it back. While the fill waits out a pause of the server's
/// writes, the leader's caller and its follower have their answer and L2 holds the lease
/// record; another instance reading then gets the fill once writes resume, not a load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_is_answered_before_its_fill_lands() {
    let redis = RedisServer::start();
    let (a, b) = (patient(&redis).await, patient(&redis).await);
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (started, loading) = tokio::sync::oneshot::channel::<()>();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let loader = {
        let (calls, port) = (calls.clone(), redis.port());
        move || async move {
            let _ = started.send(());
            let _ = released.await; // until the crowd has gathered
            pausing_loader(port, &[], &calls)().await
        }
    };
    let leader = tokio::spawn({
        let a = a.clone();
        async move { a.get_or_load::<Product, _, _, _>("k", loader).await }
    });
    loading.await.unwrap();
    let (joined, gathered) = tokio::sync::oneshot::channel::<()>();
    let follower = tokio::spawn({
        let (a, calls) = (a.clone(), calls.clone());
        async move {
            let read = a.get_or_load::<Product, _, _, _>("k", pausing_loader(0, &[], &calls));
            tokio::pin!(read);
            // Polled once: the read has joined the flight.
            tokio::select! {
                biased;
                answer = &mut read => return answer,
                () = std::future::ready(()) => {}
            }
            let _ = joined.send(());
            read.await
        }
    });
    gathered.await.unwrap();
    let _ = release.send(());
    for read in [leader, follower] {
        let answer = tokio::time::timeout(crate::WAIT, read).await;
        assert_eq!(answer.unwrap().unwrap().unwrap().name, "loaded");
    }
    // Answered while the fill still waits in the server (a client blocked by the pause).
    strata_testkit::eventually("the fill to wait out the pause", crate::WAIT, || async {
        redis.cli(&["CLIENT", "LIST"]).contains("flags=b")
    })
    .await;
    assert_eq!(
        redis.cli(&["GETRANGE", "svc:k", "1", "2"]),
        "SL",
        "L2 still holds the lease record"
    );
    let from_b = {
        let (b, calls) = (b.clone(), calls.clone());
        tokio::spawn(async move {
            b.get_or_load::<Product, _, _, _>("k", pausing_loader(0, &[], &calls))
                .await
        })
    };
    redis.cli(&["CLIENT", "UNPAUSE"]);
    assert_eq!(from_b.await.unwrap().unwrap().name, "loaded");
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one load"
    );
    assert!(
        redis.cli(&["GET", "svc:k"]).contains("loaded"),
        "the fill landed"
    );
}

/// A fill is fenced by the lease record its read left in the key, so the loader must not read
/// the source before that record is in: a write landing between the source's read and the
/// record would leave the fill's old value unfenced in L2, for every instance (a load begun
/// beside its read did exactly that: BENCHMARKS.md, "A load begun beside its lease's read").
/// The reload of a key the instance invalidated itself, after forty that would train any
/// heuristic for it, does not load while the server is frozen — unless the key held this
/// instance's lease record before the freeze (a lease taken by the write would be as safe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_begins_only_once_its_lease_is_taken() {
    let redis = RedisServer::start();
    let config = RedisConfig::from_url(&redis.url()).unwrap();
    let a = crate::builder(&config, EntryOptions::ttl(TTL))
        .await
        // A frozen server shows as a read still out, not as a failed one.
        .resilience(strata::Resilience::default().read_timeout(Duration::from_secs(30)))
        .build()
        .await
        .unwrap();
    let db = Db::new();
    let read = |a: &HybridCache| {
        let (a, db) = (a.clone(), db.clone());
        async move {
            let p: Arc<Product> = a.get_or_load("k", db.loader(1)).await.unwrap();
            p.version
        }
    };
    assert_eq!(read(&a).await, 0);
    for _ in 0..40 {
        let version = db.update();
        a.invalidate("k").await.unwrap();
        assert_eq!(read(&a).await, version);
    }
    let version = db.update();
    a.invalidate("k").await.unwrap();
    let calls = db.calls();
    let leased = redis.cli(&["GETRANGE", "svc:k", "1", "2"]) == "SL";
    redis.freeze();
    let reload = tokio::spawn(read(&a));
    let loaded_early = tokio::time::timeout(Duration::from_millis(300), async {
        while db.calls() == calls {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    redis.thaw();
    assert!(
        loaded_early.is_err() || leased,
        "the loader ran before its lease record was in"
    );
    assert_eq!(reload.await.unwrap(), version);
    assert_eq!(db.calls(), calls + 1);
    assert_eq!(a.stats().l2_errors, 0);
}

/// What the server was asked to do, as `MONITOR` shows it (each line names its source: a
/// client's address, or `lua` for a command a script called), until `stop`.
struct Monitor {
    child: std::process::Child,
    lines: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Monitor {
    async fn start(port: u16) -> Monitor {
        use std::io::BufRead;
        let mut child = std::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "monitor"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let kept = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                kept.lock().unwrap().push(line);
            }
        });
        let monitor = Monitor { child, lines };
        strata_testkit::eventually("MONITOR to start", crate::WAIT, || async {
            monitor.lines().iter().any(|line| line == "OK")
        })
        .await;
        monitor
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// On one server the end of a load another instance waited on is announced by the fill's own
/// script (`FILL_LEASED`, given the namespace's filled stream), not by commands the loader
/// sends once the fill's answer is in — the waiter hears of it a hop sooner (BENCHMARKS.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waited_on_load_is_announced_by_its_fill() {
    let redis = RedisServer::start();
    let (a, b) = (
        instance(&redis, EntryOptions::ttl(TTL)).await,
        instance(&redis, EntryOptions::ttl(TTL)).await,
    );
    let monitor = Monitor::start(redis.port()).await;
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let holder = tokio::spawn({
        let (a, calls) = (a.clone(), calls.clone());
        async move {
            a.get_or_load::<Product, _, _, _>("k", move || async move {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = released.await;
                Ok::<_, std::io::Error>(Product {
                    id: 1,
                    version: 1,
                    name: "loaded".into(),
                })
            })
            .await
        }
    });
    let length = |n: &'static str| {
        let redis = &redis;
        async move { redis.cli(&["STRLEN", "svc:k"]) == n }
    };
    strata_testkit::eventually("a's lease record", crate::WAIT, || length("12")).await;
    let waiter = tokio::spawn({
        let (b, calls) = (b.clone(), calls.clone());
        async move {
            b.get_or_load::<Product, _, _, _>("k", pausing_loader(0, &[], &calls))
                .await
        }
    });
    strata_testkit::eventually("b's mark on it", crate::WAIT, || length("13")).await;
    let _ = release.send(());
    for read in [holder, waiter] {
        let answer = tokio::time::timeout(crate::WAIT, read).await;
        assert_eq!(answer.unwrap().unwrap().unwrap().name, "loaded");
    }
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one load"
    );
    let announced = |lines: &[String]| {
        lines
            .iter()
            .filter(|line| line.contains("\"XADD\" \"svc#filled\""))
            .cloned()
            .collect::<Vec<_>>()
    };
    strata_testkit::eventually("the announcement", crate::WAIT, || async {
        !announced(&monitor.lines()).is_empty()
    })
    .await;
    let lines = monitor.lines();
    let told = announced(&lines);
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(told[0].contains("[0 lua]"), "by the script: {told:?}");
    assert!(
        told[0].ends_with("\"k\" \"k\""),
        "by its cache key: {told:?}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.contains("\"EVALSHA\"") && line.contains("\"svc:k\" \"svc#filled\"")),
        "the fill carried the stream"
    );
}
