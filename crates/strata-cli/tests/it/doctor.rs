//! `strata doctor` against real servers, configured right and wrong.

use std::process::Command;

use serde_json::Value;
use strata_testkit::{RedisCluster, RedisServer};

/// The permissions of `strata_redis`'s docs, "Permissions", for namespace `app`.
const APP_RULE: &str = "app on >pw ~app:* ~app#* &strata:invalidate:app &app#* -@all +get +mget +set +unlink +sadd +smembers +pttl +pexpire +incr +scan +publish +subscribe +evalsha +eval +script|load +ping +xadd +xread +xrange +xrevrange +spublish +ssubscribe +client|setname +info +hset +hgetall +hdel +client|tracking +client|id +hincrby +zincrby +zremrangebyrank +zrevrange +xgroup|create +xreadgroup +xautoclaim +xack +xdel +multi +exec +cluster|slots +cluster|nodes +srem +wait +exists +acl|whoami";

/// `strata doctor --json <args>`: exit code and the report.
fn doctor(url: &str, args: &[&str]) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["doctor", "--json", "--redis", url])
        .args(args)
        .output()
        .expect("run strata doctor");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "no JSON: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no check {name} in {report}"))
}

#[test]
fn a_server_set_up_right_passes_and_wrong_fails_with_the_fix() {
    let redis = RedisServer::options().acl_user(APP_RULE).start();
    redis.cli(&["CONFIG", "SET", "maxmemory", "256mb"]);
    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "volatile-lru"]);
    let app = redis.url_with_user("app", "pw");
    let (code, report) = doctor(&app, &["--namespace", "app"]);
    let memory = check(&report, "memory");
    assert_eq!(memory["verdict"], "ok", "{report}");
    let permissions = check(&report, "permissions");
    assert_eq!(permissions["verdict"], "ok", "{report}");
    assert!(
        permissions["finding"]
            .as_str()
            .unwrap()
            .contains("user app: app: every command Strata runs is allowed"),
        "{report}"
    );
    assert_eq!(check(&report, "version")["verdict"], "ok", "{report}");
    // No replica is worth a warning, not a failure.
    assert_eq!(check(&report, "replication")["verdict"], "warn", "{report}");
    assert_eq!(code, 0, "{report}");
    // The probes leave nothing behind.
    assert_eq!(redis.cli(&["DBSIZE"]).trim(), "0");

    // `noeviction` with a limit: at the limit every write is refused.
    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    let (code, report) = doctor(&app, &["--namespace", "app"]);
    let memory = check(&report, "memory");
    assert_eq!(memory["verdict"], "fail", "{report}");
    assert!(
        memory["fix"].as_str().unwrap().contains("volatile-lru"),
        "{report}"
    );
    assert_eq!(report["verdict"], "fail");
    assert_eq!(code, 1);

    // `allkeys-lru` may evict the log: a warning, an exit code 1 only with --strict.
    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    let (code, report) = doctor(&app, &["--namespace", "app"]);
    assert_eq!(check(&report, "memory")["verdict"], "warn", "{report}");
    assert_eq!(code, 0);
    let (code, _) = doctor(&app, &["--namespace", "app", "--strict"]);
    assert_eq!(code, 1);
}

#[test]
fn missing_permissions_are_named_with_the_acl_line_that_grants_them() {
    let without_evalsha = APP_RULE.replace(" +evalsha", "").replace(" +spublish", "");
    let redis = RedisServer::options().acl_user(without_evalsha).start();
    let (code, report) = doctor(
        &redis.url_with_user("app", "pw"),
        &["--namespace", "app", "--namespace", "other"],
    );
    let permissions = check(&report, "permissions");
    assert_eq!(permissions["verdict"], "fail", "{report}");
    let finding = permissions["finding"].as_str().unwrap();
    assert!(
        finding.contains("app: refused evalsha (command)"),
        "{finding}"
    );
    assert!(
        finding.contains("app: no pushed invalidations"),
        "{finding}"
    );
    // Another namespace's keys are out of reach: the key patterns are what is missing.
    assert!(finding.contains("other: refused set (key)"), "{finding}");
    let fix = permissions["fix"].as_str().unwrap();
    assert!(fix.contains("ACL SETUSER app +evalsha +spublish"), "{fix}");
    assert!(fix.contains("~other:* ~other#*"), "{fix}");
    assert_eq!(code, 1);
}

#[test]
fn a_cluster_is_checked_node_by_node() {
    let cluster = RedisCluster::start();
    let (_, report) = doctor(&cluster.url(), &["--namespace", "app"]);
    let state = check(&report, "cluster");
    assert_eq!(state["verdict"], "ok", "{report}");
    assert!(
        state["finding"]
            .as_str()
            .unwrap()
            .contains("state ok, 16384 of 16384"),
        "{report}"
    );
    assert!(
        check(&report, "version")["finding"]
            .as_str()
            .unwrap()
            .contains("cluster, 3 masters"),
        "{report}"
    );
    assert_eq!(check(&report, "replication")["verdict"], "ok", "{report}");
    assert_eq!(check(&report, "permissions")["verdict"], "ok", "{report}");
}

#[test]
fn an_unreachable_server_is_one_failed_check() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", free.local_addr().unwrap());
    drop(free);
    let (code, report) = doctor(&url, &[]);
    assert_eq!(check(&report, "connection")["verdict"], "fail", "{report}");
    assert_eq!(code, 1);
}
