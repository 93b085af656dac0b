//! W2 — cold stampede: 1,000 concurrent reads of one cold key over 4 instances.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde_json::json;

use super::cost::Meter;
use super::report::Report;
use super::subject::Choice;
use super::worker::{Instance, Outcome, W2, Workers, measured};
use super::workload::Workload;
use super::{BenchArgs, BoxError, Run, Target, choices};

pub(crate) async fn run(args: &BenchArgs, target: &mut Target) -> Result<Vec<Run>, BoxError> {
    let mut runs = Vec::new();
    for &choice in choices(args.cache) {
        let probe = target.ready().await?;
        let per_instance = W2.reads / W2.instances;
        let started;
        let meter;
        let outcomes = match &target.url {
            Some(url) => {
                let mut workers = Workers::start(
                    Workload::W2,
                    choice,
                    url,
                    W2.instances,
                    false,
                    args.load_timer,
                )
                .await?;
                meter = Meter::start(probe.as_ref()).await;
                started = Instant::now();
                workers.send("go", |_| true).await?;
                let mut outcomes = Vec::new();
                for i in 0..W2.instances {
                    outcomes.push(workers.result::<Outcome>(i).await?);
                }
                outcomes
            }
            // No Redis: four independent caches that share only the embedded store.
            None => {
                let mut instances = Vec::new();
                for i in 0..W2.instances {
                    instances.push(
                        Instance::new(Workload::W2, choice, &target.l2, i, false, args.load_timer)
                            .await?,
                    );
                }
                meter = Meter::start(probe.as_ref()).await;
                started = Instant::now();
                let tasks: Vec<_> = instances
                    .into_iter()
                    .map(|inst| {
                        tokio::spawn(inst.run(per_instance, Arc::new(AtomicBool::new(false))))
                    })
                    .collect();
                let mut outcomes = Vec::new();
                for t in tasks {
                    outcomes.push(t.await?);
                }
                outcomes
            }
        };
        let mut run = from_outcomes("W2", choice, target, &W2, &outcomes, started.elapsed());
        run.report.cost = meter
            .finish(run.report.ops, workers_cpu(target, &outcomes))
            .await;
        run.report
            .extra
            .insert("load_timer".into(), json!(args.load_timer));
        run.report.extra.insert(
            "loader_calls_per_instance".into(),
            json!(outcomes.iter().map(|o| o.loader_calls).collect::<Vec<_>>()),
        );
        runs.push(run);
    }
    Ok(runs)
}

/// CPU seconds the workers' own processes used (none when the instances ran in this one,
/// whose CPU the meter counts already).
pub(crate) fn workers_cpu(target: &Target, outcomes: &[Outcome]) -> f64 {
    if target.url.is_some() {
        outcomes.iter().map(|o| o.cpu_s).sum()
    } else {
        0.0
    }
}

/// The standard figures of a multi-instance run, from its instances' outcomes.
pub(crate) fn from_outcomes(
    workload: &'static str,
    choice: Choice,
    target: &Target,
    params: &impl serde::Serialize,
    outcomes: &[Outcome],
    elapsed: Duration,
) -> Run {
    let measured = measured(outcomes.iter(), 0, elapsed);
    let mut report = Report::new(
        workload,
        choice.name(),
        target.l2.label(),
        params,
        &measured,
    );
    report.extra.insert(
        "instances".into(),
        json!(if target.url.is_some() {
            "processes"
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
