//! `strata bench`: the reference workloads of `WORKLOADS.md`, run against Strata and a
//! hand-written cache-aside baseline, with figures, plots and CI gates.

mod cost;
mod report;
mod runner;
mod shared;
mod source;
mod subject;
mod timer;
mod w1;
mod w2;
mod w3;
mod w4;
mod w5;
pub(crate) mod worker;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;

use strata::{MemoryLog, MemoryStore};
use strata_local::LocalRedis;
use strata_redis::RedisConfig;

use crate::gate;

use report::Report;
use subject::{Choice, L2Target, Subject};
use workload::Workload;

pub(crate) use crate::BoxError;
pub(crate) use report::Latency;

/// `strata bench` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// The workload.
    #[arg(value_enum)]
    workload: Workload,
    /// Redis to run against. Without it, the bench starts its own `redis-server` from PATH on a
    /// free loopback port, or, if there is none, uses the embedded in-memory L2 (labelled).
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Which cache to measure; `both` runs the two on the same stream, each on a server started
    /// fresh for it (or, with `--redis`, on the given one, emptied).
    #[arg(long, value_enum, default_value = "strata")]
    cache: Choice,
    /// Print one JSON object per run instead of the table.
    #[arg(long)]
    json: bool,
    /// Measured operations (W1, W5; default 1,000,000). Warm-up defaults to a tenth of it.
    #[arg(long)]
    ops: Option<u64>,
    /// Warm-up operations before measuring (W1, W4, W5; default 100,000).
    #[arg(long)]
    warmup: Option<u64>,
    /// How W4 takes Redis away: `kill` (SIGKILL, then a restart, empty) or `freeze`
    /// (SIGSTOP, then SIGCONT: connections stay open and nothing answers — a hung server).
    #[arg(long, value_enum, default_value = "kill")]
    fault: w4::Fault,
    /// W1: Strata tracks writes made outside it (`track_foreign_writes`: Redis reports every
    /// write to the namespace's keys), to measure what that costs.
    #[arg(long)]
    track_foreign_writes: bool,
    /// W3: the writer deletes the key with a plain `DEL` (a writer outside Strata), and
    /// Strata's readers track foreign writes: how long until none serves the old version.
    #[arg(long)]
    foreign: bool,
    /// W1, W5: write the operation stream (warm-up, then measured) to this file instead of
    /// running it, for the Python client's bench (`python -m strata_cache.bench FILE`) to ask
    /// the same keys in the same order.
    #[arg(long, value_name = "FILE")]
    stream_out: Option<PathBuf>,
    /// What times the source's loads: `thread` (a timer thread: a load takes `LOAD_MS`, as a
    /// database's answer would) or `tokio` (`tokio::time::sleep`: millisecond ticks, late
    /// in an idle runtime, so later for the cache that leaves its runtime idler).
    #[arg(long, value_enum, default_value = "thread")]
    load_timer: timer::LoadTimer,
    /// Write plots (SVG and PNG) into this directory.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// A CI gate, e.g. 'hit_ratio>=0.85', 'p95_ms<=150', 'stale_reads==0'; repeatable. Checked
    /// against the Strata run; exit code 1 if any fails.
    #[arg(long = "gate", value_name = "EXPR")]
    gates: Vec<String>,
}

/// Where L2 lives, and the server the bench started, if any.
pub(crate) struct Target {
    pub(crate) l2: L2Target,
    pub(crate) url: Option<String>,
    pub(crate) server: Option<LocalRedis>,
    /// Whether a run has used L2 yet (see [`Target::ready`]).
    used: bool,
}

impl Target {
    async fn resolve(url: Option<&str>, quiet: bool) -> Result<Target, BoxError> {
        if let Some(url) = url {
            return Ok(Target {
                l2: L2Target::Redis(Box::new(RedisConfig::from_url(url)?)),
                url: Some(url.to_owned()),
                server: None,
                used: false,
            });
        }
        match LocalRedis::start() {
            Ok(server) => {
                let url = server.url();
                if !quiet {
                    eprintln!("started redis-server on {url}");
                }
                Ok(Target {
                    l2: L2Target::Redis(Box::new(RedisConfig::from_url(&url)?)),
                    url: Some(url),
                    server: Some(server),
                    used: false,
                })
            }
            Err(e) => {
                // Naive cache-aside against a map in its own process pays no round trip: it
                // is an L1 of its own, and a comparison with it says nothing of a fleet.
                eprintln!(
                    "no Redis ({e}); running with the embedded in-memory L2 (reported as l2=\"embedded\"): \
                     naive cache-aside against it makes no round trip, so the comparison with it is \
                     not the reference one (BENCHMARKS.md: a real redis-server)"
                );
                Ok(Target {
                    l2: L2Target::Embedded(MemoryStore::default(), MemoryLog::new()),
                    url: None,
                    server: None,
                    used: false,
                })
            }
        }
    }
}

impl Target {
    /// Readies L2 for a run, and returns a connection to ask its server what the run cost.
    ///
    /// L2 is emptied of both subjects' keys; a server the bench started is, after the first
    /// run, started again: `WORKLOADS.md` runs each on a `redis-server` "started fresh for
    /// the run", and one that has held another run's keys answers the next for less (its
    /// allocator's memory is mapped already: ~30k fewer page faults and ~3 % less server CPU
    /// for the same W1 run, measured), which would favour whichever cache runs second. A
    /// server given by `--redis` is only emptied.
    pub(crate) async fn ready(
        &mut self,
    ) -> Result<Option<strata_redis::RedisConnection>, BoxError> {
        if let (true, Some(server)) = (self.used, &mut self.server) {
            // Waits until the new process answers: a moment between runs, nothing measured.
            tokio::task::block_in_place(|| server.restart())?;
        }
        self.used = true;
        Subject::flush(&self.l2).await?;
        Ok(self.cost_probe().await)
    }

