//! Drives an operation stream through a cache with a fixed number of operations in flight,
//! measuring latency, staleness and hits.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Notify;

use super::source::{LOADED, Source, Staleness};
use super::subject::{Counts, Subject};
use super::workload::Op;

/// What one pass over a stream measured.
pub(crate) struct Measured {
    pub(crate) reads: Histogram<u64>,
    pub(crate) writes: Histogram<u64>,
    pub(crate) stale_reads: u64,
    pub(crate) errors: u64,
    pub(crate) elapsed: Duration,
    pub(crate) counts: Counts,
    pub(crate) loads: u64,
    pub(crate) timeline: Vec<Sample>,
    /// Reads that started inside the window given to [`Run::pass`], and their errors.
    pub(crate) window_reads: Histogram<u64>,
    pub(crate) window_errors: u64,
    /// The reads that ran a load themselves (a miss's leader), apart.
    pub(crate) loaded_reads: Histogram<u64>,
}

/// Hit ratio over one sampling interval.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) t_s: f64,
    #[cfg_attr(not(feature = "plots"), allow(dead_code))]
    pub(crate) hit_ratio: f64,
    /// L2 hits in the interval.
    pub(crate) l2_hits: u64,
    /// L2 served every call of the interval ([`Subject::l2_serving`]).
    pub(crate) l2_serving: bool,
}

/// Shared by the workers of one pass.
pub(crate) struct Run {
    pub(crate) subject: Arc<Subject>,
    pub(crate) source: &'static Source,
    pub(crate) keys: &'static [String],
    pub(crate) staleness: Arc<Staleness>,
    /// The workers' tallies, allocated with the run and reused by each pass. Each holds three
    /// histograms of ~190 KB: allocated at the start of a phase, 16 to 64 of them cost a
    /// burst of page faults — in W5, four processes at once on two cores starved Redis past
    /// the L2 read timeout (hundreds of ms of page zeroing, seen with `perf`).
    spare: Mutex<Vec<Tally>>,
}

/// How operations are released.
#[derive(Clone, Copy)]
pub(crate) enum Pace {
    /// As fast as `concurrency` operations in flight allow.
    Closed { concurrency: usize },
    /// At a fixed rate, at most `concurrency` in flight (W4).
    Rate { per_second: u64, concurrency: usize },
}

impl Run {
    /// A run of up to `workers` operations in flight (its tallies allocated now).
    pub(crate) fn new(
        subject: Subject,
        source: &'static Source,
        keys: &'static [String],
        staleness: Staleness,
        workers: usize,
    ) -> Self {
        Run {
            subject: Arc::new(subject),
            source,
            keys,
            staleness: Arc::new(staleness),
            // One more: the first pass keeps one tally as its total.
            spare: Mutex::new((0..=workers).map(|_| Tally::new()).collect()),
        }
    }

    /// `n` tallies for a pass: the spare ones, and new ones if there are too few.
    fn tallies(&self, n: usize) -> Vec<Tally> {
        let mut spare = self.spare();
        let kept = spare.len().saturating_sub(n);
        let mut tallies = spare.split_off(kept);
        tallies.resize_with(n, Tally::new);
        tallies
    }

    fn spare(&self) -> std::sync::MutexGuard<'_, Vec<Tally>> {
        self.spare
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `ops` through the cache; `on_progress` is told how many ops are done, 4×/s.
    /// Reads starting within `window` (offsets from the start) are also measured apart.
    pub(crate) async fn pass(
        &self,
        ops: Arc<[Op]>,
        pace: Pace,
        window: Option<(Duration, Duration)>,
        on_progress: impl Fn(u64) + Send + 'static,
    ) -> Measured {
        let counts_before = self.subject.counts();
        let loads_before = self.source.loads();
        let done = Arc::new(AtomicU64::new(0));
        let reads = Arc::new(AtomicU64::new(0));
        let finished = Arc::new(Notify::new());
        let sampler = tokio::spawn(sample(
            self.subject.clone(),
            done.clone(),
            reads.clone(),
            finished.clone(),
            on_progress,
        ));
        let started = Instant::now();
        let next = Arc::new(AtomicUsize::new(0));
        let (concurrency, rate) = match pace {
            Pace::Closed { concurrency } => (concurrency, None),
            Pace::Rate {
                per_second,
                concurrency,
            } => (concurrency, Some(per_second)),
        };
        let workers: Vec<_> = self
            .tallies(concurrency)
            .into_iter()
            .map(|tally| {
                let worker = Worker {
                    tally,
                    subject: self.subject.clone(),
                    source: self.source,
                    keys: self.keys,
                    staleness: self.staleness.clone(),
                    ops: ops.clone(),
                    next: next.clone(),
                    done: done.clone(),
                    reads: reads.clone(),
                    started,
                    rate,
                    window,
                };
                tokio::spawn(worker.run())
            })
            .collect();
        let mut total: Option<Tally> = None;
        for w in workers {
            let Ok(t) = w.await else { continue };
            match &mut total {
                None => total = Some(t),
                Some(total) => {
                    total.merge(&t);
                    self.spare().push(t.reset());
                }
            }
        }
        let total = total.unwrap_or_else(Tally::new);
        let elapsed = started.elapsed();
        self.subject.settle().await;
        finished.notify_one();
        let timeline = sampler.await.unwrap_or_default();
        Measured {
            reads: total.reads,
            writes: total.writes,
            stale_reads: total.stale,
            errors: total.errors,
            elapsed,
            counts: self.subject.counts() - counts_before,
            loads: self.source.loads() - loads_before,
            timeline,
            window_reads: total.window_reads,
            loaded_reads: total.loaded_reads,
            window_errors: total.window_errors,
        }
    }
}

