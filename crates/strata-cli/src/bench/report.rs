//! Figures of a run: the JSON object of `WORKLOADS.md` and the human table.

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Map, Value};

use super::cost::Cost;
use super::runner::Measured;
use crate::gate::Gated;

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Latency {
    pub(crate) p50: u64,
    pub(crate) p95: u64,
    pub(crate) p99: u64,
    pub(crate) max: u64,
    pub(crate) count: u64,
}

impl Latency {
    pub(crate) fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            p50: h.value_at_quantile(0.50),
            p95: h.value_at_quantile(0.95),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
            count: h.len(),
        }
    }
}

/// Hit ratios as fractions of all measured reads.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct HitRatio {
    pub(crate) l1: f64,
    pub(crate) l2: f64,
    pub(crate) overall: f64,
}

/// One run's figures, in the schema of `WORKLOADS.md`; workload-specific figures in `extra`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) workload: &'static str,
    pub(crate) cache: &'static str,
    /// `redis`, or `embedded` when no Redis was available.
    pub(crate) l2: &'static str,
    pub(crate) params: Value,
    pub(crate) ops: u64,
    pub(crate) reads: u64,
    pub(crate) writes: u64,
    pub(crate) elapsed_s: f64,
    pub(crate) ops_per_s: f64,
    pub(crate) read_us: Latency,
    pub(crate) write_us: Latency,
    pub(crate) l1_hits: u64,
    pub(crate) l2_hits: u64,
    /// Reads that waited on another's L2 fetch or load; counted as hits.
    pub(crate) waited: u64,
    pub(crate) hit_ratio: HitRatio,
    pub(crate) loader_calls: u64,
    pub(crate) stale_reads: u64,
    pub(crate) errors: u64,
    /// The cache's failed L2 calls (timeouts, calls its open breaker refused): a run that
    /// degraded — a starved machine, say — says so, though its reads answered.
    pub(crate) l2_errors: u64,
    /// What the measured phase cost: `cpu` and `redis_commands_per_op`.
    #[serde(flatten)]
    pub(crate) cost: Cost,
    #[serde(flatten)]
    pub(crate) extra: Map<String, Value>,
}

impl Report {
    pub(crate) fn new(
        workload: &'static str,
        cache: &'static str,
        l2: &'static str,
        params: &impl Serialize,
        m: &Measured,
    ) -> Self {
        let reads = m.reads.len();
        let writes = m.writes.len();
        let ratio = |n: u64| {
            if reads == 0 {
                0.0
            } else {
                n as f64 / reads as f64
            }
        };
        let secs = m.elapsed.as_secs_f64();
        Report {
            workload,
            cache,
            l2,
            params: serde_json::to_value(params).unwrap_or(Value::Null),
            ops: reads + writes,
            reads,
            writes,
            elapsed_s: secs,
            ops_per_s: if secs > 0.0 {
                (reads + writes) as f64 / secs
            } else {
                0.0
            },
            read_us: Latency::of(&m.reads),
            write_us: Latency::of(&m.writes),
            l1_hits: m.counts.l1_hits,
            l2_hits: m.counts.l2_hits,
            waited: m.counts.waited,
            hit_ratio: HitRatio {
                l1: ratio(m.counts.l1_hits),
                l2: ratio(m.counts.l2_hits),
                overall: ratio(m.counts.l1_hits + m.counts.l2_hits + m.counts.waited),
            },
            loader_calls: m.loads,
            stale_reads: m.stale_reads,
            errors: m.errors,
            l2_errors: m.counts.l2_errors,
            cost: Cost::default(),
            extra: Map::new(),
        }
    }

    /// Adds the stream's fewest possible loads (`loader_calls_min`), the run's loads as a
    /// multiple of it (`loader_calls_vs_min`, the gate for "loads near the minimum"), and the
    /// highest hit ratio the stream allows (`hit_ratio_max`: every read but those loads hits).
    pub(crate) fn with_minimum_loads(&mut self, minimum: u64) {
        let ceiling = 1.0 - minimum as f64 / self.reads.max(1) as f64;
        self.extra
            .insert("hit_ratio_max".into(), Value::from(ceiling.max(0.0)));
        self.extra
            .insert("loader_calls_min".into(), Value::from(minimum));
        self.extra.insert(
            "loader_calls_vs_min".into(),
            Value::from(self.loader_calls as f64 / minimum.max(1) as f64),
        );
    }