    /// A connection to ask the Redis server for its CPU time and command counts: on one
    /// server (a cluster's nodes would each need asking), none for the embedded L2.
    async fn cost_probe(&self) -> Option<strata_redis::RedisConnection> {
        match &self.l2 {
            L2Target::Redis(config) if !config.is_cluster() => config.connect().await.ok(),
            _ => None,
        }
    }
}

/// A finished run: its report and what the plots need.
pub(crate) struct Run {
    pub(crate) report: Report,
    pub(crate) latency: hdrhistogram::Histogram<u64>,
    // Sampled whatever the build; only the plots draw it.
    #[cfg_attr(not(feature = "plots"), allow(dead_code))]
    pub(crate) timeline: Vec<runner::Sample>,
}

pub(crate) async fn run(args: BenchArgs) -> Result<ExitCode, BoxError> {
    // Bad gates are reported before minutes of benchmarking, not after.
    let gates = gate::parse_all(&args.gates)?;
    if let Some(path) = &args.stream_out {
        return write_stream(&args, path);
    }
    let mut target = Target::resolve(args.redis.as_deref(), args.json).await?;
    let runs = match args.workload {
        Workload::W1 => w1::run(&args, &mut target).await?,
        Workload::W2 => w2::run(&args, &mut target).await?,
        Workload::W3 => w3::run(&args, &mut target).await?,
        Workload::W4 => w4::run(&args, &mut target).await?,
        Workload::W5 => w5::run(&args, &mut target).await?,
    };
    let mut reports: Vec<Report> = runs.iter().map(|r| r.report.clone()).collect();
    report::compare(&mut reports);
    if args.json {
        for r in &reports {
            println!("{}", r.json());
        }
    } else {
        print!("{}", report::table(&reports));
    }
    if let Some(dir) = &args.out {
        draw(dir, args.workload.name(), &runs);
    }
    let gated: Vec<&Report> = reports.iter().filter(|r| r.cache == "strata").collect();
    Ok(if gate::any_failed(&gates, &gated) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `--stream-out`: W1's (and W5's) operations with `--ops` and `--warmup` applied, to `path`.
fn write_stream(args: &BenchArgs, path: &std::path::Path) -> Result<ExitCode, BoxError> {
    if !matches!(args.workload, Workload::W1 | Workload::W5) {
        return Err("--stream-out writes W1's stream (W5 runs the same): use w1".into());
    }
    let params = w1::params(args);
    let (warmup, measured) = workload::phases(&params)?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    workload::write_stream(&warmup, &measured, &mut out)?;
    eprintln!(
        "{}: {} warm-up and {} measured operations of W1",
        path.display(),
        warmup.len(),
        measured.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// `strata bench-worker`: one instance of a multi-process workload, in its own process.
pub(crate) async fn worker(args: worker::WorkerArgs) -> Result<ExitCode, BoxError> {
    match args.workload {
        Workload::W5 => w5::worker(&args).await,
        _ => worker::run(args).await,
    }
}

/// The subjects `--cache` asks for, in the order they run.
fn choices(choice: Choice) -> &'static [Choice] {
    match choice {
        Choice::Strata => &[Choice::Strata],
        Choice::Naive => &[Choice::Naive],
        Choice::Both => &[Choice::Strata, Choice::Naive],
    }
}

/// Key names `product:<i>`, built once and borrowed by every operation.
fn key_names(n: u64) -> &'static [String] {
    Box::leak(
        (0..n)
            .map(|i| format!("product:{i}"))
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    )
}

fn progress_bar(len: u64, quiet: bool, what: &str) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg:>16} [{bar:40}] {pos}/{len} ops ({per_sec}, {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

/// Writes the plots of `runs` into `dir`: read latency by percentile, hit ratio over time.
#[cfg(feature = "plots")]
fn draw(dir: &std::path::Path, workload: &str, runs: &[Run]) {
    use crate::plot::{Chart, Kind};
    let charts = [
        Chart {
            file: "latency",
            title: format!("{workload}: read latency by percentile"),
            kind: Kind::Latency(runs.iter().map(|r| (r.report.cache, &r.latency)).collect()),
        },
        Chart {
            file: "hit_ratio",
            title: format!("{workload}: hit ratio over time"),
            kind: Kind::OverTime {
                y_desc: "hit ratio",
                unit: true,
                series: runs
                    .iter()
                    .map(|r| {
                        let points = r.timeline.iter().map(|p| (p.t_s, p.hit_ratio));
                        (r.report.cache, points.collect())
                    })
                    .collect(),
            },
        },
    ];
    crate::plot::report(crate::plot::draw(dir, workload, &charts));
}

/// Without the `plots` feature, says so instead of drawing.
#[cfg(not(feature = "plots"))]
fn draw(_dir: &std::path::Path, _workload: &str, _runs: &[Run]) {
    eprintln!("plots: this `strata` was built without them (cargo feature `plots`)");
}
