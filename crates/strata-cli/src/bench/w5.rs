//! W5 — W1 across a fleet: four cache instances in four processes sharing one Redis, the
//! operation stream dealt round them (operation i to instance i mod 4, 16 in flight each).
//! The source of truth and the staleness bookkeeping are memory the processes share
//! ([`SharedWords`]), so a read on any instance is stale when it returns a version older than
//! the newest whose invalidation, on any instance, had returned before it started.
//!
//! Protocol with each worker (`strata bench-worker w5`), a line each: the worker prints
//! `ready` once its cache is built; `warm` runs its share of the warm-up and answers `warm`;
//! `go` runs its share of the measured operations and answers with its [`Share`] as JSON.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;
use strata_redis::RedisConfig;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::cost::{Meter, cpu_during};
use super::report::Report;
use super::runner::{Measured, Pace, Run as Pass};
use super::shared::SharedWords;
use super::source::{Sleeps, Source, Staleness};
use super::subject::{Choice, L2Target, Subject};
use super::worker::{Outcome, WorkerArgs, Workers, buckets, measured};
use super::workload::{Op, Params, minimum_loads, phases};
use super::{BenchArgs, BoxError, Run, Target, choices, key_names, progress_bar};

/// Instances in the fleet.
pub(crate) const INSTANCES: usize = 4;
/// Operations in flight per instance (64 in all, as W1).
const IN_FLIGHT: usize = 16;

/// W5's parameters: W1's, and the fleet.
#[derive(Serialize)]
struct FleetParams<'a> {
    #[serde(flatten)]
    w1: &'a Params,
    instances: usize,
    in_flight_per_instance: usize,
}

/// What one instance measured of its share.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Share {
    #[serde(flatten)]
    outcome: Outcome,
    stale_reads: u64,
    reads: u64,
    /// The loads' sleeps over the share (`load_sleep_us`).
    sleeps: Sleeps,
}

pub(crate) async fn run(args: &BenchArgs, target: &mut Target) -> Result<Vec<Run>, BoxError> {
    let params = super::w1::params(args);
    let fleet = FleetParams {
        w1: &params,
        instances: INSTANCES,
        in_flight_per_instance: IN_FLIGHT,
    };
    let minimum = {
        let (warmup, measured) = phases(&params)?;
        minimum_loads(&params, &warmup, &measured)
    };
    let mut runs = Vec::new();
    for &choice in choices(args.cache) {
        let probe = target.ready().await?;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("fleet");
        let words = SharedWords::create(&path, 2 * params.n as usize)?.leak();
        let bar = progress_bar(
            params.warmup_ops + params.ops,
            args.json,
            &format!("{} W5", choice.name()),
        );
        let (shares, elapsed, cost) = match &target.url {
            Some(url) => {
                let mut fleet = start_fleet(choice, url, &path, &params).await?;
                bar.set_position(0);
                fleet.send("warm", |_| true).await?;
                fleet.expect_all("warm").await?;
                bar.set_position(params.warmup_ops);
                let meter = Meter::start(probe.as_ref()).await;
                let started = Instant::now();
                fleet.send("go", |_| true).await?;
                let mut shares = Vec::new();
                for i in 0..fleet.len() {
                    shares.push(fleet.report::<Share>(i).await?);
                }
                let elapsed = started.elapsed();
                // Their leaving and exiting are not the fleet's work: after the clock stops.
                fleet.end().await?;
                let workers: f64 = shares.iter().map(|s| s.outcome.cpu_s).sum();
                (shares, elapsed, meter.finish(params.ops, workers).await)
            }
            // No Redis: four caches in this process, sharing the embedded store and log.
            None => {
                let mut instances = Vec::new();
                for i in 0..INSTANCES {
                    let instance = Instance::new(choice, &target.l2, i, words, &params).await?;
                    instances.push(Arc::new(instance));
                }
                let warming: Vec<_> = instances
                    .iter()
                    .map(|i| {
                        let i = i.clone();
                        tokio::spawn(async move { drop(i.pass(true).await) })
                    })
                    .collect();
                for w in warming {
                    w.await?;
                }
                bar.set_position(params.warmup_ops);
                let meter = Meter::start(probe.as_ref()).await;
                let started = Instant::now();
                let tasks: Vec<_> = instances
                    .into_iter()
                    .map(|i| tokio::spawn(async move { i.share().await }))
                    .collect();
                let mut shares = Vec::new();
                for t in tasks {
                    shares.push(t.await?);
                }
                let elapsed = started.elapsed();
                (shares, elapsed, meter.finish(params.ops, 0.0).await)
            }
        };
        bar.finish_and_clear();
        let mut run = report(choice, target, &fleet, &shares, elapsed);
        run.report.cost = cost;
        run.report.with_minimum_loads(minimum);
        runs.push(run);
        drop(dir);
    }
    Ok(runs)
}

/// The fleet's figures: W1's over every instance, and each instance's hit ratios.
fn report(
    choice: Choice,
    target: &Target,
    params: &FleetParams<'_>,
    shares: &[Share],
    elapsed: Duration,
) -> Run {
    let stale_reads = shares.iter().map(|s| s.stale_reads).sum();
    let measured = measured(shares.iter().map(|s| &s.outcome), stale_reads, elapsed);
    let mut report = Report::new("W5", choice.name(), target.l2.label(), params, &measured);
    let per_instance: Vec<_> = shares
        .iter()
        .map(|s| {
            let o = &s.outcome;
            let ratio = |n: u64| n as f64 / s.reads.max(1) as f64;
            json!({
                "instance": o.instance,
                "reads": s.reads,
                "hit_ratio": {
                    "l1": ratio(o.l1_hits),
                    "l2": ratio(o.l2_hits),
                    "overall": ratio(o.l1_hits + o.l2_hits + o.waited),
                },
                "loader_calls": o.loader_calls,
                "stale_reads": s.stale_reads,
            })
        })
        .collect();
    report.extra.insert("instances".into(), json!(per_instance));
    let sleeps = shares
        .iter()
        .fold(Sleeps::default(), |a, s| a.add(&s.sleeps));
    report.extra.insert("load_sleep_us".into(), sleeps.json());
    report.extra.insert(
        "processes".into(),
        json!(if target.url.is_some() {
            "one per instance"
        } else {
            "in-process"
        }),
    );
    Run {
        report,
        latency: measured.reads.clone(),
        timeline: Vec::new(),
    }
}

