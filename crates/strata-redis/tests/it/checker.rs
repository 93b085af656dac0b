//! The staleness checker: four processes share one Redis, reading and writing a small key
//! space at random for ~20 s; one process is cut off from Redis for 3 s in the middle (it
//! reaches Redis through a TCP proxy that drops its connections and refuses new ones), while
//! the log moves on far enough to be trimmed past its position. Every read and every committed
//! write is recorded with the wall clock; afterwards, no read may return a version older than
//! one whose invalidation had returned more than `max_staleness` before the read began. The
//! same workers run on a Redis Cluster during a slot migration and a failover (`cluster.rs`).
//!
//! The processes are this test binary itself, re-run with `--ignored --exact` and the
//! worker's parameters in the environment.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use strata::{EntryOptions, HybridCache};
use strata_redis::{RedisConfig, RedisStore, RedisStreamLog};
use strata_testkit::{Proxy, RedisServer};

use crate::polyglot::Worker;

/// The log's bound (`XADD MAXLEN ~`).
const LOG_LEN: usize = 1_000;

pub(crate) const PROCESSES: usize = 4;
/// The process that is cut off.
const VICTIM: usize = 3;
const KEYS: u64 = 20;
const RUN: Duration = Duration::from_secs(20);
const CUT_AT: Duration = Duration::from_secs(8);
const CUT_FOR: Duration = Duration::from_secs(3);
const MAX_STALENESS: Duration = Duration::from_millis(500);
const WRITE_RATIO: f64 = 0.15;
/// A write not acknowledged after this long is an error, not a hang (far beyond a failover
/// on loopback, a few seconds, however loaded the machine).
const GIVE_UP: Duration = Duration::from_secs(30);
/// The worker's parameters, as JSON (a [`Run`]).
const RUN_VAR: &str = "STRATA_CHECKER_RUN";

/// What one worker process is to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Run {
    /// The cache's Redis (for the cut-off worker, through the proxy that cuts it off; a
    /// `redis+cluster://` URL on a cluster).
    pub(crate) url: String,
    /// The source of truth: a Redis never cut (it stands for the service's database).
    pub(crate) source: String,
    pub(crate) keys: u64,
    /// How long the worker runs at most.
    pub(crate) run_ms: u64,
    /// A file whose appearance ends the run sooner (a run whose schedule depends on how
    /// long a failover takes).
    #[serde(default)]
    pub(crate) stop_file: Option<std::path::PathBuf>,
    pub(crate) max_staleness_ms: u64,
    /// How many parts the namespace's log is split into.
    pub(crate) log_shards: usize,
}

/// What a worker records.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Record {
    /// (key, version, wall µs when the invalidation returned)
    pub(crate) commits: Vec<(u64, u64, u64)>,
    /// (key, version read, wall µs when the read began)
    pub(crate) reads: Vec<(u64, u64, u64)>,
    /// What callers saw go wrong.
    pub(crate) errors: Errors,
    l1_hits: u64,
    l1_bypassed: u64,
    resyncs: u64,
}

/// What callers saw go wrong.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Errors {
    /// Reads that failed (the cache answers reads from L1, the source or a stale value).
    pub(crate) reads: u64,
    /// Invalidations refused as unavailable — the breaker's policy while Redis (or a
    /// master) is away; the worker retries them, and a write counts as committed only once
    /// acknowledged.
    pub(crate) refused_writes: u64,
    /// Any other invalidation error, and writes given up after [`GIVE_UP`].
    pub(crate) other_write_errors: u64,
}

impl std::ops::AddAssign for Errors {
    fn add_assign(&mut self, other: Errors) {
        self.reads += other.reads;
        self.refused_writes += other.refused_writes;
        self.other_write_errors += other.other_write_errors;
    }
}

