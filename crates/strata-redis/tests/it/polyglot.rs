//! Rust and Python instances on one namespace (protocol v1, `docs/protocol.md`): each reads
//! what the other wrote, an invalidation in either language drops the other's L1, a stampede
//! over both loads once, and the staleness checker runs with Python processes among its
//! workers (one of them cut off).
//!
//! The Python instances are `clients/python/interop/worker.py`, run by the interpreter of the
//! client's virtualenv (`./scripts/test` makes it): `STRATA_PYTHON`, else
//! `clients/python/.venv/bin/python`. Without either these tests say so and pass, unless
//! `STRATA_REQUIRE_CLIENTS` is set (as `./scripts/test` does), which makes a missing client a
//! failure.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use strata::{Codec, EntryOptions, HybridCache};
use strata_testkit::RedisServer;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::checker::{PROCESSES, staleness_run};
use crate::{TTL, WAIT, instance};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python client's test worker.
pub(crate) fn python_worker() -> PathBuf {
    root().join("clients/python/interop/worker.py")
}

/// The interpreter with the Python client installed, if there is one.
fn python() -> Option<PathBuf> {
    let found = std::env::var_os("STRATA_PYTHON")
        .map(PathBuf::from)
        .or_else(|| Some(root().join("clients/python/.venv/bin/python")))
        .filter(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("STRATA_REQUIRE_CLIENTS").is_none(),
            "STRATA_REQUIRE_CLIENTS is set but the Python client is not installed: run ./scripts/test"
        );
        eprintln!("polyglot: skipped, no Python client (./scripts/test installs it)");
    }
    found
}

/// A Python cache instance in its own process, driven by JSON lines.
struct Python {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Python {
    async fn start(python: &PathBuf, redis: &RedisServer, namespace: &str) -> Python {
        let mut child = tokio::process::Command::new(python)
            .arg(python_worker())
            .args(["serve", &redis.url(), namespace])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("the Python worker starts");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut python = Python {
            _child: child,
            stdin,
            lines,
        };
        assert_eq!(python.reply().await["ready"], true);
        python
    }

    async fn reply(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(60), self.lines.next_line())
            .await
            .expect("the Python worker answers")
            .unwrap()
            .expect("the Python worker is alive");
        serde_json::from_str(&line).unwrap()
    }

    async fn call(&mut self, command: Value) -> Value {
        let mut line = command.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        let reply = self.reply().await;
        assert!(reply.get("error").is_none(), "{command} → {reply}");
        reply
    }
}

fn rust_loader(
    value: Value,
    calls: &Arc<AtomicU64>,
) -> impl FnOnce() -> std::future::Ready<Result<Value, std::io::Error>> + use<> {
    let calls = calls.clone();
    move || {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(value))
    }
}

async fn rust_instance(redis: &RedisServer) -> HybridCache {
    instance(redis, EntryOptions::ttl(TTL).tags(["t"])).await
}

