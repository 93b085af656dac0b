//! The figures of a `strata load` run: the JSON object (schema `strata-load/1`, documented in
//! `docs/load.md`) and the human table.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::counted::Counted;
use super::drive::Mode;
use super::tally::{Second, Tally};
use crate::bench::Latency;
use crate::gate::Gated;

/// The schema's name and version; a field's meaning never changes under one version.
pub(crate) const SCHEMA: &str = "strata-load/1";

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) schema: &'static str,
    /// `open` (constant arrival rate) or `closed` (`concurrency` clients).
    pub(crate) mode: &'static str,
    /// The arrival rate asked for (open loop), requests per second.
    pub(crate) rate: Option<f64>,
    /// Clients (closed loop).
    pub(crate) concurrency: Option<usize>,
    /// What the run was asked to do.
    pub(crate) params: Value,
    pub(crate) requests: u64,
    pub(crate) reads: u64,
    pub(crate) writes: u64,
    pub(crate) elapsed_s: f64,
    /// Requests answered (or failed) per second over the measured phase.
    pub(crate) throughput: f64,
    /// Read latency, µs: from when a request was due (open loop) or sent (closed loop) to its
    /// response's last byte.
    pub(crate) latency_us: Latency,
    pub(crate) write_latency_us: Latency,
    /// Responses with status ≥ 400, and requests without a response.
    pub(crate) errors: u64,
    /// Count per status (`"200"`) or failure (`"timeout"`, `"connect"`, `"io"`).
    pub(crate) statuses: BTreeMap<String, u64>,
    /// Reads a header (`Cache-Status`, `X-Cache`, `Age`) called hits, misses, or neither.
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    pub(crate) unclassified: u64,
    /// `hits / (hits + misses)`; `null` when no response said.
    pub(crate) hit_ratio: Option<f64>,
    /// With `--redis`: the services' own counters over the measured phase.
    pub(crate) counted: Option<Counted>,
    /// With `--version-field`: reads older than a write acknowledged before they were sent.
    pub(crate) stale_reads: Option<u64>,
    /// Why the run stopped before its end, if it did.
    pub(crate) stopped_early: Option<String>,
    /// One entry per second of the measured phase.
    pub(crate) timeline: Vec<TimelinePoint>,
}

/// One second of the run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TimelinePoint {
    /// Seconds since the measured phase began (the end of this second).
    pub(crate) t_s: f64,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) hit_ratio: Option<f64>,
}

impl Report {
    /// The report of a finished phase.
    pub(crate) fn new(
        mode: Mode,
        params: Value,
        tally: &Tally,
        elapsed_s: f64,
        counted: Option<Counted>,
        checks_staleness: bool,
        stopped_early: Option<String>,
    ) -> Report {
        let requests = tally.requests();
        let (mode, rate, concurrency) = match mode {
            Mode::Open { rate, .. } => ("open", Some(rate), None),
            Mode::Closed { clients } => ("closed", None, Some(clients)),
        };
        Report {
            schema: SCHEMA,
            mode,
            rate,
            concurrency,
            params,
            requests,
            reads: tally.reads.len(),
            writes: tally.writes.len(),
            elapsed_s,
            throughput: if elapsed_s > 0.0 {
                requests as f64 / elapsed_s
            } else {
                0.0
            },
            latency_us: Latency::of(&tally.reads),
            write_latency_us: Latency::of(&tally.writes),
            errors: tally.errors,
            statuses: tally.statuses.clone(),
            hits: tally.hits,
            misses: tally.misses,
            unclassified: tally.unclassified,
            hit_ratio: tally.hit_ratio(),
            counted,
            stale_reads: checks_staleness.then_some(tally.stale_reads),
            stopped_early,
            timeline: tally.timeline.iter().enumerate().map(point).collect(),
        }
    }

    /// The human table.
    pub(crate) fn table(&self) -> String {
        let mut out = String::new();
        let how = match (self.rate, self.concurrency) {
            (Some(rate), _) => format!("open loop at {rate} req/s"),
            (None, Some(c)) => format!("closed loop, {c} clients"),
            _ => String::new(),
        };
        out.push_str(&format!(
            "strata load — {how}, {} requests in {:.1} s ({:.1} req/s)\n\n",
            self.requests, self.elapsed_s, self.throughput
        ));
        out.push_str(&format!(
            "{:<8} {:>10} {:>8} {:>10} {:>9} {:>9} {:>9} {:>9}\n",
            "", "requests", "errors", "hit ratio", "p50 ms", "p95 ms", "p99 ms", "max ms"
        ));
        let ms = |us: u64| us as f64 / 1000.0;
        let row = |name: &str, n: u64, errors: String, ratio: String, l: &Latency| {
            format!(
                "{name:<8} {n:>10} {errors:>8} {ratio:>10} {:>9.2} {:>9.2} {:>9.2} {:>9.2}\n",
                ms(l.p50),
                ms(l.p95),
                ms(l.p99),
                ms(l.max)
            )
        };
        out.push_str(&row(
            "reads",
            self.reads,
            String::new(),
            ratio(self.hit_ratio),
            &self.latency_us,
        ));
        if self.writes > 0 {
            out.push_str(&row(
                "writes",
                self.writes,
                String::new(),
                "-".into(),
                &self.write_latency_us,
            ));
        }
        out.push_str(&format!(
            "{:<8} {:>10} {:>8}\n\n",
            "all", self.requests, self.errors
        ));
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s} ×{n}"))
            .collect();
        out.push_str(&format!("responses: {}\n", statuses.join(", ")));
        out.push_str(&format!(
            "cache, from the responses: {} hits, {} misses, {} unclassified (no Cache-Status, X-Cache or Age)\n",
            self.hits, self.misses, self.unclassified
        ));
        if let Some(c) = &self.counted {
            out.push_str(&c.table());
        }
        if let Some(stale) = self.stale_reads {
            out.push_str(&format!(
                "staleness: {stale} stale reads (a version older than a write acknowledged before the read was sent)\n"
            ));
        }
        if let Some(why) = &self.stopped_early {
            out.push_str(&format!("stopped early: {why}\n"));
        }
        out
    }
}

fn point((i, s): (usize, &Second)) -> TimelinePoint {
    let classified = s.hits + s.misses;
    TimelinePoint {
        t_s: (i + 1) as f64,
        requests: s.requests,
        errors: s.errors,
        hit_ratio: (classified > 0).then(|| s.hits as f64 / classified as f64),
    }
}

fn ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{:.1}%", r * 100.0))
}

impl Gated for Report {
    fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    const DERIVED: &'static [(&'static str, &'static str, f64)] = &[
        ("counted_hit_ratio", "/counted/hit_ratio", 1.0),
        ("p50_ms", "/latency_us/p50", 1e-3),
        ("p95_ms", "/latency_us/p95", 1e-3),
        ("p99_ms", "/latency_us/p99", 1e-3),
        ("max_ms", "/latency_us/max", 1e-3),
        ("p50_us", "/latency_us/p50", 1.0),
        ("p95_us", "/latency_us/p95", 1.0),
        ("p99_us", "/latency_us/p99", 1.0),
        ("max_us", "/latency_us/max", 1.0),
        ("write_p95_ms", "/write_latency_us/p95", 1e-3),
        ("write_p99_ms", "/write_latency_us/p99", 1e-3),
    ];

    fn subject(&self) -> String {
        "the load".into()
    }
}
