use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use strata_testkit::RedisServer;

fn strata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .expect("run strata")
}

/// Fails the test, with the command's stderr, unless `out` is a success.
fn succeeded(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `strata bench <workload> --redis <redis> <extra…>`.
fn bench(workload: &str, redis: &RedisServer, extra: &[&str]) -> Output {
    let url = redis.url();
    let mut args = vec!["bench", workload, "--redis", &url];
    args.extend_from_slice(extra);
    strata(&args)
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn n(v: &Value, pointer: &str) -> f64 {
    v.pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{pointer} missing in {v}"))
}

fn assert_consistent(r: &Value) {
    for field in [
        "workload",
        "cache",
        "params",
        "read_us",
        "write_us",
        "hit_ratio",
    ] {
        assert!(r.get(field).is_some(), "{field} missing in {r}");
    }
    let (reads, writes) = (n(r, "/reads"), n(r, "/writes"));
    assert_eq!(n(r, "/ops"), reads + writes);
    assert_eq!(n(r, "/read_us/count"), reads);
    assert_eq!(n(r, "/write_us/count"), writes);
    for p in ["p50", "p95", "p99"] {
        assert!(n(r, &format!("/read_us/{p}")) <= n(r, "/read_us/max"));
    }
    let hits = n(r, "/l1_hits") + n(r, "/l2_hits") + n(r, "/waited");
    assert!(hits <= reads);
    assert!((n(r, "/hit_ratio/overall") - hits / reads).abs() < 1e-9);
    assert!((n(r, "/hit_ratio/l1") - n(r, "/l1_hits") / reads).abs() < 1e-9);
    // Every read that was not a hit loaded, once: hits + loads account for every read.
    assert_eq!(hits + n(r, "/loader_calls"), reads, "{r}");
    assert!(n(r, "/ops_per_s") > 0.0);
    assert_eq!(n(r, "/errors"), 0.0);
    // What the phase cost: the bench's CPU, and Redis' where there is one to ask.
    assert!(n(r, "/cpu/bench_s") > 0.0, "{r}");
    assert!(n(r, "/cpu/us_per_op") > 0.0, "{r}");
}

#[test]
fn w1_json_both_caches_with_plots() {
    let redis = RedisServer::start();
    let out_dir = tempfile::tempdir().unwrap();
    let out = bench(
        "w1",
        &redis,
        &[
            "--ops",
            "20000",
            "--json",
            "--cache",
            "both",
            "--out",
            &out_dir.path().display().to_string(),
        ],
    );
    succeeded(&out);
    let runs = json_lines(&out);
    assert_eq!(runs.len(), 2);
    for (run, cache) in runs.iter().zip(["strata", "naive"]) {
        assert_eq!(run["workload"], "W1");
        assert_eq!(run["cache"], cache);
        assert_eq!(run["l2"], "redis");
        assert_eq!(n(run, "/params/ops"), 20000.0);
        assert_eq!(n(run, "/params/warmup_ops"), 2000.0);
        assert_eq!(n(run, "/params/seed"), 42.0);
        assert_eq!(n(run, "/ops"), 20000.0);
        assert_consistent(run);
        // Every load ran in the task of the read that missed: its latency is also theirs.
        assert_eq!(
            n(run, "/read_us_loaded/count"),
            n(run, "/loader_calls"),
            "{run}"
        );
        assert!(
            n(run, "/read_us_loaded/p50") >= 1000.0,
            "a load sleeps 1 ms: {run}"
        );
        // The harness's own timer by default, and no load's wait ended before `LOAD_MS`.
        assert_eq!(run["params"]["load_timer"], "thread", "{run}");
        assert_eq!(
            n(run, "/load_sleep_us/count"),
            n(run, "/loader_calls"),
            "{run}"
        );
        assert!(n(run, "/load_sleep_us/min") >= 1000.0, "{run}");
    }
    assert_eq!(n(&runs[1], "/l1_hits"), 0.0, "the baseline has no L1");
    for run in &runs {
        assert!(n(run, "/cpu/redis_s") > 0.0, "{run}");
        assert!(n(run, "/redis_commands_per_op/total") > 0.0, "{run}");
        // The server it asked, named: the harness's redis-server from PATH.
        assert_eq!(run["l2_server"]["name"], "redis", "{run}");
        assert!(run["l2_server"]["version"].is_string(), "{run}");
        assert!(run["l2_server"]["set_ifeq"].is_boolean(), "{run}");
    }
    // A server given by `--redis` is the bench's to empty, not to restart: both runs on it.
    assert_eq!(
        runs[0]["l2_server"]["run_id"], runs[1]["l2_server"]["run_id"],
        "{runs:?}"
    );
    // The baseline asks Redis for every read: at least one GET per op but the writes.
    assert!(
        n(&runs[1], "/redis_commands_per_op/by_command/get") >= 0.95,
        "{}",
        runs[1]
    );
    for ratio in ["ops_per_s", "read_p99", "cpu_us_per_op", "redis_us_per_op"] {
        assert!(
            n(&runs[0], &format!("/vs_naive/{ratio}")) > 0.0,
            "{}",
            runs[0]
        );
    }
    assert_eq!(
        n(&runs[0], "/stale_reads"),
        0.0,
        "fenced fills: {}",
        runs[0]
    );
    assert!(n(&runs[0], "/hit_ratio/l1") > 0.5, "{}", runs[0]);
    for f in [
        "w1_latency.svg",
        "w1_hit_ratio.svg",
        "w1_latency.png",
        "w1_hit_ratio.png",
    ] {
        let bytes = std::fs::read(out_dir.path().join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(bytes.len() > 1000, "{f} is {} bytes", bytes.len());
        if f.ends_with(".png") {
            assert!(bytes.starts_with(b"\x89PNG"), "{f}");
        } else {
            assert!(
                String::from_utf8_lossy(&bytes).contains("strata"),
                "{f} has a legend"
            );
        }
    }
}

#[test]
fn the_human_table_compares_the_two_caches() {
    let redis = RedisServer::start();
    let out = bench("w1", &redis, &["--ops", "5000", "--cache", "both"]);
    succeeded(&out);
    let table = String::from_utf8_lossy(&out.stdout);
    for row in [
        "ops/s",
        "read p99 µs",
        "hit ratio",
        "loader calls",
        "stale reads",
        "strata/naive",
    ] {
        assert!(table.contains(row), "{row} missing:\n{table}");
    }
}

#[test]
fn failed_gates_exit_1_with_a_line_each() {
    let redis = RedisServer::start();
    let out = bench(
        "w1",
        &redis,
        &[
            "--ops",
            "5000",
            "--json",
            "--gate",
            "hit_ratio>=1.5",
            "--gate",
            "errors==0",
            "--gate",
            "p99_ms<=0",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("gate failed: hit_ratio>=1.5 (measured 0."),
        "{stderr}"
    );
    assert!(stderr.contains("gate failed: p99_ms<=0"), "{stderr}");
    assert!(
        !stderr.contains("errors==0"),
        "passing gates are quiet: {stderr}"
    );

    let pass = bench(
        "w1",
        &redis,
        &["--ops", "5000", "--json", "--gate", "errors==0"],
    );
    assert!(pass.status.success());
}

#[test]
fn a_bad_gate_is_refused_before_running() {
    let out = strata(&[
        "bench",
        "w1",
        "--redis",
        "redis://127.0.0.1:1",
        "--gate",
        "hit_ratio>>0.5",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not a number"), "{stderr}");
    let out = strata(&["bench", "w1", "--redis", "not a url"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Redis URL"));
}

#[test]
fn w2_stampede_over_four_processes() {
    let redis = RedisServer::start();
    let out = bench("w2", &redis, &["--json", "--cache", "both"]);
    succeeded(&out);
    let runs = json_lines(&out);
    let (ours, naive) = (&runs[0], &runs[1]);
    assert_eq!(n(ours, "/reads"), 1000.0);
    assert_eq!(ours["instances"], "processes");
    let per_instance: Vec<f64> = ours["loader_calls_per_instance"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(per_instance.len(), 4);
    assert_eq!(
        per_instance.iter().sum::<f64>(),
        1.0,
        "one load across the four processes (the lease): {per_instance:?}"
    );
    assert_eq!(n(ours, "/loader_calls"), 1.0);
    // The instances were warmed by a stampede on another key: the measured one loads no
    // script (a cold process's first script call answers NOSCRIPT and is sent again).
    assert!(
        ours["redis_commands_per_op"]["by_command"]
            .get("script|load")
            .is_none(),
        "{ours}"
    );
    // No single-flight at all: every read that missed loaded. (How many missed depends on how
    // many started before the first load's SET landed, which a loaded machine stretches.)
    assert_eq!(
        n(naive, "/loader_calls") + n(naive, "/l2_hits"),
        1000.0,
        "{naive}"
    );
    assert!(n(naive, "/loader_calls") > 4.0, "{naive}");
    for r in &runs {
        assert_eq!(n(r, "/errors"), 0.0);
        assert!(
            n(r, "/read_us/p99") >= 45_000.0,
            "reads waited for the 50 ms load: {r}"
        );
    }
}

#[test]
fn w5_a_fleet_of_four_processes_serves_no_stale_read() {
    let redis = RedisServer::start();
    let out = bench(
        "w5",
        &redis,
        &["--ops", "20000", "--json", "--cache", "both"],
    );
    succeeded(&out);
    let runs = json_lines(&out);
    assert_eq!(runs.len(), 2);
    for (run, cache) in runs.iter().zip(["strata", "naive"]) {
        assert_eq!(run["workload"], "W5");
        assert_eq!(run["cache"], cache);
        assert_eq!(run["processes"], "one per instance");
        assert_eq!(n(run, "/ops"), 20000.0);
        assert_eq!(n(run, "/params/instances"), 4.0);
        assert_consistent(run);
        let instances = run["instances"].as_array().unwrap();
        assert_eq!(instances.len(), 4);
        let reads: f64 = instances.iter().map(|i| n(i, "/reads")).sum();
        assert_eq!(reads, n(run, "/reads"), "the stream dealt round the four");
        assert!(n(run, "/cpu/redis_s") > 0.0, "{run}");
    }
    // Writes acknowledged by the fleet: no instance serves what another invalidated.
    assert_eq!(n(&runs[0], "/stale_reads"), 0.0, "{}", runs[0]);
    assert!(n(&runs[0], "/hit_ratio/l1") > 0.4, "{}", runs[0]);
}

#[test]
fn w3_invalidations_reach_every_instance() {
    let redis = RedisServer::start();
    let out = bench("w3", &redis, &["--json"]);
    succeeded(&out);
    let r = &json_lines(&out)[0];
    assert_eq!(n(r, "/writes"), 1000.0);
    assert_eq!(
        n(r, "/propagation_us/count"),
        3000.0,
        "3 readers × 1,000 writes: {r}"
    );
    assert_eq!(n(r, "/propagations_over_1s"), 0.0, "{r}");
    assert_eq!(r["instances_serving_old_over_1s"], serde_json::json!([]));
}

#[test]
fn w4_survives_a_redis_kill_without_read_errors() {
    // W4 kills the Redis it started itself; it needs redis-server on PATH, as the suite does.
    let out = strata(&["bench", "w4", "--json", "--warmup", "20000"]);
    succeeded(&out);
    let r = &json_lines(&out)[0];
    assert_eq!(r["workload"], "W4");
    assert_eq!(n(r, "/ops"), 15000.0);
    assert_eq!(
        n(r, "/outage/errors"),
        0.0,
        "reads during the outage fall back: {r}"
    );
    assert_eq!(n(r, "/errors"), 0.0, "writes are deferred, not failed: {r}");
    assert!(n(r, "/outage/read_us/count") > 500.0, "{r}");
    // Fenced fills: no stale set survives the outage or the restart (which wipes the
    // generation counters: fills that read them before can only be refused).
    assert_eq!(n(r, "/stale_reads"), 0.0, "{r}");
}

#[test]
fn w4_survives_a_frozen_redis_without_errors_or_stale_reads() {
    let out = strata(&[
        "bench", "w4", "--json", "--warmup", "20000", "--fault", "freeze",
    ]);
    succeeded(&out);
    let r = &json_lines(&out)[0];
    assert_eq!(r["params"]["fault"], "freeze");
    // Writes too: their shared half is deferred and replayed after the thaw.
    assert_eq!(n(r, "/errors"), 0.0, "{r}");
    assert_eq!(n(r, "/stale_reads"), 0.0, "{r}");
    assert!(
        r["outage"]["l2_serving_again_after_s"].is_number(),
        "L2 serves again before the run ends: {r}"
    );
}

#[test]
fn w1_and_w2_run_on_a_redis_cluster() {
    let cluster = strata_testkit::RedisCluster::start();
    let url = cluster.url();
    let out = strata(&[
        "bench", "w1", "--redis", &url, "--ops", "20000", "--warmup", "2000", "--json",
    ]);
    succeeded(&out);
    let runs = json_lines(&out);
    assert_eq!(runs.len(), 1);
    assert_consistent(&runs[0]);
    assert_eq!(n(&runs[0], "/stale_reads"), 0.0);
    // The values went to L2 on the cluster, spread over its masters.
    for master in cluster.masters() {
        let keys: u64 = cluster.node(master).cli(&["DBSIZE"]).parse().unwrap();
        assert!(keys > 100, "{keys} keys on master {master}");
    }
    // The stampede over four processes: one load across them.
    let out = strata(&["bench", "w2", "--redis", &url, "--json"]);
    succeeded(&out);
    let w2 = &json_lines(&out)[0];
    assert_eq!(n(w2, "/loader_calls"), 1.0, "{w2}");
    assert_eq!(n(w2, "/errors"), 0.0, "{w2}");
}

/// `scripts/redis-cluster`, as the README and BENCHMARKS.md use it: `up` prints a URL the
/// bench runs on, `down` stops every node.
#[test]
fn the_cluster_script_makes_a_cluster_the_bench_runs_on() {
    let base = free_run(4);
    let cluster = ClusterScript::new();
    let out = cluster.run(&[
        "up",
        "--masters",
        "2",
        "--replicas",
        "1",
        "--port",
        &base.to_string(),
    ]);
    assert!(
        out.status.success(),
        "scripts/redis-cluster up: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8(out.stdout).unwrap();
    let url = url.trim();
    assert_eq!(
        url,
        format!("redis+cluster://127.0.0.1:{base},127.0.0.1:{}", base + 1)
    );
    let out = strata(&[
        "bench", "w1", "--redis", url, "--ops", "20000", "--warmup", "2000", "--json",
    ]);
    succeeded(&out);
    let run = &json_lines(&out)[0];
    assert_consistent(run);
    assert_eq!(n(run, "/stale_reads"), 0.0);
    // Both masters hold values.
    let cli = |port: u16, args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    for port in [base, base + 1] {
        let keys: u64 = cli(port, &["DBSIZE"]).parse().unwrap();
        assert!(keys > 100, "{keys} keys on {port}");
    }
    drop(cluster);
    for port in base..base + 4 {
        assert_eq!(cli(port, &["PING"]), "", "{port} stopped");
    }
}

/// `scripts/redis-cluster` with its nodes' files in a directory of its own; `down` when
/// dropped, however the test ends.
struct ClusterScript(tempfile::TempDir);

impl ClusterScript {
    fn new() -> ClusterScript {
        ClusterScript(tempfile::tempdir().unwrap())
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/redis-cluster"
        ))
        .args(args)
        .env("STRATA_CLUSTER_DIR", self.0.path().join("nodes"))
        .output()
        .unwrap()
    }
}

impl Drop for ClusterScript {
    fn drop(&mut self) {
        self.run(&["down"]);
    }
}

/// The first of `n` consecutive loopback ports that are free, each with its cluster bus port
/// (+10000) free too.
fn free_run(n: u16) -> u16 {
    let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    (0..200u32)
        .map(|i| 20_000 + (seed.wrapping_add(i * 7_919) % 20_000) as u16)
        .find(|base| (*base..base + n).all(|p| free(p) && free(p + 10_000)))
        .expect("free loopback ports")
}

/// Interrupted (SIGINT to the bench alone, not to its process group, as a supervisor sends
/// it), the bench stops the `redis-server` it started before it exits.
#[test]
fn an_interrupted_bench_stops_the_redis_server_it_started() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["bench", "w1", "--ops", "3000000"])
        .env_remove("REDIS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run strata");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("started redis-server on ")
                .map(str::to_owned)
        })
        .expect("the bench says where it started redis-server");
    // Whatever else it says is read, so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "{url} answers"
    );

    let signalled = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the bench did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(130), "{exit}");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "redis-server on {port} outlived the bench"
    );
}

/// Without `--redis`, each cache of `--cache both` runs on a `redis-server` started fresh for
/// it (`WORKLOADS.md`): one that held the first run's keys would answer the second for less.
#[test]
fn each_cache_of_a_pair_runs_on_a_server_started_for_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["bench", "w1", "--cache", "both", "--json"])
        .args(["--ops", "3000", "--warmup", "300"])
        .env_remove("REDIS_URL")
        .output()
        .expect("run strata");
    succeeded(&out);
    let runs = json_lines(&out);
    assert_eq!(runs.len(), 2, "{runs:?}");
    let ids: Vec<&str> = runs
        .iter()
        .map(|r| r["l2_server"]["run_id"].as_str().unwrap_or_default())
        .collect();
    assert!(ids.iter().all(|id| id.len() == 40), "{runs:?}");
    assert_ne!(ids[0], ids[1], "the second run's server is a new process");
    for run in &runs {
        assert_consistent(run);
        assert!(n(run, "/cpu/redis_s") > 0.0, "{run}");
    }
}
