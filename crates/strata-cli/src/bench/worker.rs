//! Instances of the multi-process workloads (W2, W3): the same code runs in a worker process
//! (`strata bench-worker`, driven over stdin/stdout) or, without Redis, in-process.
//!
//! Protocol, one line each: the worker prints `ready` once its cache is built (and, for W3,
//! holds the key in L1); the coordinator sends `go`; the worker runs and prints its
//! [`Outcome`] as JSON. A W3 reader keeps reading until the coordinator sends `stop`.

use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use strata_redis::RedisConfig;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::BoxError;
use super::cost::cpu_during;
use super::runner::Measured;
use super::source::Source;
use super::subject::{Choice, Counts, L2Target, Subject};
use super::timer::LoadTimer;
use super::workload::{Params, Workload};

/// `strata bench-worker` arguments.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct WorkerArgs {
    #[arg(value_enum)]
    pub(crate) workload: Workload,
    #[arg(long)]
    pub(crate) redis: String,
    #[arg(long, value_enum)]
    pub(crate) cache: Choice,
    #[arg(long)]
    pub(crate) instance: usize,
    /// W5: the fleet's shared memory (versions, then commits), made by the coordinator.
    #[arg(long)]
    pub(crate) shared: Option<std::path::PathBuf>,
    /// W5: measured operations of the whole fleet.
    #[arg(long)]
    pub(crate) ops: Option<u64>,
    /// W5: warm-up operations of the whole fleet.
    #[arg(long)]
    pub(crate) warmup: Option<u64>,
    /// W3: the writer deletes the key with a plain `DEL`, as a writer outside Strata would;
    /// Strata's readers track foreign writes.
    #[arg(long)]
    pub(crate) foreign: bool,
    /// W2, W5: what times the loads (`strata bench --load-timer`).
    #[arg(long, value_enum, default_value = "thread")]
    pub(crate) load_timer: LoadTimer,
}

/// What one instance measured.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Outcome {
    pub(crate) instance: usize,
    pub(crate) loader_calls: u64,
    pub(crate) errors: u64,
    pub(crate) l1_hits: u64,
    pub(crate) l2_hits: u64,
    pub(crate) waited: u64,
    pub(crate) l2_errors: u64,
    /// Read latencies as (µs, count) pairs.
    pub(crate) read_us: Vec<(u64, u64)>,
    /// Write (update + invalidate) latencies as (µs, count) pairs.
    pub(crate) write_us: Vec<(u64, u64)>,
    /// W3 writer: (version, wall-clock µs when its invalidation returned).
    pub(crate) commits: Vec<(u64, u64)>,
    /// W3 reader: (version, wall-clock µs when first read).
    pub(crate) seen: Vec<(u64, u64)>,
    /// CPU seconds the instance's process used while it ran (all of the process: meaningful
    /// for an instance that has one of its own).
    #[serde(default)]
    pub(crate) cpu_s: f64,
}

/// W2's parameters.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StampedeParams {
    pub(crate) instances: usize,
    pub(crate) reads: usize,
    pub(crate) load_ms: u64,
}

pub(crate) const W2: StampedeParams = StampedeParams {
    instances: 4,
    reads: 1000,
    load_ms: 50,
};

/// W3's parameters.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FanOutParams {
    pub(crate) instances: usize,
    pub(crate) writes: usize,
    pub(crate) interval_ms: u64,
    /// How often a reader asks for the key.
    pub(crate) poll_us: u64,
}

pub(crate) const W3: FanOutParams = FanOutParams {
    instances: 4,
    writes: 1000,
    interval_ms: 10,
    poll_us: 200,
};

/// The keys W2 and W3 use: both measure key 0; W2 warms up on key 1.
pub(crate) fn the_keys() -> &'static [String] {
    static KEYS: std::sync::OnceLock<[String; 2]> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| ["product:0".to_owned(), "product:1".to_owned()])
}

/// The key of W2's warm-up stampede (the measured one reads key 0).
const WARM_UP_KEY: u32 = 1;

/// An instance, built and ready.
pub(crate) struct Instance {
    workload: Workload,
    index: usize,
    subject: Arc<Subject>,
    source: &'static Source,
    keys: &'static [String],
    /// W3's writer outside Strata: a plain connection and the key's name in Redis.
    foreign: Option<(strata_redis::RedisConnection, String)>,
}

