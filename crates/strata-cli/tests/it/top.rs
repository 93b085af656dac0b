//! `strata top` against a Redis where instances publish their hot keys (here written as a
//! `StatsReporter` writes them: the sets and hashes of the protocol, by a stand-in).

use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;
use strata_testkit::RedisServer;

fn top(redis: &RedisServer, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["top", "--redis", &redis.url(), "--every", "1"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run strata top")
}

/// While `run` runs, publishes reads as instances would, every 20 ms: `hot` 90 and `warm`
/// 10 of each 100 reads of `svc`; `cold` only before.
fn publishing<T>(redis: &RedisServer, run: impl FnOnce() -> T) -> T {
    redis.cli(&["ZINCRBY", "svc#hot", "5000", "cold"]);
    redis.cli(&["HINCRBY", "svc#stats", "l1_hits", "5000"]);
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (stop, port) = (stop.clone(), redis.port().to_string());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let script = "ZINCRBY svc#hot 90 hot\nZINCRBY svc#hot 10 warm\nHINCRBY svc#stats l1_hits 100\n";
                let mut cli = Command::new("redis-cli")
                    .args(["-p", &port])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap();
                use std::io::Write;
                cli.stdin
                    .take()
                    .unwrap()
                    .write_all(script.as_bytes())
                    .unwrap();
                cli.wait().unwrap();
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        })
    };
    let out = run();
    stop.store(true, Ordering::SeqCst);
    publisher.join().unwrap();
    out
}

#[test]
fn json_ranks_by_the_reads_of_the_interval() {
    let redis = RedisServer::start();
    let out = publishing(&redis, || top(&redis, &["--json"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ns = &v["namespaces"][0];
    assert_eq!(ns["namespace"], "svc");
    let keys: Vec<&str> = ns["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap())
        .collect();
    // `cold` has the most reads in total, but none over the interval.
    assert_eq!(keys, ["hot", "warm"], "{v}");
    let share = ns["keys"][0]["share"].as_f64().unwrap();
    assert!((0.8..=1.0).contains(&share), "hot's share {share}");
    assert!(ns["keys"][0]["reads_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["interval_s"].as_f64().unwrap() >= 1.0);
}

#[test]
fn the_table_names_the_namespace_and_its_hot_keys() {
    let redis = RedisServer::start();
    let out = publishing(&redis, || top(&redis, &["--once", "--namespace", "svc"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("svc  "), "{table}");
    let first = table.lines().nth(2).unwrap_or_default();
    assert!(first.trim_start().starts_with("1  hot"), "{table}");
    assert!(!table.contains("cold"), "{table}");

    let empty = top(&RedisServer::start(), &["--once"]);
    assert!(empty.status.success());
    assert!(String::from_utf8_lossy(&empty.stdout).starts_with("no hot keys in Redis yet"));
}
