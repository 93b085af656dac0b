//! W3 — invalidation fan-out: one instance writes and invalidates a key 1,000 times, 10 ms
//! apart; the others hold it in L1. Figure: how long after `invalidate` returned each other
//! instance stopped serving the old version.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use super::cost::Meter;
use super::report::Latency;
use super::subject::Choice;
use super::timer::LoadTimer;
use super::worker::{Instance, Outcome, W3, Workers, histogram};
use super::workload::Workload;
use super::{BenchArgs, BoxError, Run, Target, choices};

/// Past this, an instance "kept serving" the old version.
const LIMIT_US: u64 = 1_000_000;

pub(crate) async fn run(args: &BenchArgs, target: &mut Target) -> Result<Vec<Run>, BoxError> {
    let mut runs = Vec::new();
    for &choice in choices(args.cache) {
        let probe = target.ready().await?;
        let meter = Meter::start(probe.as_ref()).await;
        let started = Instant::now();
        let outcomes = match &target.url {
            Some(url) => {
                let mut workers = Workers::start(
                    Workload::W3,
                    choice,
                    url,
                    W3.instances,
                    args.foreign,
                    LoadTimer::default(),
                )
                .await?;
                workers.send("go", |_| true).await?;
                let writer = workers.result::<Outcome>(0).await?;
                // Give readers a moment past the last write to see it, then stop them.
                tokio::time::sleep(Duration::from_millis(200)).await;
                workers.send("stop", |i| i > 0).await?;
                let mut outcomes = vec![writer];
                for i in 1..W3.instances {
                    outcomes.push(workers.result::<Outcome>(i).await?);
                }
                outcomes
            }
            None => in_process(choice, target, args.foreign).await?,
        };
        let mut run = report(choice, target, &outcomes, started.elapsed());
        if args.foreign {
            // Written outside Strata (a plain `DEL`), seen through tracking.
            run.report.extra.insert("foreign".into(), json!(true));
        }
        run.report.cost = meter
            .finish(run.report.ops, super::w2::workers_cpu(target, &outcomes))
            .await;
        runs.push(run);
    }
    Ok(runs)
}

/// Without Redis: four caches sharing the embedded store and the in-process log.
async fn in_process(
    choice: Choice,
    target: &Target,
    foreign: bool,
) -> Result<Vec<Outcome>, BoxError> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..W3.instances {
        let instance = Instance::new(
            Workload::W3,
            choice,
            &target.l2,
            i,
            foreign,
            LoadTimer::default(),
        )
        .await?;
        tasks.push(tokio::spawn(instance.run(0, stop.clone())));
    }
    let mut tasks = tasks.into_iter();
    let writer = match tasks.next() {
        Some(t) => t.await?,
        None => Outcome::default(),
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let mut outcomes = vec![writer];
    for t in tasks {
        outcomes.push(t.await?);
    }
    Ok(outcomes)
}

/// Propagation delays, µs, one per (reader, write); `None` where the reader never stopped
/// serving the old version.
pub(crate) fn propagation(commits: &[(u64, u64)], readers: &[&[(u64, u64)]]) -> Vec<Option<u64>> {
    let mut delays = Vec::new();
    for seen in readers {
        for &(version, returned_at) in commits {
            // The first moment this reader returned this version or a newer one.
            let stopped = seen
                .iter()
                .filter(|(v, _)| *v >= version)
                .map(|(_, t)| *t)
                .min();
            delays.push(stopped.map(|t| t.saturating_sub(returned_at)));
        }
    }
    delays
}

fn report(choice: Choice, target: &Target, outcomes: &[Outcome], elapsed: Duration) -> Run {
    let (writer, readers) = outcomes
        .split_first()
        .map_or((None, &[][..]), |(w, r)| (Some(w), r));
    let commits = writer.map_or(&[][..], |w| &w.commits[..]);
    let seen: Vec<&[(u64, u64)]> = readers.iter().map(|r| &r.seen[..]).collect();
    let delays = propagation(commits, &seen);
    let mut prop = histogram();
    for d in delays.iter().flatten() {
        prop.saturating_record(*d);
    }
    let late = delays
        .iter()
        .filter(|d| d.is_none_or(|d| d > LIMIT_US))
        .count();
    let late_instances: Vec<usize> = readers
        .iter()
        .zip(delays.chunks(commits.len().max(1)))
        .filter(|(_, ds)| ds.iter().any(|d| d.is_none_or(|d| d > LIMIT_US)))
        .map(|(r, _)| r.instance)
        .collect();
    let mut run = super::w2::from_outcomes("W3", choice, target, &W3, outcomes, elapsed);
    let report = &mut run.report;

    report
        .extra
        .insert("propagation_us".into(), json!(Latency::of(&prop)));
    report
        .extra
        .insert("propagations_over_1s".into(), json!(late));
    report.extra.insert(
        "instances_serving_old_over_1s".into(),
        json!(late_instances),
    );
    run.latency = prop;
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propagation_is_measured_from_the_return_to_the_first_newer_read() {
        let commits = [(1, 1_000), (2, 2_000), (3, 3_000)];
        // Reader a saw 1 at +150 µs, skipped 2 (saw 3 at 3,100): for 2, it stopped serving the
        // old version when it first returned 3. Reader b saw 1 before the invalidation
        // returned (0), and never saw 3.
        let a = [(1, 1_150), (3, 3_100)];
        let b = [(1, 900), (2, 2_500)];
        let d = propagation(&commits, &[&a, &b]);
        assert_eq!(
            d,
            [Some(150), Some(1_100), Some(100), Some(0), Some(500), None]
        );
    }
}