struct Worker {
    tally: Tally,
    subject: Arc<Subject>,
    source: &'static Source,
    keys: &'static [String],
    staleness: Arc<Staleness>,
    ops: Arc<[Op]>,
    next: Arc<AtomicUsize>,
    done: Arc<AtomicU64>,
    reads: Arc<AtomicU64>,
    started: Instant,
    rate: Option<u64>,
    window: Option<(Duration, Duration)>,
}

struct Tally {
    reads: Histogram<u64>,
    writes: Histogram<u64>,
    stale: u64,
    errors: u64,
    window_reads: Histogram<u64>,
    window_errors: u64,
    loaded_reads: Histogram<u64>,
}

impl Tally {
    fn new() -> Self {
        // Microseconds, 1 µs to 1 h, 3 significant digits (0 µs is recordable too).
        let hist = || {
            Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .unwrap_or_else(|_| unreachable!("these bounds are valid"))
        };
        Tally {
            reads: hist(),
            writes: hist(),
            stale: 0,
            errors: 0,
            window_reads: hist(),
            window_errors: 0,
            loaded_reads: hist(),
        }
    }

    /// Zeroed for another pass (its memory kept).
    fn reset(mut self) -> Self {
        self.reads.reset();
        self.writes.reset();
        self.window_reads.reset();
        self.loaded_reads.reset();
        (self.stale, self.errors, self.window_errors) = (0, 0, 0);
        self
    }

    fn merge(&mut self, other: &Tally) {
        // Adding auto-resizing histograms cannot fail.
        let _ = self.reads.add(&other.reads);
        let _ = self.writes.add(&other.writes);
        let _ = self.window_reads.add(&other.window_reads);
        let _ = self.loaded_reads.add(&other.loaded_reads);
        self.stale += other.stale;
        self.errors += other.errors;
        self.window_errors += other.window_errors;
    }
}

impl Worker {
    async fn run(self) -> Tally {
        let mut tally = self.tally;
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(op) = self.ops.get(i).copied() else {
                return tally;
            };
            if let Some(rate) = self.rate {
                // Operation i is due at i / rate seconds after the start.
                let due = self.started + Duration::from_secs_f64(i as f64 / rate as f64);
                tokio::time::sleep_until(due.into()).await;
            }
            let t0 = Instant::now();
            if op.write {
                let written = match self.source.write(op.key).await {
                    Ok(version) => self
                        .subject
                        .invalidate(self.keys, op.key)
                        .await
                        .map(|()| version),
                    Err(e) => Err(e.into()),
                };
                match written {
                    Ok(version) => self.staleness.commit(op.key, version),
                    Err(_) => tally.errors += 1,
                }
                tally
                    .writes
                    .saturating_record(t0.elapsed().as_micros() as u64);
            } else {
                let floor = self.staleness.floor(op.key);
                let in_window = self
                    .window
                    .is_some_and(|(from, to)| (from..to).contains(&(t0 - self.started)));
                let read = self.subject.read(self.source, self.keys, op.key);
                let (read, loaded) = LOADED
                    .scope(Cell::new(false), async {
                        (read.await, LOADED.with(Cell::get))
                    })
                    .await;
                let failed = match read {
                    Ok(version) => {
                        tally.stale += u64::from(Staleness::is_stale(floor, version));
                        false
                    }
                    Err(_) => true,
                };
                let us = t0.elapsed().as_micros() as u64;
                tally.reads.saturating_record(us);
                if loaded {
                    tally.loaded_reads.saturating_record(us);
                }
                tally.errors += u64::from(failed);
                if in_window {
                    tally.window_reads.saturating_record(us);
                    tally.window_errors += u64::from(failed);
                }
                self.reads.fetch_add(1, Ordering::Relaxed);
            }
            self.done.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Samples the hit ratio every 250 ms until the pass is over — told at once, not at the next
/// tick: a W5 process reports its share when its pass returns, and the fleet's wall time
/// (its ops/s) ended at the last report, up to 250 ms late.
async fn sample(
    subject: Arc<Subject>,
    done: Arc<AtomicU64>,
    reads: Arc<AtomicU64>,
    finished: Arc<Notify>,
    on_progress: impl Fn(u64),
) -> Vec<Sample> {
    const EVERY: Duration = Duration::from_millis(250);
    let started = Instant::now();
    let mut timeline = Vec::new();
    let (mut last_counts, mut last_reads) = (subject.counts(), 0);
    let mut tick = tokio::time::interval(EVERY);
    tick.tick().await; // the first tick is immediate: nothing to sample yet
    loop {
        // The last, partial interval is sampled too.
        let last = tokio::select! {
            _ = tick.tick() => false,
            () = finished.notified() => true,
        };
        on_progress(done.load(Ordering::Relaxed));
        let (counts, reads) = (subject.counts(), reads.load(Ordering::Relaxed));
        let d = counts - last_counts;
        let r = reads - last_reads;
        if r > 0 {
            timeline.push(Sample {
                t_s: started.elapsed().as_secs_f64(),
                hit_ratio: ((d.l1_hits + d.l2_hits + d.waited) as f64 / r as f64).min(1.0),
                l2_hits: d.l2_hits,
                l2_serving: subject.l2_serving(&d),
            });
        }
        if last {
            return timeline;
        }
        (last_counts, last_reads) = (counts, reads);
    }
}
