//! CI gates: `--gate 'hit_ratio>=0.85' --gate 'p95_ms<=150' --gate 'stale_reads==0'`.

use serde_json::Value;

use super::report::Report;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Ge,
    Le,
    Gt,
    Lt,
    Eq,
    Ne,
}

/// One parsed gate.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Gate {
    text: String,
    metric: String,
    cmp: Cmp,
    value: f64,
}

/// Metrics a gate can name besides the report's top-level numbers (`ops_per_s`,
/// `stale_reads`, `loader_calls`, `errors`, …): JSON pointer and scale.
const DERIVED: &[(&str, &str, f64)] = &[
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

impl Gate {
    /// Parses `metric OP number`, OP one of `>=`, `<=`, `==`, `!=`, `>`, `<`.
    pub(crate) fn parse(text: &str) -> Result<Gate, String> {
        let t = text.trim();
        let ops = [
            (">=", Cmp::Ge),
            ("<=", Cmp::Le),
            ("==", Cmp::Eq),
            ("!=", Cmp::Ne),
            (">", Cmp::Gt),
            ("<", Cmp::Lt),
        ];
        let (at, sym, cmp) = ops
            .iter()
            .filter_map(|(sym, cmp)| t.find(sym).map(|at| (at, *sym, *cmp)))
            .min_by_key(|(at, sym, _)| (*at, std::cmp::Reverse(sym.len())))
            .ok_or_else(|| {
                format!("gate {text:?}: expected METRIC OP NUMBER, e.g. 'hit_ratio>=0.85'")
            })?;
        let metric = t[..at].trim();
        let number = t[at + sym.len()..].trim();
        if metric.is_empty()
            || !metric
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(format!("gate {text:?}: {metric:?} is not a metric name"));
        }
        let value: f64 = number
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| format!("gate {text:?}: {number:?} is not a number"))?;
        Ok(Gate {
            text: t.to_owned(),
            metric: metric.to_owned(),
            cmp,
            value,
        })
    }

    /// `Ok(())` when `report` passes; otherwise the line to print.
    pub(crate) fn check(&self, report: &Report) -> Result<(), String> {
        let json = serde_json::to_value(report).map_err(|e| e.to_string())?;
        let measured = metric(&json, &self.metric).ok_or_else(|| {
            let known: Vec<&str> = DERIVED.iter().map(|d| d.0).collect();
            format!(
                "gate {}: unknown metric {:?} (use {} or a numeric field of the JSON report)",
                self.text,
                self.metric,
                known.join(", ")
            )
        })?;
        let pass = match self.cmp {
            Cmp::Ge => measured >= self.value,
            Cmp::Le => measured <= self.value,
            Cmp::Gt => measured > self.value,
            Cmp::Lt => measured < self.value,
            Cmp::Eq => measured == self.value,
            Cmp::Ne => measured != self.value,
        };
        if pass {
            Ok(())
        } else {
            Err(format!(
                "gate failed: {} (measured {} on {} {})",
                self.text,
                trim(measured),
                report.cache,
                report.workload
            ))
        }
    }
}

fn metric(json: &Value, name: &str) -> Option<f64> {
    if let Some((_, pointer, scale)) = DERIVED.iter().find(|d| d.0 == name) {
        return json.pointer(pointer)?.as_f64().map(|v| v * scale);
    }
    json.get(name)?.as_f64()
}

fn trim(v: f64) -> String {
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::{HitRatio, Latency};

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
            cost: crate::bench::cost::Cost {
                cpu: crate::bench::cost::Cpu {
                    bench_s: 2.0,
                    redis_s: Some(1.0),
                    us_per_op: 30_000.0,
                    redis_us_per_op: Some(10_000.0),
                },
                redis_commands_per_op: None,
            },
            extra: Default::default(),
        }
    }

    #[test]
    fn gates_pass_and_fail_on_the_report() {
        let r = report();
        for ok in [
            "hit_ratio>=0.85",
            "p95_ms<=150",
            "errors==0",
            " ops_per_s > 99.5 ",
            "l1_hit_ratio!=0",
        ] {
            assert_eq!(Gate::parse(ok).unwrap().check(&r), Ok(()), "{ok}");
        }
        let failed = Gate::parse("stale_reads==0")
            .unwrap()
            .check(&r)
            .unwrap_err();
        assert_eq!(
            failed,
            "gate failed: stale_reads==0 (measured 3 on strata W1)"
        );
        let failed = Gate::parse("p99_ms<150").unwrap().check(&r).unwrap_err();
        assert!(failed.contains("measured 200"), "{failed}");
    }

    #[test]
    fn cost_and_ratio_gates_read_their_fields() {
        let strata = report();
        let mut naive = report();
        naive.cache = "naive";
        naive.ops_per_s = 50.0;
        naive.cost.cpu.us_per_op = 60_000.0;
        let mut reports = [strata, naive];
        crate::bench::report::compare(&mut reports);
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

    #[test]
    fn bad_expressions_are_clear_errors() {
        for (bad, says) in [
            ("hit_ratio", "expected METRIC OP NUMBER"),
            ("hit_ratio>=", "is not a number"),
            ("hit_ratio>=abc", "is not a number"),
            (">=0.5", "is not a metric name"),
            ("hit ratio>=0.5", "is not a metric name"),
            ("hit_ratio>=NaN", "is not a number"),
        ] {
            let err = Gate::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let err = Gate::parse("nonsense>=1")
            .unwrap()
            .check(&report())
            .unwrap_err();
        assert!(
            err.contains("unknown metric") && err.contains("p95_ms"),
            "{err}"
        );
    }

    #[test]
    fn two_character_operators_win_over_their_prefix() {
        assert_eq!(Gate::parse("errors<=1").unwrap().cmp, Cmp::Le);
        assert_eq!(Gate::parse("errors<1").unwrap().cmp, Cmp::Lt);
        assert_eq!(Gate::parse("errors!=1").unwrap().cmp, Cmp::Ne);
    }
}
