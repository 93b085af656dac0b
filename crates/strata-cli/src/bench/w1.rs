//! W1 — read-heavy, hot set fits in L1.

use std::time::Duration;

use super::runner::{Pace, Run as Pass};
use super::source::{Source, Staleness};
use super::subject::{Choice, Subject};
use super::workload::{Params, minimum_loads, phases};
use super::{BenchArgs, BoxError, Run, Target, choices, key_names, progress_bar};
use crate::bench::cost::Meter;
use crate::bench::report::{Latency, Report};

/// W1's parameters, with `--ops` and `--warmup` applied.
pub(crate) fn params(args: &BenchArgs) -> Params {
    let mut p = Params::w1();
    if let Some(ops) = args.ops {
        p.ops = ops;
        p.warmup_ops = ops / 10;
    }
    if let Some(w) = args.warmup {
        p.warmup_ops = w;
    }
    p.track_foreign_writes = args.track_foreign_writes;
    p.load_timer = args.load_timer;
    p
}

pub(crate) async fn run(args: &BenchArgs, target: &mut Target) -> Result<Vec<Run>, BoxError> {
    let params = params(args);
    let (warmup, measured) = phases(&params)?;
    let minimum = minimum_loads(&params, &warmup, &measured);
    let keys = key_names(params.n);
    let mut runs = Vec::new();
    for &choice in choices(args.cache) {
        let probe = target.ready().await?;
        let pass = prepare(choice, &params, target, keys).await?;
        let pace = Pace::Closed {
            concurrency: params.concurrency,
        };
        let bar = progress_bar(
            params.warmup_ops + params.ops,
            args.json,
            &format!("{} W1", pass.subject.name()),
        );
        let b = bar.clone();
        pass.pass(warmup.clone(), pace, None, move |done| b.set_position(done))
            .await;
        let b = bar.clone();
        let base = params.warmup_ops;
        pass.source.take_sleeps();
        let meter = Meter::start(probe.as_ref()).await;
        let m = pass
            .pass(measured.clone(), pace, None, move |done| {
                b.set_position(base + done);
            })
            .await;
        let cost = meter.finish(params.ops, 0.0).await;
        let sleeps = pass.source.take_sleeps();
        bar.finish_and_clear();
        let mut report = Report::new("W1", pass.subject.name(), target.l2.label(), &params, &m);
        report.cost = cost;
        report.with_minimum_loads(minimum);
        // The misses' leaders apart: where the tail comes from.
        report.extra.insert(
            "read_us_loaded".into(),
            serde_json::json!(Latency::of(&m.loaded_reads)),
        );
        // What the workload's 1 ms load sleep really took under this cache (see `Source::load`).
        report.extra.insert("load_sleep_us".into(), sleeps.json());
        runs.push(Run {
            report,
            latency: m.reads,
            timeline: m.timeline,
        });
    }
    Ok(runs)
}

/// A cold subject with a fresh source of truth, on an L2 the caller readied ([`Target::ready`]).
pub(crate) async fn prepare(
    choice: Choice,
    params: &Params,
    target: &Target,
    keys: &'static [String],
) -> Result<Pass, BoxError> {
    let subject = match choice {
        Choice::Naive => Subject::naive(&target.l2, params).await?,
        _ => Subject::strata(&target.l2, params, false).await?,
    };
    let source = Source::new(
        params.n,
        Duration::from_millis(params.load_ms),
        params.value_bytes,
    )
    .with_timer(params.load_timer)
    .leak();
    Ok(Pass::new(
        subject,
        source,
        keys,
        Staleness::new(params.n),
        params.concurrency,
    ))
}