impl Instance {
    pub(crate) async fn new(
        workload: Workload,
        choice: Choice,
        target: &L2Target,
        index: usize,
        foreign: bool,
        timer: LoadTimer,
    ) -> Result<Instance, BoxError> {
        let mut params = Params::w1();
        // The readers track what the writer does outside Strata.
        params.track_foreign_writes = foreign && index > 0;
        let subject = match choice {
            Choice::Naive => Subject::naive(target, &params).await?,
            _ => Subject::strata(target, &params, false).await?,
        };
        let store = target.store().await?;
        let source = match workload {
            Workload::W2 => Source::shared(
                store,
                2,
                Duration::from_millis(W2.load_ms),
                params.value_bytes,
            )
            .with_timer(timer),
            _ => Source::shared(store, 1, Duration::ZERO, params.value_bytes),
        }
        .leak();
        let mut instance = Instance {
            workload,
            index,
            subject: Arc::new(subject),
            source,
            keys: the_keys(),
            foreign: None,
        };
        if foreign && index == 0 {
            let L2Target::Redis(config) = target else {
                return Err("W3 --foreign needs Redis (--redis, or redis-server on PATH)".into());
            };
            let ns = if choice == Choice::Naive {
                super::subject::NAIVE_NS
            } else {
                super::subject::STRATA_NS
            };
            let key = strata::keys::data_key(ns, &instance.keys[0]);
            instance.foreign = Some((config.connect().await?, key));
        }
        match workload {
            Workload::W3 => {
                instance.subject.read(source, instance.keys, 0).await?;
            }
            Workload::W2 => {
                // W2 measures a stampede on a cold key, not on a cold process: the same
                // stampede on another key first opens the connections, loads the scripts and
                // touches the allocator's fresh pages, as they are in a service a stampede
                // meets. Without it the measured reads paid for those: a first script call
                // answered NOSCRIPT and was sent again, and a process spent up to 40 % of its
                // CPU in the kernel zeroing fresh huge pages for the reads' tasks
                // (BENCHMARKS.md, W2).
                let warm_up = instance
                    .stampede(W2.reads / W2.instances, WARM_UP_KEY)
                    .await;
                if warm_up.errors > 0 {
                    return Err(format!("W2 warm-up: {} reads failed", warm_up.errors).into());
                }
            }
            _ => {}
        }
        Ok(instance)
    }

    /// Runs the instance's part; `stop` ends a W3 reader.
    pub(crate) async fn run(self, reads: usize, stop: Arc<AtomicBool>) -> Outcome {
        let loads_before = self.source.loads();
        let counts_before = self.subject.counts();
        let (mut outcome, cpu_s) = cpu_during(async {
            match (self.workload, self.index) {
                (Workload::W3, 0) => self.write().await,
                (Workload::W3, _) => self.poll(stop).await,
                _ => self.stampede(reads, 0).await,
            }
        })
        .await;
        outcome.cpu_s = cpu_s;
        self.subject.settle().await;
        let counts = self.subject.counts() - counts_before;
        outcome.instance = self.index;
        outcome.loader_calls = self.source.loads() - loads_before;
        (outcome.l1_hits, outcome.l2_hits, outcome.waited) =
            (counts.l1_hits, counts.l2_hits, counts.waited);
        outcome.l2_errors = counts.l2_errors;
        outcome
    }

    /// W2: `reads` concurrent reads of `key`, in no level at first.
    async fn stampede(&self, reads: usize, key: u32) -> Outcome {
        let tasks: Vec<_> = (0..reads)
            .map(|_| {
                let (subject, source, keys) = (self.subject.clone(), self.source, self.keys);
                tokio::spawn(async move {
                    let t0 = Instant::now();
                    let ok = subject.read(source, keys, key).await.is_ok();
                    (ok, t0.elapsed().as_micros() as u64)
                })
            })
            .collect();
        let mut hist = histogram();
        let mut errors = 0;
        for t in tasks {
            match t.await {
                Ok((ok, us)) => {
                    hist.saturating_record(us);
                    errors += u64::from(!ok);
                }
                Err(_) => errors += 1,
            }
        }
        Outcome {
            errors,
            read_us: buckets(&hist),
            ..Outcome::default()
        }
    }

    /// W3 writer: bump the version, invalidate, note when the invalidation returned.
    async fn write(&self) -> Outcome {
        let mut outcome = Outcome::default();
        let mut hist = histogram();
        for _ in 0..W3.writes {
            let started = Instant::now();
            let written = match self.source.write(0).await {
                Ok(v) => match &self.foreign {
                    Some((conn, key)) => redis::cmd("DEL")
                        .arg(key)
                        .exec_async(&mut conn.clone())
                        .await
                        .map(|()| v)
                        .map_err(BoxError::from),
                    None => self.subject.invalidate(self.keys, 0).await.map(|()| v),
                },
                Err(e) => Err(e.into()),
            };
            match written {
                Ok(v) => outcome.commits.push((v, wall_us())),
                Err(_) => outcome.errors += 1,
            }
            hist.saturating_record(started.elapsed().as_micros() as u64);
            tokio::time::sleep_until((started + Duration::from_millis(W3.interval_ms)).into())
                .await;
        }
        outcome.write_us = buckets(&hist);
        outcome
    }