    pub(crate) fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

impl Gated for Report {
    fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    const DERIVED: &'static [(&'static str, &'static str, f64)] = &[
        ("hit_ratio", "/hit_ratio/overall", 1.0),
        ("l1_hit_ratio", "/hit_ratio/l1", 1.0),
        ("l2_hit_ratio", "/hit_ratio/l2", 1.0),
        ("p50_ms", "/read_us/p50", 1e-3),
        ("p95_ms", "/read_us/p95", 1e-3),
        ("p99_ms", "/read_us/p99", 1e-3),
        ("max_ms", "/read_us/max", 1e-3),
        ("p50_us", "/read_us/p50", 1.0),
        ("p95_us", "/read_us/p95", 1.0),
        ("p99_us", "/read_us/p99", 1.0),
        ("max_us", "/read_us/max", 1.0),
        ("cpu_us_per_op", "/cpu/us_per_op", 1.0),
        ("redis_us_per_op", "/cpu/redis_us_per_op", 1.0),
        ("redis_commands_per_op", "/redis_commands_per_op/total", 1.0),
        // Strata against the naive cache of the same run (`--cache both`): ratios.
        ("ops_vs_naive", "/vs_naive/ops_per_s", 1.0),
        ("p99_vs_naive", "/vs_naive/read_p99", 1.0),
        ("cpu_vs_naive", "/vs_naive/cpu_us_per_op", 1.0),
        ("redis_cpu_vs_naive", "/vs_naive/redis_us_per_op", 1.0),
    ];

    fn subject(&self) -> String {
        format!("{} {}", self.cache, self.workload)
    }
}

/// With a Strata run and a naive one of the same workload, adds `vs_naive` to Strata's report:
/// its figures as ratios of the naive cache's (`ops_per_s`, `read_p99`, `cpu_us_per_op`,
/// `redis_us_per_op`, `redis_commands_per_op`).
pub(crate) fn compare(reports: &mut [Report]) {
    let find = |name: &str| reports.iter().position(|r| r.cache == name);
    let (Some(s), Some(n)) = (find("strata"), find("naive")) else {
        return;
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Value::from(a / b),
        _ => Value::Null,
    };
    let (strata, naive) = (&reports[s], &reports[n]);
    let commands = |r: &Report| r.cost.redis_commands_per_op.as_ref().map(|c| c.total);
    let vs = serde_json::json!({
        "ops_per_s": ratio(Some(strata.ops_per_s), Some(naive.ops_per_s)),
        "read_p99": ratio(Some(strata.read_us.p99 as f64), Some(naive.read_us.p99 as f64)),
        "cpu_us_per_op": ratio(Some(strata.cost.cpu.us_per_op), Some(naive.cost.cpu.us_per_op)),
        "redis_us_per_op": ratio(strata.cost.cpu.redis_us_per_op, naive.cost.cpu.redis_us_per_op),
        "redis_commands_per_op": ratio(commands(strata), commands(naive)),
    });
    reports[s].extra.insert("vs_naive".into(), vs);
}