/// One instance: its cache, the shared source and bookkeeping, and its share of the stream.
struct Instance {
    index: usize,
    pass: Pass,
    warmup: Arc<[Op]>,
    measured: Arc<[Op]>,
}

impl Instance {
    async fn new(
        choice: Choice,
        target: &L2Target,
        index: usize,
        words: &'static [std::sync::atomic::AtomicU64],
        params: &Params,
    ) -> Result<Instance, BoxError> {
        let subject = match choice {
            Choice::Naive => Subject::naive(target, params).await?,
            _ => Subject::strata(target, params, true).await?,
        };
        let (versions, committed) = words.split_at(params.n as usize);
        let source = Source::in_memory(
            versions,
            Duration::from_millis(params.load_ms),
            params.value_bytes,
        )
        .with_timer(params.load_timer)
        .leak();
        let (warmup, measured) = phases(params)?;
        // Operation i of the stream (warm-up first) goes to instance i mod 4.
        let deal = |ops: &[Op], offset: usize| -> Arc<[Op]> {
            ops.iter()
                .enumerate()
                .filter(|(i, _)| (i + offset) % INSTANCES == index)
                .map(|(_, op)| *op)
                .collect()
        };
        Ok(Instance {
            index,
            pass: Pass::new(
                subject,
                source,
                key_names(params.n),
                Staleness::in_memory(committed),
                IN_FLIGHT,
            ),
            warmup: deal(&warmup, 0),
            measured: deal(&measured, warmup.len()),
        })
    }

    /// Runs the warm-up share (`true`) or the measured one.
    async fn pass(&self, warmup: bool) -> Measured {
        let ops = if warmup {
            self.warmup.clone()
        } else {
            self.measured.clone()
        };
        let pace = Pace::Closed {
            concurrency: IN_FLIGHT,
        };
        self.pass.pass(ops, pace, None, |_| {}).await
    }

    /// Runs the measured share and says what it measured, its process's CPU included.
    async fn share(&self) -> Share {
        self.pass.source.take_sleeps();
        let (m, cpu_s) = cpu_during(self.pass(false)).await;
        let sleeps = self.pass.source.take_sleeps();
        Share {
            outcome: Outcome {
                instance: self.index,
                loader_calls: m.loads,
                errors: m.errors,
                l1_hits: m.counts.l1_hits,
                l2_hits: m.counts.l2_hits,
                waited: m.counts.waited,
                l2_errors: m.counts.l2_errors,
                read_us: buckets(&m.reads),
                write_us: buckets(&m.writes),
                cpu_s,
                ..Outcome::default()
            },
            stale_reads: m.stale_reads,
            reads: m.reads.len(),
            sleeps,
        }
    }
}

/// Starts the fleet's processes, each mapping the shared memory at `shared`.
async fn start_fleet(
    choice: Choice,
    redis: &str,
    shared: &std::path::Path,
    params: &Params,
) -> Result<Workers, BoxError> {
    Workers::spawn(INSTANCES, |command, i| {
        command
            .args(["w5", "--redis", redis])
            .args(["--cache", choice.name(), "--instance", &i.to_string()])
            .arg("--shared")
            .arg(shared)
            .args(["--ops", &params.ops.to_string()])
            .args(["--warmup", &params.warmup_ops.to_string()])
            .args(["--load-timer", params.load_timer.name()]);
    })
    .await
}

/// `strata bench-worker w5`: one instance of the fleet in its own process.
pub(crate) async fn worker(args: &WorkerArgs) -> Result<ExitCode, BoxError> {
    let target = L2Target::Redis(Box::new(RedisConfig::from_url(&args.redis)?));
    let mut params = Params::w1();
    (params.ops, params.warmup_ops) = (args.ops.unwrap_or(params.ops), args.warmup.unwrap_or(0));
    params.load_timer = args.load_timer;
    let shared = args.shared.as_deref().ok_or("W5 workers need --shared")?;
    let words = SharedWords::open(shared)?.leak();
    if words.len() != 2 * params.n as usize {
        return Err(format!("{}: not a W5 fleet's memory", shared.display()).into());
    }
    let instance = Instance::new(args.cache, &target, args.instance, words, &params).await?;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    let mut say = async |line: String| -> Result<(), BoxError> {
        stdout.write_all(format!("{line}\n").as_bytes()).await?;
        stdout.flush().await?;
        Ok(())
    };
    say("ready".into()).await?;
    while let Some(line) = stdin.next_line().await? {
        match line.trim() {
            "warm" => {
                instance.pass(true).await;
                say("warm".into()).await?;
            }
            "go" => {
                let share = instance.share().await;
                // Reported first: the fleet's wall time ends with its last share, and leaving
                // is not part of the work measured.
                say(serde_json::to_string(&share)?).await?;
                instance.pass.subject.leave().await;
                return Ok(ExitCode::SUCCESS);
            }
            other => return Err(format!("unexpected {other:?} from the coordinator").into()),
        }
    }
    Err("the coordinator went away".into())
}