    /// W3 reader: read the key every `poll_us` on a thread of its own (finer than Tokio's
    /// millisecond timer), noting when each new version is first seen.
    async fn poll(&self, stop: Arc<AtomicBool>) -> Outcome {
        let (subject, source, keys) = (self.subject.clone(), self.source, self.keys);
        let runtime = tokio::runtime::Handle::current();
        let reader = std::thread::spawn(move || {
            let mut outcome = Outcome::default();
            let mut hist = histogram();
            let mut last = 0;
            while !stop.load(Ordering::SeqCst) {
                let t0 = Instant::now();
                match runtime.block_on(subject.read(source, keys, 0)) {
                    Ok(v) if v > last => {
                        outcome.seen.push((v, wall_us()));
                        last = v;
                    }
                    Ok(_) => {}
                    Err(_) => outcome.errors += 1,
                }
                hist.saturating_record(t0.elapsed().as_micros() as u64);
                std::thread::sleep(Duration::from_micros(W3.poll_us));
            }
            outcome.read_us = buckets(&hist);
            outcome
        });
        tokio::task::spawn_blocking(move || reader.join().unwrap_or_default())
            .await
            .unwrap_or_default()
    }
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .unwrap_or_else(|_| unreachable!("these bounds are valid"))
}

/// A histogram's recorded values as (µs, count) pairs: how a worker process hands it over.
pub(crate) fn buckets(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

/// A histogram rebuilt from (µs, count) pairs: the inverse of [`buckets`], over any number of
/// handed-over histograms.
pub(crate) fn from_buckets<'a>(pairs: impl IntoIterator<Item = &'a (u64, u64)>) -> Histogram<u64> {
    let mut h = histogram();
    for (value, count) in pairs {
        h.saturating_record_n(*value, *count);
    }
    h
}

/// Rebuilds a histogram from the (µs, count) pairs that `pick` takes from each outcome.
fn merge<'a>(
    outcomes: impl Iterator<Item = &'a Outcome>,
    pick: fn(&Outcome) -> &[(u64, u64)],
) -> Histogram<u64> {
    from_buckets(outcomes.flat_map(pick))
}

/// The figures of a run whose operations ran in worker processes: their latencies merged,
/// their counts added.
pub(crate) fn measured<'a>(
    outcomes: impl Iterator<Item = &'a Outcome> + Clone,
    stale_reads: u64,
    elapsed: Duration,
) -> Measured {
    let reads = merge(outcomes.clone(), |o| &o.read_us);
    Measured {
        writes: merge(outcomes.clone(), |o| &o.write_us),
        stale_reads,
        errors: outcomes.clone().map(|o| o.errors).sum(),
        elapsed,
        counts: outcomes.clone().fold(Counts::default(), |c, o| Counts {
            l1_hits: c.l1_hits + o.l1_hits,
            l2_hits: c.l2_hits + o.l2_hits,
            waited: c.waited + o.waited,
            l2_errors: c.l2_errors + o.l2_errors,
        }),
        loads: outcomes.map(|o| o.loader_calls).sum(),
        timeline: Vec::new(),
        window_reads: histogram(),
        loaded_reads: histogram(),
        window_errors: 0,
        reads,
    }
}

pub(crate) fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// `strata bench-worker`: one instance in its own process.
pub(crate) async fn run(args: WorkerArgs) -> Result<ExitCode, BoxError> {
    let target = L2Target::Redis(Box::new(RedisConfig::from_url(&args.redis)?));
    let instance = Instance::new(
        args.workload,
        args.cache,
        &target,
        args.instance,
        args.foreign,
        args.load_timer,
    )
    .await?;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    stdout.write_all(b"ready\n").await?;
    stdout.flush().await?;
    expect(&mut stdin, "go").await?;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = (args.workload == Workload::W3 && args.instance > 0).then(|| {
        let stop = stop.clone();
        tokio::spawn(async move {
            // Any line (or EOF) stops the reader.
            let _ = stdin.next_line().await;
            stop.store(true, Ordering::SeqCst);
        })
    });
    let subject = instance.subject.clone();
    let outcome = instance.run(W2.reads / W2.instances, stop).await;
    if let Some(r) = reader {
        let _ = r.await;
    }
    subject.leave().await;
    stdout
        .write_all(format!("{}\n", serde_json::to_string(&outcome)?).as_bytes())
        .await?;
    stdout.flush().await?;
    Ok(ExitCode::SUCCESS)
}