/// A row of the human table: its label, how to read the figure from a report (`None`: not
/// measured in this run), which way is better, and the decimals it is shown with.
struct Row {
    label: &'static str,
    get: fn(&Report) -> Option<f64>,
    better: Better,
    decimals: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum Better {
    Higher,
    Lower,
    /// A figure that describes the run rather than judges it (where the hits came from, what
    /// the harness's timer did): shown without a verdict. A lower L2 hit ratio, say, is what
    /// an L1 in front of it is for.
    Neither,
}

/// A count, a time in µs or a rate: shown whole.
const fn whole(label: &'static str, get: fn(&Report) -> Option<f64>, better: Better) -> Row {
    fraction(label, get, better, 0)
}

/// A ratio or a cost per operation, shown with `decimals`.
const fn fraction(
    label: &'static str,
    get: fn(&Report) -> Option<f64>,
    better: Better,
    decimals: usize,
) -> Row {
    Row {
        label,
        get,
        better,
        decimals,
    }
}

const ROWS: &[Row] = &[
    whole("ops/s", |r| Some(r.ops_per_s), Better::Higher),
    whole("read p50 µs", |r| Some(r.read_us.p50 as f64), Better::Lower),
    whole("read p95 µs", |r| Some(r.read_us.p95 as f64), Better::Lower),
    whole("read p99 µs", |r| Some(r.read_us.p99 as f64), Better::Lower),
    whole("read max µs", |r| Some(r.read_us.max as f64), Better::Lower),
    whole(
        "write p99 µs",
        |r| Some(r.write_us.p99 as f64),
        Better::Lower,
    ),
    fraction(
        "hit ratio",
        |r| Some(r.hit_ratio.overall),
        Better::Higher,
        4,
    ),
    fraction("L1 hit ratio", |r| Some(r.hit_ratio.l1), Better::Neither, 4),
    fraction("L2 hit ratio", |r| Some(r.hit_ratio.l2), Better::Neither, 4),
    // Reads answered by a load or L2 read already under way: hits, neither L1 nor L2 ones.
    whole("waited reads", |r| Some(r.waited as f64), Better::Neither),
    whole(
        "loader calls",
        |r| Some(r.loader_calls as f64),
        Better::Lower,
    ),
    // What the workload's 1 ms load took under this cache (W1, W5): how close to `LOAD_MS`
    // the harness's timer kept it (`--load-timer`; Tokio's fires later in an idler runtime).
    whole(
        "load sleep p95 µs",
        |r| r.extra.get("load_sleep_us")?.get("p95")?.as_f64(),
        Better::Neither,
    ),
    whole("stale reads", |r| Some(r.stale_reads as f64), Better::Lower),
    whole("errors", |r| Some(r.errors as f64), Better::Lower),
    fraction(
        "CPU µs/op",
        |r| Some(r.cost.cpu.us_per_op),
        Better::Lower,
        2,
    ),
    fraction(
        "Redis CPU µs/op",
        |r| r.cost.cpu.redis_us_per_op,
        Better::Lower,
        2,
    ),
    fraction(
        "Redis cmds/op",
        |r| r.cost.redis_commands_per_op.as_ref().map(|c| c.total),
        Better::Lower,
        3,
    ),
];

/// A row's figure with its decimals (`-`: not measured).
fn cell(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

/// A figure of a run's `extra` as a reader wants it: a number whole, or with up to four
/// decimals if it has a fraction; an object as `p50 1417 · p95 1763`, one inside it in
/// parentheses (`hit_ratio (l1 0.4636 · l2 0.1262)`); a list as `1 · 0 · 0` (`none` when
/// empty); text as it is; anything else as its JSON.
fn extra_cell(v: &Value) -> String {
    match v {
        Value::Number(n) => n.as_f64().map_or_else(
            || n.to_string(),
            |x| {
                if x.fract() == 0.0 {
                    cell(Some(x), 0)
                } else {
                    // `s 0.99`, not `s 0.9900`.
                    cell(Some(x), 4)
                        .trim_end_matches('0')
                        .trim_end_matches('.')
                        .to_owned()
                }
            },
        ),
        Value::Object(fields) => fields
            .iter()
            .map(|(k, x)| format!("{k} {}", nested_cell(x)))
            .collect::<Vec<_>>()
            .join(" · "),
        Value::String(text) => text.clone(),
        // An empty list is a figure too (W3: no instance served the old version past 1 s).
        Value::Array(items) if items.is_empty() => "none".into(),
        Value::Array(items) => items
            .iter()
            .map(nested_cell)
            .collect::<Vec<_>>()
            .join(" · "),
        _ => v.to_string(),
    }
}

/// [`extra_cell`] of a figure inside another, an object in parentheses.
fn nested_cell(v: &Value) -> String {
    match v {
        Value::Object(_) => format!("({})", extra_cell(v)),
        _ => extra_cell(v),
    }
}

/// The table of one or more runs of the same workload; with two, a ratio column (first /
/// second) marked `better` or `worse`.
pub(crate) fn table(reports: &[Report]) -> String {
    let mut out = String::new();
    if let Some(first) = reports.first() {
        // Which server, and whether a fill is a script there: its figures depend on it.
        let server = first.cost.l2_server.as_ref().map_or(String::new(), |s| {
            let fill = if s.set_ifeq { "SET IFEQ" } else { "a script" };
            format!(" ({} {}, a fill is {fill})", s.name, s.version)
        });
        out.push_str(&format!(
            "{} ({} ops measured, L2: {}{server}, params: {})\n",
            first.workload,
            first.ops,
            first.l2,
            extra_cell(&first.params)
        ));
    }
    out.push_str(&format!("{:<16}", ""));
    for r in reports {
        out.push_str(&format!("{:>14}", r.cache));
    }
    if reports.len() == 2 {
        out.push_str(&format!(
            "{:>22}",
            format!("{}/{}", reports[0].cache, reports[1].cache)
        ));
    }
    out.push('\n');
    for row in ROWS {
        let (label, get, better) = (row.label, row.get, row.better);
        // A figure no run of this workload has (no Redis, no loads timed) is left out.
        if reports.iter().all(|r| get(r).is_none()) {
            continue;
        }
        out.push_str(&format!("{label:<16}"));
        for r in reports {
            out.push_str(&format!("{:>14}", cell(get(r), row.decimals)));
        }
        if let [a, b] = reports
            && let (Some(x), Some(y)) = (get(a), get(b))
            && y != 0.0
            && x != y
            && better != Better::Neither
        {
            let wins = (x > y) == (better == Better::Higher);
            let verdict = if wins { "better" } else { "worse" };
            out.push_str(&format!("{:>22}", format!("{:.2}× {verdict}", x / y)));
        }
        out.push('\n');
    }
    for r in reports {
        // The ratios are the table's last column already.
        for (k, v) in r.extra.iter().filter(|(k, _)| *k != "vs_naive") {
            match v {
                // A list of objects (W5's instances) a line an item.
                Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
                    for (i, item) in items.iter().enumerate() {
                        out.push_str(&format!("{}: {k}[{i}] = {}\n", r.cache, extra_cell(item)));
                    }
                }
                _ => out.push_str(&format!("{}: {k} = {}\n", r.cache, extra_cell(v))),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::cost::{Cost, Cpu, Server};
    use crate::gate::Gate;

    fn report() -> Report {
        Report {
            workload: "W1",
            cache: "strata",
            l2: "redis",
            params: Value::Null,
            ops: 100,
            reads: 98,
            writes: 2,
            elapsed_s: 1.0,
            ops_per_s: 100.0,
            read_us: Latency {
                p50: 10,
                p95: 120_000,
                p99: 200_000,
                max: 300_000,
                count: 98,
            },
            write_us: Latency::default(),
            l1_hits: 80,
            l2_hits: 10,
            waited: 0,
            hit_ratio: HitRatio {
                l1: 0.8,
                l2: 0.1,
                overall: 0.9,
            },
            loader_calls: 8,
            stale_reads: 3,
            errors: 0,
            l2_errors: 0,
            cost: Cost {
                cpu: Cpu {
                    bench_s: 2.0,
                    redis_s: Some(1.0),
                    us_per_op: 30_000.0,
                    redis_us_per_op: Some(10_000.0),
                },
                redis_commands_per_op: None,
                l2_server: None,
            },
            extra: Map::default(),
        }
    }

    /// A run of each cache, naive's at half Strata's ops/s.
    fn strata_and_naive() -> [Report; 2] {
        let mut naive = report();
        naive.cache = "naive";
        naive.ops_per_s = 50.0;
        [report(), naive]
    }

    #[test]
    fn gates_name_the_reports_fields() {
        let r = report();
        for ok in [
            "hit_ratio>=0.85",
            "p95_ms<=150",
            "l1_hit_ratio!=0",
            "p99_us==200000",
            "l2_errors<=0",
        ] {
            assert_eq!(Gate::parse(ok).unwrap().check(&r), Ok(()), "{ok}");
        }
        let failed = Gate::parse("p99_ms<150").unwrap().check(&r).unwrap_err();
        assert_eq!(
            failed,
            "gate failed: p99_ms<150 (measured 200 on strata W1)"
        );
    }

    #[test]
    fn cost_and_ratio_gates_read_their_fields() {
        let [strata, mut naive] = strata_and_naive();
        naive.cost.cpu.us_per_op = 60_000.0;
        let mut reports = [strata, naive];
        compare(&mut reports);
        let r = &reports[0];
        for ok in [
            "cpu_us_per_op<=30000",
            "redis_us_per_op==10000",
            "ops_vs_naive>=2",
            "cpu_vs_naive<=0.5",
        ] {
            assert_eq!(Gate::parse(ok).unwrap().check(r), Ok(()), "{ok}");
        }
        assert!(
            Gate::parse("ops_vs_naive>=1.5")
                .unwrap()
                .check(&reports[1])
                .is_err()
        );
    }

    /// Rows that say where the hits came from carry no verdict (naive's higher L2 hit ratio
    /// is not Strata's loss); the waited reads have a row; `extra` reads as figures.
    #[test]
    fn the_table_judges_outcomes_not_where_hits_came_from() {
        let [mut strata, mut naive] = strata_and_naive();
        strata.waited = 4;
        naive.hit_ratio = HitRatio {
            l1: 0.0,
            l2: 0.85,
            overall: 0.85,
        };
        strata.extra.insert(
            "read_us_loaded".into(),
            serde_json::json!({"p50": 1417, "p99": 2053}),
        );
        strata
            .extra
            .insert("hit_ratio_max".into(), serde_json::json!(0.922_668_5));
        let t = table(&[strata, naive]);
        let row = |label: &str| {
            t.lines()
                .find(|l| l.starts_with(label))
                .unwrap_or_else(|| panic!("no row {label}: {t}"))
                .to_owned()
        };
        assert!(row("ops/s").ends_with("2.00× better"), "{t}");
        assert!(row("hit ratio").ends_with("1.06× better"), "{t}");
        for label in ["L1 hit ratio", "L2 hit ratio", "waited reads"] {
            let r = row(label);
            assert!(!r.contains("better") && !r.contains("worse"), "{r}");
        }
        assert_eq!(
            row("waited reads").split_whitespace().collect::<Vec<_>>(),
            ["waited", "reads", "4", "0"],
            "{t}"
        );
        assert!(
            t.contains("strata: read_us_loaded = p50 1417 · p99 2053\n"),
            "{t}"
        );
        assert!(t.contains("strata: hit_ratio_max = 0.9227\n"), "{t}");
    }

    /// Each row has its own decimals (a cost per op is not a hit ratio), and W5's list of
    /// instances reads a line an instance, not as JSON.
    #[test]
    fn figures_read_with_their_rows_decimals_and_lists_a_line_an_item() {
        let [mut strata, naive] = strata_and_naive();
        strata.cost.cpu.us_per_op = 9.5;
        strata.extra.insert(
            "instances".into(),
            serde_json::json!([
                {"instance": 0, "hit_ratio": {"l1": 0.463_599, "overall": 0.623_5}, "stale_reads": 0},
                {"instance": 1, "hit_ratio": {"l1": 0.467_5, "overall": 0.632_4}, "stale_reads": 0},
            ]),
        );
        strata
            .extra
            .insert("processes".into(), serde_json::json!("in-process"));
        strata
            .extra
            .insert("per_instance".into(), serde_json::json!([1, 0, 0, 0]));
        strata
            .extra
            .insert("serving_old".into(), serde_json::json!([]));
        strata.extra.insert(
            "shape".into(),
            serde_json::json!({"s": 0.99, "tiny": 0.000_01, "n": 100_000}),
        );
        let t = table(&[strata, naive]);
        let row = |label: &str| t.lines().find(|l| l.starts_with(label)).map(str::to_owned);
        let cpu = row("CPU µs/op").unwrap_or_default();
        assert!(cpu.contains(" 9.50 ") && cpu.contains(" 30000.00 "), "{t}");
        assert!(
            row("hit ratio").is_some_and(|r| r.contains(" 0.9000 ")),
            "{t}"
        );
        assert!(row("ops/s").is_some_and(|r| r.contains(" 100 ")), "{t}");
        assert!(
            t.contains(
                "strata: instances[0] = hit_ratio (l1 0.4636 · overall 0.6235) · instance 0 · stale_reads 0\n"
            ),
            "{t}"
        );
        assert!(
            t.contains("strata: instances[1] = hit_ratio (l1 0.4675"),
            "{t}"
        );
        assert!(t.contains("strata: processes = in-process\n"), "{t}");
        assert!(t.contains("strata: per_instance = 1 · 0 · 0 · 0\n"), "{t}");
        assert!(t.contains("strata: serving_old = none\n"), "{t}");
        assert!(
            t.contains("strata: shape = n 100000 · s 0.99 · tiny 0\n"),
            "{t}"
        );
        assert!(!t.contains('{') && !t.contains('"'), "no raw JSON: {t}");
    }

    #[test]
    fn the_table_and_the_json_name_the_server_how_a_fill_runs_there_and_the_loads_timer() {
        let mut r = report();
        assert!(
            table(std::slice::from_ref(&r)).starts_with("W1 (100 ops measured, L2: redis, params")
        );
        r.cost.l2_server = Some(Server {
            name: "valkey",
            version: "8.1.1".into(),
            set_ifeq: true,
            run_id: "4f3a".into(),
        });
        assert!(table(std::slice::from_ref(&r)).starts_with(
            "W1 (100 ops measured, L2: redis (valkey 8.1.1, a fill is SET IFEQ), params"
        ));
        assert!(!table(std::slice::from_ref(&r)).contains("load sleep"));
        r.extra.insert(
            "load_sleep_us".into(),
            serde_json::json!({"mean": 1900, "p95": 2700}),
        );
        assert!(
            table(std::slice::from_ref(&r))
                .lines()
                .any(|l| l.starts_with("load sleep p95 µs") && l.ends_with("2700"))
        );
        let json: Value = serde_json::from_str(&r.json()).expect("json");
        assert_eq!(
            json["l2_server"],
            serde_json::json!({"name": "valkey", "version": "8.1.1", "set_ifeq": true, "run_id": "4f3a"})
        );
    }
}
