//! What the responses of one phase added up to: latencies, cache verdicts, statuses, a
//! timeline per second, and the watch for a flood of failures.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use hdrhistogram::Histogram;

use super::verdict::Cache;

/// How one request ended.
#[derive(Debug, Clone)]
pub(crate) enum Ending {
    /// An HTTP response: status, the cache's verdict, and whether the read was stale.
    Answered {
        status: u16,
        cache: Cache,
        stale: bool,
    },
    /// No response: `timeout`, `connect`, `io`, with the error's words.
    Failed { kind: &'static str, detail: String },
}

impl Ending {
    fn failed(&self) -> bool {
        match self {
            Ending::Answered { status, .. } => *status >= 400,
            Ending::Failed { .. } => true,
        }
    }

    /// `200`, `503`, `timeout`: how the status table names it.
    fn label(&self) -> String {
        match self {
            Ending::Answered { status, .. } => status.to_string(),
            Ending::Failed { kind, .. } => (*kind).to_owned(),
        }
    }
}

/// One finished request.
pub(crate) struct Outcome {
    pub(crate) write: bool,
    /// Microseconds from when it was meant to start (open loop) or was sent (closed loop).
    pub(crate) latency_us: u64,
    pub(crate) done: Instant,
    pub(crate) ending: Ending,
    /// The request, for the early-stop message: `GET http://…/products/7`.
    pub(crate) request: String,
}

/// Counts of one second of the run.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Second {
    pub(crate) requests: u64,
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    pub(crate) errors: u64,
}

/// How many of the latest responses the flood watch looks at, and the share of them failing
/// that stops the run: a service answering most requests with errors measures nothing.
const WINDOW: usize = 200;
const FLOOD: usize = WINDOW / 2;

/// The sums of one phase.
pub(crate) struct Tally {
    started: Instant,
    pub(crate) reads: Histogram<u64>,
    pub(crate) writes: Histogram<u64>,
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    pub(crate) unclassified: u64,
    pub(crate) errors: u64,
    pub(crate) stale_reads: u64,
    pub(crate) statuses: BTreeMap<String, u64>,
    pub(crate) timeline: Vec<Second>,
    recent: VecDeque<bool>,
    recent_failed: usize,
    /// Why the run stopped early, once it should.
    pub(crate) flood: Option<String>,
    first_failure: Option<String>,
}

impl Tally {
    pub(crate) fn new(started: Instant) -> Tally {
        let histogram = || {
            // 1 µs to 10 min at 3 significant digits: a stalled service is measured too.
            Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
        };
        Tally {
            started,
            reads: histogram(),
            writes: histogram(),
            hits: 0,
            misses: 0,
            unclassified: 0,
            errors: 0,
            stale_reads: 0,
            statuses: BTreeMap::new(),
            timeline: Vec::new(),
            recent: VecDeque::with_capacity(WINDOW),
            recent_failed: 0,
            flood: None,
            first_failure: None,
        }
    }

    /// Requests counted so far.
    pub(crate) fn requests(&self) -> u64 {
        self.reads.len() + self.writes.len()
    }

    /// Hits among the reads a header classified; `None` before any.
    pub(crate) fn hit_ratio(&self) -> Option<f64> {
        let classified = self.hits + self.misses;
        (classified > 0).then(|| self.hits as f64 / classified as f64)
    }

    pub(crate) fn record(&mut self, o: Outcome) {
        let latency = o.latency_us.clamp(1, 600_000_000);
        let second = usize::try_from(o.done.saturating_duration_since(self.started).as_secs())
            .unwrap_or(usize::MAX)
            .min(86_400);
        if self.timeline.len() <= second {
            self.timeline.resize(second + 1, Second::default());
        }
        let slot = &mut self.timeline[second];
        slot.requests += 1;
        let failed = o.ending.failed();
        *self.statuses.entry(o.ending.label()).or_default() += 1;
        if failed {
            self.errors += 1;
            slot.errors += 1;
            if self.first_failure.is_none() {
                let why = match &o.ending {
                    Ending::Failed { detail, .. } => detail.clone(),
                    Ending::Answered { status, .. } => format!("HTTP {status}"),
                };
                self.first_failure = Some(format!("{why} on {}", o.request));
            }
        }
        if o.write {
            let _ = self.writes.record(latency);
        } else {
            let _ = self.reads.record(latency);
            if let Ending::Answered { cache, stale, .. } = o.ending {
                match cache {
                    Cache::Hit => {
                        self.hits += 1;
                        slot.hits += 1;
                    }
                    Cache::Miss => {
                        self.misses += 1;
                        slot.misses += 1;
                    }
                    Cache::Unknown => self.unclassified += 1,
                }
                self.stale_reads += u64::from(stale);
            }
        }
        self.watch(failed);
    }

    fn watch(&mut self, failed: bool) {
        if self.recent.len() == WINDOW && self.recent.pop_front() == Some(true) {
            self.recent_failed -= 1;
        }
        self.recent.push_back(failed);
        self.recent_failed += usize::from(failed);
        if self.flood.is_none() && self.recent.len() == WINDOW && self.recent_failed >= FLOOD {
            let kinds: Vec<String> = self
                .statuses
                .iter()
                .filter(|(label, _)| label.parse::<u16>().map_or(true, |s| s >= 400))
                .map(|(label, n)| format!("{label} ×{n}"))
                .collect();
            self.flood = Some(format!(
                "{} of the last {WINDOW} requests failed ({} so far); the first: {}",
                self.recent_failed,
                kinds.join(", "),
                self.first_failure.as_deref().unwrap_or("?")
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(at: Instant, write: bool, ending: Ending) -> Outcome {
        Outcome {
            write,
            latency_us: 100,
            done: at,
            ending,
            request: "GET http://h/products/1".into(),
        }
    }

    #[test]
    fn responses_add_up() {
        let start = Instant::now();
        let mut t = Tally::new(start);
        let answered = |status, cache, stale| Ending::Answered {
            status,
            cache,
            stale,
        };
        t.record(outcome(start, false, answered(200, Cache::Hit, false)));
        t.record(outcome(start, false, answered(200, Cache::Miss, true)));
        t.record(outcome(start, false, answered(200, Cache::Unknown, false)));
        t.record(outcome(
            start + std::time::Duration::from_millis(1500),
            true,
            answered(503, Cache::Unknown, false),
        ));
        assert_eq!(t.requests(), 4);
        assert_eq!((t.hits, t.misses, t.unclassified), (1, 1, 1));
        assert_eq!(t.hit_ratio(), Some(0.5));
        assert_eq!((t.errors, t.stale_reads), (1, 1));
        assert_eq!(t.statuses.get("503"), Some(&1));
        assert_eq!(t.timeline.len(), 2);
        assert_eq!(t.timeline[1].errors, 1);
        assert!(t.flood.is_none());
    }

    #[test]
    fn a_flood_of_failures_says_why() {
        let start = Instant::now();
        let mut t = Tally::new(start);
        for i in 0..WINDOW {
            let ending = if i % 4 == 0 {
                Ending::Answered {
                    status: 200,
                    cache: Cache::Hit,
                    stale: false,
                }
            } else {
                Ending::Failed {
                    kind: "connect",
                    detail: "connection refused".into(),
                }
            };
            t.record(outcome(start, false, ending));
        }
        let why = t.flood.expect("stopped");
        assert!(why.starts_with("150 of the last 200"), "{why}");
        assert!(why.contains("connect ×150"), "{why}");
        assert!(
            why.contains("connection refused on GET http://h/products/1"),
            "{why}"
        );
    }
}
