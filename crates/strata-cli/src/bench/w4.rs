//! W4 — Redis outage: W1 at 500 operations/s for 30 s; Redis is SIGKILLed at 10 s and started
//! again at 20 s (or, with `--fault freeze`, SIGSTOPped and SIGCONTed). Figures: errors
//! returned to callers, p99 during the outage, seconds from the restart until L2 hits are seen
//! again, stale reads.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use super::cost::Meter;
use super::report::{Latency, Report};
use super::runner::Pace;
use super::subject::Subject;
use super::workload::{Params, phases};
use super::{BenchArgs, BoxError, Run, Target, choices, key_names, progress_bar, w1};

const RATE: u64 = 500;
const DURATION: Duration = Duration::from_secs(30);
const KILL_AT: Duration = Duration::from_secs(10);
const RESTART_AT: Duration = Duration::from_secs(20);

/// How Redis is taken away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Fault {
    /// SIGKILL, then a restart (empty: no persistence).
    Kill,
    /// SIGSTOP, then SIGCONT: a hung server, data kept.
    Freeze,
}

#[derive(Serialize)]
struct OutageParams<'a> {
    #[serde(flatten)]
    w1: &'a Params,
    rate_per_s: u64,
    duration_s: u64,
    fault: Fault,
    kill_at_s: u64,
    restart_at_s: u64,
}

pub(crate) async fn run(args: &BenchArgs, target: &mut Target) -> Result<Vec<Run>, BoxError> {
    let server = target.server.take().ok_or(
        "W4 kills and restarts Redis, so it needs the bench to start its own: run it without \
         --redis, with redis-server on PATH",
    )?;
    let server = Arc::new(Mutex::new(server));
    let mut params = w1::params(args);
    params.ops = RATE * DURATION.as_secs();
    let outage = OutageParams {
        w1: &params,
        rate_per_s: RATE,
        duration_s: DURATION.as_secs(),
        fault: args.fault,
        kill_at_s: KILL_AT.as_secs(),
        restart_at_s: RESTART_AT.as_secs(),
    };
    let (warmup, measured) = phases(&params)?;
    let keys = key_names(params.n);
    let mut runs = Vec::new();
    for &choice in choices(args.cache) {
        // The server is W4's to kill and restart (taken out above): only emptied here, and
        // W4 asks it for no cost figures (it is killed mid-run).
        Subject::flush(&target.l2).await?;
        let pass = w1::prepare(choice, &params, target, keys).await?;
        let closed = Pace::Closed {
            concurrency: params.concurrency,
        };
        pass.pass(warmup.clone(), closed, None, |_| {}).await;

        let bar = progress_bar(
            params.ops,
            args.json,
            &format!("{} W4", pass.subject.name()),
        );
        let b = bar.clone();
        let chaos = tokio::spawn(chaos(server.clone(), args.fault, Instant::now()));
        let paced = Pace::Rate {
            per_second: RATE,
            concurrency: params.concurrency,
        };
        // Redis is restarted mid-phase and its counters with it: only our CPU is comparable.
        let meter = Meter::start(None).await;
        let m = pass
            .pass(
                measured.clone(),
                paced,
                Some((KILL_AT, RESTART_AT)),
                move |done| b.set_position(done),
            )
            .await;
        let cost = meter.finish(params.ops, 0.0).await;
        bar.finish_and_clear();
        chaos.await??;

        let recovered_after = m
            .timeline
            .iter()
            .find(|s| s.t_s >= RESTART_AT.as_secs_f64() && s.l2_hits > 0)
            .map(|s| s.t_s - RESTART_AT.as_secs_f64());
        let serving_after = m
            .timeline
            .iter()
            .find(|s| s.t_s >= RESTART_AT.as_secs_f64() && s.l2_serving)
            .map(|s| s.t_s - RESTART_AT.as_secs_f64());
        let mut report = Report::new("W4", pass.subject.name(), target.l2.label(), &outage, &m);
        report.cost = cost;
        report.extra.insert(
            "outage".into(),
            json!({
                "errors": m.window_errors,
                "read_us": Latency::of(&m.window_reads),
                "l2_hits_again_after_s": recovered_after,
                "l2_serving_again_after_s": serving_after,
            }),
        );
        runs.push(Run {
            report,
            latency: m.reads,
            timeline: m.timeline,
        });
    }
    target.server = Arc::try_unwrap(server)
        .ok()
        .and_then(|m| m.into_inner().ok());
    Ok(runs)
}

/// Takes Redis away at `KILL_AT` after `start` and brings it back at `RESTART_AT`.
async fn chaos(
    server: Arc<Mutex<strata_local::LocalRedis>>,
    fault: Fault,
    start: Instant,
) -> Result<(), BoxError> {
    for (at, away) in [(KILL_AT, true), (RESTART_AT, false)] {
        tokio::time::sleep_until((start + at).into()).await;
        let server = server.clone();
        tokio::task::spawn_blocking(move || {
            let mut s = server
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match (fault, away) {
                (Fault::Kill, true) => {
                    s.kill();
                    Ok(())
                }
                (Fault::Kill, false) => s.restart(),
                (Fault::Freeze, true) => s.freeze(),
                (Fault::Freeze, false) => s.thaw(),
            }
        })
        .await??;
    }
    Ok(())
}
