//! `strata demo` end to end: five service processes, the gateway, Redis, PostgreSQL.

use std::process::Command;

use serde_json::Value;
use strata_testkit::{PostgresServer, RedisServer};

fn demo(extra: &[&str], path: Option<&str>) -> (Value, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
    command
        .args([
            "demo",
            "--seconds",
            "3",
            "--json",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(extra);
    if let Some(path) = path {
        command.env("PATH", path);
    }
    let out = command.output().expect("run strata demo");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    (report, stderr)
}

fn f(v: &Value, pointer: &str) -> f64 {
    v.pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{pointer} in {v}"))
}

/// The gateway, the product service and the order service served the repriced product
/// within the landscape's staleness bound (in practice, milliseconds).
fn new_price_served_within_the_bound(r: &Value) {
    for layer in ["gateway", "product service", "order service"] {
        let ms = f(r, &format!("/update/serving_new_price_after_ms/{layer}"));
        let bound = strata_demo::STALENESS_BOUND.as_secs_f64() * 1000.0;
        assert!(ms < bound, "{layer}: {ms} ms — {r}");
    }
}

/// The metric names in `text` (`strata_…`), a histogram's series named by their family.
fn metric_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("strata_"))
        .map(|w| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| w.strip_suffix(s))
                .unwrap_or(w)
                .to_owned()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Every metric the Grafana dashboard and the Prometheus alerts query is one the landscape's
/// processes exported in this run (a renamed metric fails here, not on a silent panel).
fn dashboards_and_alerts_name_exported_metrics(r: &Value) {
    let exported: Vec<&str> = r["metrics_exported"]
        .as_array()
        .unwrap_or_else(|| panic!("metrics_exported in {r}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}grafana/strata-landscape.json")).unwrap(),
    )
    .unwrap();
    let mut queries = String::new();
    let mut stack = vec![&dashboard];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(e)) = m.get("expr") {
                    queries.push_str(e);
                    queries.push('\n');
                }
                stack.extend(m.values());
            }
            Value::Array(a) => stack.extend(a),
            _ => {}
        }
    }
    let alerts = std::fs::read_to_string(format!("{root}prometheus/alerts.yml")).unwrap();
    for (file, text) in [("the dashboard", queries), ("the alerts", alerts)] {
        let named = metric_names(&text);
        assert!(named.len() >= 5, "{file} names {named:?}");
        for name in named {
            assert!(
                exported.contains(&name.as_str()),
                "{file} queries {name}, which no process exports: {exported:?}"
            );
        }
    }
}

#[test]
fn on_postgres_a_repriced_product_is_served_everywhere_within_the_bound_and_a_dead_inventory_degrades_orders_to_stale()
 {
    let redis = RedisServer::start();
    let pg = PostgresServer::start();
    let (r, stderr) = demo(
        &[
            "--redis",
            &redis.url(),
            "--database-url",
            &pg.url("postgres"),
        ],
        None,
    );
    assert_eq!(
        r.get("database"),
        Some(&Value::from("postgres")),
        "{stderr}"
    );
    assert_eq!(f(&r, "/errors"), 0.0, "{r}");
    assert!(f(&r, "/requests") > 100.0, "{r}");
    // Zipf over the catalogue: the ratio grows with the requests a 3-s run manages (0.47 at
    // 549 on a machine busy with the other tests, ~0.6 at 1,000); a gateway that cached
    // nothing would show 0.
    assert!(f(&r, "/gateway_cache/hit_ratio") > 0.3, "{r}");
    new_price_served_within_the_bound(&r);
    dashboards_and_alerts_name_exported_metrics(&r);
    let services = r.pointer("/services").and_then(Value::as_array).unwrap();
    assert_eq!(services.len(), 5);
    // The inventory service was killed after the load: every quote the order service gave
    // meanwhile was a 200 with a stock level — the last known one — not an error.
    assert!(f(&r, "/inventory_down/quotes") > 20.0, "{r}");
    assert_eq!(f(&r, "/inventory_down/errors"), 0.0, "{r}");
    assert_eq!(f(&r, "/inventory_down/units_unknown"), 0.0, "{r}");
    assert!(f(&r, "/inventory_down/stale_served") > 0.0, "{r}");
    assert_eq!(
        r.pointer("/inventory_down/breaker_opened"),
        Some(&Value::Bool(true)),
        "{r}"
    );
    // Restarted, it is called again: the breaker's probe closed it.
    assert!(
        f(&r, "/inventory_down/breaker_closed_after_restart_ms") < 15_000.0,
        "{r}"
    );
    // The landscape's data is in PostgreSQL, one database per service.
    for service in ["product", "inventory", "order"] {
        let db = format!("strata_{service}");
        assert!(
            pg.databases().contains(&db),
            "{db} not in {:?}",
            pg.databases()
        );
    }
    // Every process kept its counters in Redis: `strata stats` shows them across instances.
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["stats", "--redis", &redis.url()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    for namespace in ["gateway", "product", "order", "inventory"] {
        assert!(
            table.lines().any(|l| l.starts_with(namespace)),
            "{namespace} missing from:\n{table}"
        );
    }
}

#[test]
fn without_redis_it_runs_on_the_embedded_cache_and_says_so() {
    // A PATH without redis-server.
    let empty = tempfile::tempdir().unwrap();
    let (r, stderr) = demo(&[], empty.path().to_str());
    assert!(stderr.contains("no Redis"), "{stderr}");
    assert_eq!(r.get("redis"), Some(&Value::Bool(false)));
    assert_eq!(f(&r, "/errors"), 0.0, "{r}");
    // The gateway and the product service drop the old price at once (the update passed
    // through both); the order service learns of it by polling the product service's outbox
    // over HTTP: all three within the bound.
    new_price_served_within_the_bound(&r);
    assert_eq!(f(&r, "/inventory_down/errors"), 0.0, "{r}");
}

#[test]
fn on_a_redis_cluster_the_landscape_runs_and_stays_within_the_bound() {
    let cluster = strata_testkit::RedisCluster::start();
    let url = cluster.url();
    let (r, stderr) = demo(&["--redis", &url, "--no-outage"], None);
    assert_eq!(f(&r, "/errors"), 0.0, "{r}\n{stderr}");
    assert!(f(&r, "/requests") > 100.0, "{r}");
    // Zipf over the catalogue: the ratio grows with the requests a 3-s run manages (0.47 at
    // 549 on a machine busy with the other tests, ~0.6 at 1,000); a gateway that cached
    // nothing would show 0.
    assert!(f(&r, "/gateway_cache/hit_ratio") > 0.3, "{r}");
    // The price change travelled through the events (streams in one slot), the services'
    // logs and the gateway's, each on whichever master its slot lives.
    new_price_served_within_the_bound(&r);
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["stats", "--redis", &url])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    for namespace in ["gateway", "product", "order"] {
        assert!(
            table.lines().any(|l| l.starts_with(namespace)),
            "{namespace} missing from:\n{table}"
        );
    }
    // The services' hot keys, published with their stats, across the masters.
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["top", "--redis", &url, "--json", "--every", "1"])
        .output()
        .unwrap();
    let top: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
    });
    let names: Vec<&str> = top["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["namespace"].as_str())
        .collect();
    assert!(names.contains(&"gateway"), "{top}");
}