/// Waits until `cache` applied `n` invalidations from others.
async fn received(cache: &HybridCache, n: u64) {
    tokio::time::timeout(WAIT, async {
        while cache.stats().invalidations_received < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the invalidation arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_written_in_each_language_are_read_by_the_other() {
    let Some(python) = python() else { return };
    let redis = RedisServer::start();
    let rust = rust_instance(&redis).await;
    let mut py = Python::start(&python, &redis, "svc").await;
    let calls = Arc::new(AtomicU64::new(0));
    let product = json!({"id": 42, "name": "teapot ☕", "tags": ["a", "b"], "price": 19.99});

    // Rust writes (JSON and MessagePack), Python reads without loading.
    let options = rust.default_entry_options().clone();
    rust.set("from-rust", product.clone(), &options)
        .await
        .unwrap();
    let msgpack = options.codec(Codec::MessagePack);
    rust.set("from-rust-mp", product.clone(), &msgpack)
        .await
        .unwrap();
    for key in ["from-rust", "from-rust-mp"] {
        let got = py
            .call(json!({"op": "get_or_load", "key": key, "value": "loaded in Python"}))
            .await;
        assert_eq!(got["value"], product, "{key}");
        assert_eq!(got["loaded"], 0, "{key}: read from Redis, not loaded");
    }

    // Python writes (JSON and MessagePack) and loads; Rust reads without loading.
    py.call(json!({"op": "set", "key": "from-python", "value": product}))
        .await;
    py.call(json!({"op": "set", "key": "from-python-mp", "value": product, "codec": "msgpack"}))
        .await;
    py.call(json!({"op": "get_or_load", "key": "loaded-by-python", "value": product}))
        .await;
    for key in ["from-python", "from-python-mp", "loaded-by-python"] {
        let got: Arc<Value> = rust
            .get_or_load(key, rust_loader(json!("loaded in Rust"), &calls))
            .await
            .unwrap();
        assert_eq!(*got, product, "{key}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "Rust loaded nothing");
    assert_eq!(rust.stats().decode_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_in_either_language_drops_the_other_s_l1() {
    let Some(python) = python() else { return };
    let redis = RedisServer::start();
    let rust = rust_instance(&redis).await;
    let mut py = Python::start(&python, &redis, "svc").await;
    let calls = Arc::new(AtomicU64::new(0));

    // A tag invalidated in Python drops Rust's L1 copy (and the Redis entry).
    let v1: Arc<Value> = rust
        .get_or_load("tagged", rust_loader(json!(1), &calls))
        .await
        .unwrap();
    assert_eq!(*v1, json!(1));
    py.call(json!({"op": "invalidate_tag", "tag": "t"})).await;
    received(&rust, 1).await;
    let v2: Arc<Value> = rust
        .get_or_load("tagged", rust_loader(json!(2), &calls))
        .await
        .unwrap();
    assert_eq!(*v2, json!(2), "Rust's L1 copy was dropped");
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // A key invalidated in Rust drops Python's L1 copy; so does a clear.
    let got = py
        .call(json!({"op": "get_or_load", "key": "k", "value": "old"}))
        .await;
    assert_eq!(got["value"], "old");
    rust.invalidate("k").await.unwrap();
    py.call(json!({"op": "wait_received", "n": 1})).await;
    let got = py
        .call(json!({"op": "get_or_load", "key": "k", "value": "new"}))
        .await;
    assert_eq!((&got["value"], &got["loaded"]), (&json!("new"), &json!(1)));
    rust.clear().await.unwrap();
    let got = py.call(json!({"op": "wait_received", "n": 2})).await;
    assert_eq!(got["received"], 2);
    let got = py
        .call(json!({"op": "get_or_load", "key": "k", "value": "newer"}))
        .await;
    assert_eq!(got["value"], "newer", "the clear dropped Python's L1");

    // A write-through in Python replaces what Rust holds in L1.
    let _: Arc<Value> = rust
        .get_or_load("w", rust_loader(json!("before"), &calls))
        .await
        .unwrap();
    py.call(json!({"op": "set", "key": "w", "value": "after"}))
        .await;
    received(&rust, 2).await;
    let got: Arc<Value> = rust
        .get_or_load("w", rust_loader(json!("loaded"), &calls))
        .await
        .unwrap();
    assert_eq!(*got, json!("after"));
}

/// W2 over two languages: 1,000 concurrent reads of a cold key, half in a Python process and
/// half in two Rust instances, a 50 ms load: one load in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stampede_over_rust_and_python_loads_once() {
    let Some(python) = python() else { return };
    let redis = RedisServer::start();
    let (a, b) = (rust_instance(&redis).await, rust_instance(&redis).await);
    let mut py = Python::start(&python, &redis, "svc").await;
    let calls = Arc::new(AtomicU64::new(0));
    let value = json!({"id": 7});
    let rust_reads = {
        let (calls, value) = (calls.clone(), value.clone());
        async move {
            let reads = (0..500).map(|i| {
                let cache = if i % 2 == 0 { a.clone() } else { b.clone() };
                let (calls, value) = (calls.clone(), value.clone());
                async move {
                    cache
                        .get_or_load("cold", move || async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Ok::<_, std::io::Error>(value)
                        })
                        .await
                }
            });
            futures_util::future::join_all(reads).await
        }
    };
    let python_reads = py.call(json!({
        "op": "stampede", "key": "cold", "reads": 500, "load_ms": 50, "value": value
    }));
    let (rust_results, python_result) = tokio::join!(rust_reads, python_reads);
    let python_loads = python_result["loader_calls"].as_u64().unwrap();
    let rust_loads = calls.load(Ordering::SeqCst);
    println!("W2 over Rust and Python: loads Rust {rust_loads}, Python {python_loads}");
    assert_eq!(
        rust_loads + python_loads,
        1,
        "one load across both languages"
    );
    assert!(
        rust_results
            .iter()
            .all(|r| r.as_ref().is_ok_and(|v| **v == value))
    );
    assert_eq!(python_result["errors"], json!([]));
    assert_eq!(python_result["distinct"], json!([value.to_string()]));
}

/// The staleness checker with two Rust and two Python processes, a Python one cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_python_processes_never_serve_past_the_staleness_bound() {
    let Some(python) = python() else { return };
    let pythons: [Option<PathBuf>; PROCESSES] = [None, Some(python.clone()), None, Some(python)];
    staleness_run(&pythons).await;
}