pub(crate) fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// One process of the checker (started by [`spawn`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a worker process of the staleness checker, started by it"]
async fn checker_worker() {
    let run: Run = serde_json::from_str(&std::env::var(RUN_VAR).expect("run by the checker"))
        .expect("the checker's parameters");
    let config = RedisConfig::from_url(&run.url).unwrap();
    let log = RedisStreamLog::connect_with(&config)
        .await
        .unwrap()
        // Room for the burst of a reconnecting process's deferred writes, none for the
        // fillers published while it is cut off: it must resync, the others must not.
        .max_len(LOG_LEN)
        .shards("chk", run.log_shards)
        .heartbeat_every(Duration::from_millis(100));
    let cache = HybridCache::builder("chk")
        .l2(RedisStore::connect_with(&config).await.unwrap())
        .invalidation(log)
        .max_staleness(Duration::from_millis(run.max_staleness_ms))
        .default_entry(EntryOptions::ttl(Duration::from_secs(600)))
        .build()
        .await
        .unwrap();
    let source = redis::Client::open(run.source.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut record = work(&cache, source, &run).await;
    let s = cache.stats();
    (record.l1_hits, record.l1_bypassed, record.resyncs) = (s.l1_hits, s.l1_bypassed, s.resyncs);
    println!("CHECKER:{}", serde_json::to_string(&record).unwrap());
}

/// A call to the source of truth (on the Redis under test), retried until it answers: the
/// checker tests the cache, not the database's client, which would retry as well.
async fn source_retried<T, F, Fut>(call: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<T>>,
{
    // Bounded: a failover takes seconds; a source still down after 30 s fails the run.
    for _ in 0..1_500 {
        match call().await {
            Ok(value) => return value,
            Err(e) => {
                eprintln!("checker: the source failed ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    panic!("checker: the source of truth did not come back within 30 s");
}

/// Reads and writes `run.keys` keys at random for `run.run_ms` (or until `run.stop_file`
/// appears), a few hundred operations a second; the versions live in `source`. Nothing is
/// unwrapped: errors are counted.
async fn work(cache: &HybridCache, source: MultiplexedConnection, run: &Run) -> Record {
    let mut record = Record::default();
    let writes = Arc::new(std::sync::Mutex::new((Vec::new(), Errors::default())));
    let mut pending = Vec::new();
    let end = Instant::now() + Duration::from_millis(run.run_ms);
    let stopped = || run.stop_file.as_ref().is_some_and(|f| f.exists());
    while Instant::now() < end && !stopped() {
        let key = fastrand::u64(0..run.keys);
        let name = format!("k{key}");
        if fastrand::f64() < WRITE_RATIO {
            // The source of truth: a version counter in Redis, bumped atomically — retried, as
            // a database client does, while the cluster it lives on fails over.
            let source_key = format!("source:{key}");
            let version: u64 = source_retried(|| {
                let mut conn = source.clone();
                let cmd = redis::cmd("INCR").arg(&source_key).clone();
                async move { cmd.query_async::<u64>(&mut conn).await }
            })
            .await;
            // Committed once the invalidation is acknowledged; while refused it is not (the
            // write is not done until everyone can be told), and it is retried beside the
            // reads, as a service's other requests go on meanwhile.
            let (cache, writes) = (cache.clone(), writes.clone());
            pending.push(tokio::spawn(async move {
                let give_up = Instant::now() + GIVE_UP;
                let mut errors = Errors::default();
                let committed = loop {
                    match cache.invalidate(&name).await {
                        Ok(()) => break true,
                        Err(strata::Error::Unavailable(_)) => errors.refused_writes += 1,
                        Err(e) => {
                            errors.other_write_errors += 1;
                            eprintln!("checker: invalidation failed: {e}");
                        }
                    }
                    if Instant::now() > give_up {
                        eprintln!("checker: an invalidation still refused after {GIVE_UP:?}");
                        errors.other_write_errors += 1;
                        break false;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                let mut writes = writes.lock().unwrap();
                if committed {
                    writes.0.push((key, version, wall_us()));
                }
                writes.1 += errors;
            }));
        } else {
            let began = wall_us();
            let conn = source.clone();
            let read = cache
                .get_or_load(&name, move || async move {
                    let source_key = format!("source:{key}");
                    let version = source_retried(|| {
                        let mut conn = conn.clone();
                        let cmd = redis::cmd("GET").arg(&source_key).clone();
                        async move { cmd.query_async::<Option<u64>>(&mut conn).await }
                    })
                    .await;
                    Ok::<_, std::io::Error>(version.unwrap_or_default())
                })
                .await;
            match read {
                Ok(version) => record.reads.push((key, *version, began)),
                Err(e) => {
                    eprintln!("checker: read of {name} failed: {e}");
                    record.errors.reads += 1;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for write in pending {
        write.await.unwrap();
    }
    let (commits, errors) = std::mem::take(&mut *writes.lock().unwrap());
    record.commits = commits;
    record.errors += errors;
    record
}

/// Starts one worker process per run: this test binary itself, re-run with `--ignored
/// --exact`.
pub(crate) fn spawn(runs: &[Run]) -> Vec<tokio::process::Child> {
    runs.iter()
        .map(|run| spawn_one(run, &Worker::Rust))
        .collect()
}

/// One worker: this test binary, or another language's client's checker worker
/// (`clients/python/interop/worker.py checker`, `clients/node/dist/interop/worker.js checker`),
/// which takes the same [`Run`] and prints the same [`Record`].
pub(crate) fn spawn_one(run: &Run, worker: &Worker) -> tokio::process::Child {
    let mut command = match worker {
        Worker::Rust => {
            let mut c = tokio::process::Command::new(std::env::current_exe().unwrap());
            c.args([
                "--ignored",
                "--exact",
                "checker::checker_worker",
                "--nocapture",
            ]);
            c
        }
        other => other.command("checker"),
    };
    command
        .env(RUN_VAR, serde_json::to_string(run).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// The workers' records, once they are done: read from all at once (a record is long, and a
/// worker whose output nobody reads cannot finish), bounded (a hung worker fails the run).
pub(crate) async fn records(children: Vec<tokio::process::Child>) -> Vec<Record> {
    let outputs = tokio::time::timeout(
        RUN + GIVE_UP + Duration::from_secs(60),
        futures_util::future::join_all(
            children
                .into_iter()
                .map(tokio::process::Child::wait_with_output),
        ),
    )
    .await
    .expect("every worker finished in time");
    outputs
        .into_iter()
        .map(|out| {
            let out = out.unwrap();
            assert!(out.status.success(), "a worker failed");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let line = stdout
                .lines()
                .find_map(|l| l.strip_prefix("CHECKER:"))
                .expect("the worker's record");
            serde_json::from_str::<Record>(line).unwrap()
        })
        .collect()
}

/// All errors the workers' callers saw.
pub(crate) fn errors(records: &[Record]) -> Errors {
    let mut all = Errors::default();
    for r in records {
        all += r.errors;
    }
    all
}

/// The longest time no write was acknowledged by any worker: a failover's write outage.
pub(crate) fn longest_write_pause(records: &[Record]) -> Duration {
    let mut at: Vec<u64> = records
        .iter()
        .flat_map(|r| &r.commits)
        .map(|(_, _, at)| *at)
        .collect();
    at.sort_unstable();
    let longest = at.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    Duration::from_micros(longest)
}

/// Reads that returned a version older than one whose invalidation had returned more than
/// `bound` before they began.
pub(crate) fn violations(records: &[Record], bound: Duration) -> usize {
    let mut commits: HashMap<u64, Vec<(u64, u64)>> = HashMap::new();
    for (key, version, at) in records.iter().flat_map(|r| &r.commits) {
        commits.entry(*key).or_default().push((*at, *version));
    }
    for list in commits.values_mut() {
        list.sort_unstable();
    }
    let bound = bound.as_micros() as u64;
    records
        .iter()
        .flat_map(|r| &r.reads)
        .filter(|(key, version, began)| {
            // The newest version committed before `began − bound`.
            let Some(list) = commits.get(key) else {
                return false;
            };
            let cutoff = began.saturating_sub(bound);
            let newest = list
                .iter()
                .take_while(|(at, _)| *at < cutoff)
                .map(|(_, v)| *v)
                .max()
                .unwrap_or(0);
            *version < newest
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_never_serve_past_the_staleness_bound() {
    staleness_run(
        &[Worker::Rust, Worker::Rust, Worker::Rust, Worker::Rust],
        KEYS,
    )
    .await;
}

/// The checker over [`PROCESSES`] workers, each in its language, reading and writing `keys`
/// keys; worker [`VICTIM`] is cut off for [`CUT_FOR`].
pub(crate) async fn staleness_run(workers: &[Worker; PROCESSES], keys: u64) {
    let _one = crate::HEAVY.lock().await;
    let redis = RedisServer::start();
    let proxy = Proxy::start(redis.port()).await.unwrap();
    let runs: Vec<Run> = (0..PROCESSES)
        .map(|i| Run {
            url: match i {
                VICTIM => format!("redis://127.0.0.1:{}", proxy.port()),
                _ => redis.url(),
            },
            source: redis.url(),
            keys,
            run_ms: RUN.as_millis() as u64,
            stop_file: None,
            max_staleness_ms: MAX_STALENESS.as_millis() as u64,
            log_shards: 1,
        })
        .collect();
    let children = runs
        .iter()
        .zip(workers)
        .map(|(run, worker)| spawn_one(run, worker))
        .collect();
    // The run's schedule, not a synchronisation.
    tokio::time::sleep(CUT_AT).await;
    proxy.cut();
    let cut_at = wall_us();
    let cut_until = Instant::now() + CUT_FOR;
    // However busy the machine, the log moves on by far more than its bound while the victim
    // is away: its position is trimmed, a gap it must notice.
    let filler = RedisStreamLog::connect(&redis.url())
        .await
        .unwrap()
        .max_len(LOG_LEN);
    for i in 0..3 * LOG_LEN {
        let invalidation = strata::invalidation::Invalidation {
            origin: 1,
            target: strata::invalidation::Target::Key(format!("filler:{i}")),
        };
        strata::InvalidationLog::publish(&filler, "chk", &invalidation)
            .await
            .unwrap();
    }
    tokio::time::sleep_until(cut_until.into()).await;
    proxy.restore();
    let restored_at = wall_us();
    let records = records(children).await;
    let reads: usize = records.iter().map(|r| r.reads.len()).sum();
    let writes: usize = records.iter().map(|r| r.commits.len()).sum();
    let over_bound = violations(&records, MAX_STALENESS);
    let strictly_stale = violations(&records, Duration::ZERO);
    let victim_record = &records[VICTIM];
    let served_while_cut = victim_record
        .reads
        .iter()
        .filter(|(_, _, began)| (cut_at..restored_at).contains(began))
        .count();
    let languages: Vec<&str> = workers.iter().map(Worker::name).collect();
    println!(
        "checker {languages:?}: {reads} reads, {writes} writes, one process cut off for {CUT_FOR:?}; reads older than \
         the {MAX_STALENESS:?} bound: {over_bound}; reads older than any returned \
         invalidation: {strictly_stale}; cut process: {} L1 hits bypassed, {} L1 resyncs \
         (log trimmed past it), {served_while_cut} reads served while cut off; L1 hits (all): {}",
        victim_record.l1_bypassed,
        victim_record.resyncs,
        records.iter().map(|r| r.l1_hits).sum::<u64>(),
    );
    assert!(reads > 1_000 && writes > 200, "a real workload ran");
    // Its calls to Redis failed at once and went to the source, as an open breaker sends them;
    // a client queueing them for a reconnect served a handful of reads in the 3 s.
    assert!(
        served_while_cut >= 100,
        "the cut process kept serving reads: {served_while_cut}"
    );
    assert!(
        victim_record.l1_bypassed > 0,
        "the cut process bypassed its L1"
    );
    assert!(
        victim_record.resyncs > 0,
        "the cut process dropped its L1 on the log gap"
    );
    assert!(
        records
            .iter()
            .enumerate()
            .all(|(i, r)| i == VICTIM || r.resyncs == 0),
        "the others never lost their place"
    );
    assert!(
        records.iter().map(|r| r.l1_hits).sum::<u64>() > 100,
        "L1 served"
    );
    let errors = errors(&records);
    assert_eq!(
        (errors.reads, errors.other_write_errors),
        (0, 0),
        "no read failed; writes were only refused while cut off: {errors:?}"
    );
    assert_eq!(over_bound, 0, "reads past the staleness bound");
}

#[test]
fn the_checker_counts_what_it_should() {
    let record = Record {
        commits: vec![(1, 1, 1_000_000), (1, 2, 3_000_000)],
        reads: vec![
            (1, 0, 900_000),   // before any commit: fine
            (1, 0, 1_400_000), // 0.4 s after v1: within a 0.5 s bound, stale strictly
            (1, 0, 1_600_000), // 0.6 s after v1: past the bound
            (1, 1, 3_200_000), // v2 0.2 s old: within
            (2, 0, 9_000_000), // another key, never written
        ],
        ..Record::default()
    };
    let records = [record];
    assert_eq!(violations(&records, Duration::from_millis(500)), 1);
    assert_eq!(violations(&records, Duration::ZERO), 3);
}