async fn expect<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut Lines<R>,
    word: &str,
) -> Result<(), BoxError> {
    match lines.next_line().await? {
        Some(line) if line.trim() == word => Ok(()),
        other => Err(format!("expected {word:?} from the coordinator, got {other:?}").into()),
    }
}

/// The coordinator's handle on worker processes.
pub(crate) struct Workers {
    children: Vec<(Child, ChildStdin, Lines<BufReader<ChildStdout>>)>,
}

impl Workers {
    /// Starts `n` workers of `workload` (W2, W3) against `redis` and waits until all are ready.
    /// `foreign`: W3's writer deletes as a writer outside Strata ([`WorkerArgs::foreign`]);
    /// `timer` times W2's loads.
    pub(crate) async fn start(
        workload: Workload,
        choice: Choice,
        redis: &str,
        n: usize,
        foreign: bool,
        timer: LoadTimer,
    ) -> Result<Workers, BoxError> {
        let workload = match workload {
            Workload::W2 => "w2",
            _ => "w3",
        };
        Workers::spawn(n, |command, i| {
            command
                .args([workload, "--redis", redis, "--instance", &i.to_string()])
                .args(["--cache", choice.name()])
                .args(["--load-timer", timer.name()]);
            if foreign {
                command.arg("--foreign");
            }
        })
        .await
    }

    /// Starts `n` `strata bench-worker` processes, worker `i` with the arguments `args` adds,
    /// and waits until all are ready.
    pub(crate) async fn spawn(
        n: usize,
        args: impl Fn(&mut tokio::process::Command, usize),
    ) -> Result<Workers, BoxError> {
        let exe = std::env::current_exe()?;
        let mut workers = Workers {
            children: Vec::new(),
        };
        for i in 0..n {
            let mut command = tokio::process::Command::new(&exe);
            command.arg("bench-worker");
            args(&mut command, i);
            let mut child = command
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()?;
            let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                return Err("worker pipes unavailable".into());
            };
            workers
                .children
                .push((child, stdin, BufReader::new(stdout).lines()));
        }
        workers.expect_all("ready").await?;
        Ok(workers)
    }

    /// Waits until every worker has said `word`.
    pub(crate) async fn expect_all(&mut self, word: &str) -> Result<(), BoxError> {
        for (i, (_, _, out)) in self.children.iter_mut().enumerate() {
            match out.next_line().await? {
                Some(line) if line.trim() == word => {}
                other => return Err(format!("worker {i}: expected {word:?}, got {other:?}").into()),
            }
        }
        Ok(())
    }

    /// Sends `line` to the workers `which` selects.
    pub(crate) async fn send(
        &mut self,
        line: &str,
        which: impl Fn(usize) -> bool,
    ) -> Result<(), BoxError> {
        for (i, (_, stdin, _)) in self.children.iter_mut().enumerate() {
            if which(i) {
                stdin.write_all(format!("{line}\n").as_bytes()).await?;
                stdin.flush().await?;
            }
        }
        Ok(())
    }

    /// The result worker `i` prints last, a JSON line (waits for the worker to end).
    pub(crate) async fn result<T: serde::de::DeserializeOwned>(
        &mut self,
        i: usize,
    ) -> Result<T, BoxError> {
        let result = self.report(i).await?;
        self.children[i].0.wait().await?;
        Ok(result)
    }

    /// The result worker `i` prints last, a JSON line, as soon as it is printed (the worker
    /// may still be ending: [`end`](Self::end) waits for it).
    pub(crate) async fn report<T: serde::de::DeserializeOwned>(
        &mut self,
        i: usize,
    ) -> Result<T, BoxError> {
        let line = self.children[i]
            .2
            .next_line()
            .await?
            .ok_or_else(|| format!("worker {i} exited without a result"))?;
        Ok(serde_json::from_str(&line)?)
    }

    /// Waits for every worker to end.
    pub(crate) async fn end(&mut self) -> Result<(), BoxError> {
        for (child, _, _) in &mut self.children {
            child.wait().await?;
        }
        Ok(())
    }

    /// The number of workers.
    pub(crate) fn len(&self) -> usize {
        self.children.len()
    }
}
