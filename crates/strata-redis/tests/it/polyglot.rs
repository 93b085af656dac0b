//! Rust, Python and Node instances on one namespace (protocol v1, `docs/protocol.md`): each
//! reads what the others wrote, an invalidation in any language drops the others' L1, a
//! stampede over all three loads once, acknowledged writes wait for the instances of every
//! language, and the staleness checker runs with Python and Node processes among its workers
//! (one of them cut off).
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

use crate::checker::staleness_run;
use crate::{TTL, WAIT, acknowledging, instance, raw_connection};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// How a worker process of another language is started.
#[derive(Debug, Clone)]
pub(crate) enum Worker {
    /// This test binary (the Rust checker worker).
    Rust,
    /// `clients/python/interop/worker.py` under this interpreter.
    Python(PathBuf),
    /// `clients/node/dist/interop/worker.js` under this `node`.
    Node(PathBuf),
}

impl Worker {
    /// The Python client's virtualenv interpreter (`STRATA_PYTHON`, else
    /// `clients/python/.venv/bin/python`), if installed.
    fn python() -> Option<Worker> {
        let found = std::env::var_os("STRATA_PYTHON")
            .map(PathBuf::from)
            .or_else(|| Some(root().join("clients/python/.venv/bin/python")))
            .filter(|p| p.exists());
        required(found.map(Worker::Python), "Python")
    }

    /// `node`, if the Node client is built (`clients/node/dist`).
    fn node() -> Option<Worker> {
        let built = root().join("clients/node/dist/interop/worker.js").exists();
        let node =
            std::env::var_os("STRATA_NODE").map_or_else(|| PathBuf::from("node"), PathBuf::from);
        let runs = std::process::Command::new(&node)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        required((built && runs).then_some(Worker::Node(node)), "Node")
    }

    /// The command running this worker in `mode` (`serve` or `checker`).
    pub(crate) fn command(&self, mode: &str) -> tokio::process::Command {
        let (program, script) = match self {
            Worker::Rust => unreachable!("the Rust worker is this test binary"),
            Worker::Python(python) => (
                python.clone(),
                root().join("clients/python/interop/worker.py"),
            ),
            Worker::Node(node) => (
                node.clone(),
                root().join("clients/node/dist/interop/worker.js"),
            ),
        };
        let mut command = tokio::process::Command::new(program);
        command.arg(script).arg(mode);
        command
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Worker::Rust => "rust",
            Worker::Python(_) => "python",
            Worker::Node(_) => "node",
        }
    }
}

/// `worker`, or a skip (said on stderr) — a failure when `STRATA_REQUIRE_CLIENTS` is set.
fn required(worker: Option<Worker>, language: &str) -> Option<Worker> {
    if worker.is_none() {
        assert!(
            std::env::var_os("STRATA_REQUIRE_CLIENTS").is_none(),
            "STRATA_REQUIRE_CLIENTS is set but the {language} client is not installed: run ./scripts/test"
        );
        eprintln!("polyglot: skipped, no {language} client (./scripts/test installs it)");
    }
    worker
}

/// The Python and the Node worker, or `None` (skip) when either is missing.
fn others() -> Option<(Worker, Worker)> {
    Some((Worker::python()?, Worker::node()?))
}

/// A cache instance in another language, in its own process, driven by JSON lines.
struct Peer {
    name: &'static str,
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Peer {
    async fn start(worker: &Worker, redis: &RedisServer, namespace: &str) -> Peer {
        Self::start_at(worker, &redis.url(), namespace).await
    }

    /// A peer on the Redis (or cluster) at `url`.
    async fn start_at(worker: &Worker, url: &str, namespace: &str) -> Peer {
        Self::start_with(worker, url, namespace, &[]).await
    }

    /// A peer started with more arguments (`acknowledged`: acknowledged writes).
    async fn start_with(worker: &Worker, url: &str, namespace: &str, more: &[&str]) -> Peer {
        let mut child = worker
            .command("serve")
            .args([url, namespace])
            .args(more)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("the worker starts");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut peer = Peer {
            name: worker.name(),
            child,
            stdin,
            lines,
        };
        assert_eq!(
            peer.reply().await["ready"],
            true,
            "{} worker ready",
            peer.name
        );
        peer
    }

    async fn reply(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(60), self.lines.next_line())
            .await
            .expect("the worker answers")
            .unwrap()
            .expect("the worker is alive");
        serde_json::from_str(&line).unwrap()
    }

    /// Sends the process `signal` (`STOP`: frozen, its sockets open and nothing answered;
    /// `CONT`: thawed).
    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the worker runs");
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// One of the peer's counters (Python's name, or Node's camelCase of it).
    async fn stat(&mut self, name: &str) -> u64 {
        let stats = self.call(json!({"op": "stats"})).await["stats"].take();
        let camel = name
            .split('_')
            .enumerate()
            .map(|(i, w)| {
                if i == 0 {
                    w.to_owned()
                } else {
                    w[..1].to_uppercase() + &w[1..]
                }
            })
            .collect::<String>();
        stats
            .get(name)
            .or_else(|| stats.get(&camel))
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("{}: no counter {name} in {stats}", self.name))
    }

    async fn call(&mut self, command: Value) -> Value {
        let reply = self.try_call(command.clone()).await;
        assert!(
            reply.get("error").is_none(),
            "{}: {command} → {reply}",
            self.name
        );
        reply
    }

    /// The reply to `command`, an error (`{"error": …}`) included.
    async fn try_call(&mut self, command: Value) -> Value {
        let mut line = command.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.reply().await
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
    strata_testkit::eventually(
        "the invalidations from the other languages",
        WAIT,
        || async { cache.stats().invalidations_received >= n },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_written_in_each_language_are_read_by_the_others() {
    let Some((python, node)) = others() else {
        return;
    };
    let redis = RedisServer::start();
    let rust = rust_instance(&redis).await;
    let mut peers = [
        Peer::start(&python, &redis, "svc").await,
        Peer::start(&node, &redis, "svc").await,
    ];
    let calls = Arc::new(AtomicU64::new(0));
    let product = json!({"id": 42, "name": "teapot ☕", "tags": ["a", "b"], "price": 19.99});

    // Rust writes (JSON and MessagePack); the others read without loading.
    let options = rust.default_entry_options().clone();
    rust.set("from-rust", product.clone(), &options)
        .await
        .unwrap();
    let msgpack = options.codec(Codec::MessagePack);
    rust.set("from-rust-mp", product.clone(), &msgpack)
        .await
        .unwrap();
    // Each other language writes (JSON, MessagePack) and loads a key of its own.
    for peer in &mut peers {
        let n = peer.name;
        peer.call(json!({"op": "set", "key": format!("from-{n}"), "value": product}))
            .await;
        peer.call(json!({"op": "set", "key": format!("from-{n}-mp"), "value": product, "codec": "msgpack"}))
            .await;
        peer.call(json!({"op": "get_or_load", "key": format!("loaded-by-{n}"), "value": product}))
            .await;
    }
    let written: Vec<String> = ["rust", "python", "node"]
        .iter()
        .flat_map(|n| [format!("from-{n}"), format!("from-{n}-mp")])
        .chain(["python", "node"].iter().map(|n| format!("loaded-by-{n}")))
        .collect();
    for key in &written {
        let got: Arc<Value> = rust
            .get_or_load(key, rust_loader(json!("loaded in Rust"), &calls))
            .await
            .unwrap();
        assert_eq!(*got, product, "Rust reads {key}");
        for peer in &mut peers {
            let got = peer
                .call(json!({"op": "get_or_load", "key": key, "value": "loaded here"}))
                .await;
            assert_eq!(got["value"], product, "{} reads {key}", peer.name);
            assert_eq!(got["loaded"], 0, "{} read {key} from Redis", peer.name);
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "Rust loaded nothing");
    assert_eq!(rust.stats().decode_errors, 0);

    // An entry of a newer envelope format is a miss in every language, counted, never misread.
    let mut conn = raw_connection(&redis).await;
    let mut future: Vec<u8> = redis::cmd("GET")
        .arg("svc:from-rust")
        .query_async(&mut conn)
        .await
        .unwrap();
    future[3] = 2;
    for name in ["rust", "python", "node"] {
        let () = redis::cmd("SET")
            .arg(format!("svc:future-{name}"))
            .arg(&future)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let got: Arc<Value> = rust
        .get_or_load("future-rust", rust_loader(json!("reloaded"), &calls))
        .await
        .unwrap();
    assert_eq!(*got, json!("reloaded"));
    assert_eq!(rust.stats().decode_errors, 1);
    for peer in &mut peers {
        let key = format!("future-{}", peer.name);
        let got = peer
            .call(json!({"op": "get_or_load", "key": key, "value": "reloaded"}))
            .await;
        assert_eq!(
            (&got["value"], &got["loaded"]),
            (&json!("reloaded"), &json!(1)),
            "{}",
            peer.name
        );
        assert_eq!(peer.stat("decode_errors").await, 1, "{}", peer.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_in_any_language_drops_the_others_l1() {
    let Some((python, node)) = others() else {
        return;
    };
    let redis = RedisServer::start();
    let rust = rust_instance(&redis).await;
    let mut py = Peer::start(&python, &redis, "svc").await;
    let mut js = Peer::start(&node, &redis, "svc").await;
    let calls = Arc::new(AtomicU64::new(0));

    // A tag invalidated in Python drops Rust's and Node's L1 copies.
    let v1: Arc<Value> = rust
        .get_or_load("tagged", rust_loader(json!(1), &calls))
        .await
        .unwrap();
    assert_eq!(*v1, json!(1));
    let got = js
        .call(json!({"op": "get_or_load", "key": "js-tagged", "value": 1, "tags": ["t"]}))
        .await;
    assert_eq!(got["loaded"], 1);
    py.call(json!({"op": "invalidate_tag", "tag": "t"})).await;
    received(&rust, 1).await;
    js.call(json!({"op": "wait_received", "n": 1})).await;
    let v2: Arc<Value> = rust
        .get_or_load("tagged", rust_loader(json!(2), &calls))
        .await
        .unwrap();
    assert_eq!(*v2, json!(2), "Rust's L1 copy was dropped");
    let got = js
        .call(json!({"op": "get_or_load", "key": "js-tagged", "value": 2, "tags": ["t"]}))
        .await;
    assert_eq!(
        (&got["value"], &got["loaded"]),
        (&json!(2), &json!(1)),
        "Node's copy was dropped"
    );

    // A key invalidated in Rust drops Python's and Node's copies; so does a clear.
    for peer in [&mut py, &mut js] {
        let key = format!("k-{}", peer.name);
        let got = peer
            .call(json!({"op": "get_or_load", "key": key, "value": "old"}))
            .await;
        assert_eq!(got["value"], "old");
        rust.invalidate(&key).await.unwrap();
    }
    // Python heard two keys (the tag was its own: not counted); Node the tag and two keys.
    for (peer, n) in [(&mut py, 2), (&mut js, 3)] {
        peer.call(json!({"op": "wait_received", "n": n})).await;
        let key = format!("k-{}", peer.name);
        let got = peer
            .call(json!({"op": "get_or_load", "key": key, "value": "new"}))
            .await;
        assert_eq!(
            (&got["value"], &got["loaded"]),
            (&json!("new"), &json!(1)),
            "{}",
            peer.name
        );
    }
    rust.clear().await.unwrap();
    for (peer, n) in [(&mut py, 3), (&mut js, 4)] {
        let got = peer.call(json!({"op": "wait_received", "n": n})).await;
        assert_eq!(got["received"], n, "{}", peer.name);
        let key = format!("k-{}", peer.name);
        let got = peer
            .call(json!({"op": "get_or_load", "key": key, "value": "newer"}))
            .await;
        assert_eq!(
            got["value"], "newer",
            "the clear dropped {}'s L1",
            peer.name
        );
    }

    // A write-through in Node replaces what Rust and Python hold in L1.
    let _: Arc<Value> = rust
        .get_or_load("w", rust_loader(json!("before"), &calls))
        .await
        .unwrap();
    py.call(json!({"op": "get_or_load", "key": "w", "value": "before"}))
        .await;
    js.call(json!({"op": "set", "key": "w", "value": "after"}))
        .await;
    received(&rust, 2).await;
    let got: Arc<Value> = rust
        .get_or_load("w", rust_loader(json!("loaded"), &calls))
        .await
        .unwrap();
    assert_eq!(*got, json!("after"));
    py.call(json!({"op": "wait_received", "n": 4})).await;
    let got = py
        .call(json!({"op": "get_or_load", "key": "w", "value": "loaded"}))
        .await;
    assert_eq!(
        (&got["value"], &got["loaded"]),
        (&json!("after"), &json!(0))
    );
}

/// Acknowledged writes across languages (`docs/protocol.md` §4): every instance keeps its
/// field, a write in any language returns once the others applied it, and one frozen instance
/// (SIGSTOP: its field still says it is alive) holds every other language's writes up to their
/// bound, counted, until it is thawed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_wait_for_the_instances_of_every_language() {
    let Some((python, node)) = others() else {
        return;
    };
    let redis = RedisServer::start();
    let config = strata_redis::RedisConfig::from_url(&redis.url()).unwrap();
    let rust = acknowledging(&config).await;
    let mut py = Peer::start_with(&python, &redis.url(), "svc", &["acknowledged"]).await;
    let mut js = Peer::start_with(&node, &redis.url(), "svc", &["acknowledged"]).await;
    let mut conn = raw_connection(&redis).await;
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg("svc#acks")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(fields.len(), 3, "one field per instance: {fields:?}");

    // A write in each language is applied by the other two before it returns.
    let writers = ["rust", "python", "node"];
    for (i, writer) in writers.into_iter().enumerate() {
        let key = format!("by-{writer}");
        py.call(json!({"op": "get_or_load", "key": key, "value": 1}))
            .await;
        js.call(json!({"op": "get_or_load", "key": key, "value": 1}))
            .await;
        let calls = Arc::new(AtomicU64::new(0));
        let _: Arc<Value> = rust
            .get_or_load(&key, rust_loader(json!(1), &calls))
            .await
            .unwrap();
        match writer {
            "rust" => rust.invalidate(&key).await.unwrap(),
            "python" => drop(py.call(json!({"op": "invalidate", "key": key})).await),
            _ => drop(js.call(json!({"op": "invalidate", "key": key})).await),
        }
        let (py_got, js_got) = (
            py.stat("invalidations_received").await,
            js.stat("invalidations_received").await,
        );
        let rust_got = rust.stats().invalidations_received;
        // Each has received the writes so far of the two other languages.
        let expected = |lang: &str| writers[..=i].iter().filter(|w| **w != lang).count() as u64;
        assert_eq!(
            (rust_got, py_got, js_got),
            (expected("rust"), expected("python"), expected("node")),
            "after {writer}'s write (rust, python, node received)"
        );
    }
    assert_eq!(rust.stats().writes_unacknowledged, 0);
    assert_eq!(py.stat("writes_unacknowledged").await, 0);
    assert_eq!(js.stat("writes_unacknowledged").await, 0);

    // Python frozen: Rust's and Node's writes wait for it (up to their bound of 1 s).
    py.signal("STOP");
    rust.invalidate("k").await.unwrap();
    js.call(json!({"op": "invalidate", "key": "k"})).await;
    py.signal("CONT");
    assert_eq!(rust.stats().writes_unacknowledged, 1);
    assert_eq!(js.stat("writes_unacknowledged").await, 1);
    // Node frozen: Python's write waits for it.
    js.signal("STOP");
    py.call(json!({"op": "invalidate", "key": "k"})).await;
    js.signal("CONT");
    assert_eq!(py.stat("writes_unacknowledged").await, 1);
    // Thawed, they acknowledge again: the next writes are not held up.
    rust.invalidate("k").await.unwrap();
    py.call(json!({"op": "invalidate", "key": "k"})).await;
    js.call(json!({"op": "invalidate", "key": "k"})).await;
    assert_eq!(rust.stats().writes_unacknowledged, 1);
    assert_eq!(py.stat("writes_unacknowledged").await, 1);
    assert_eq!(js.stat("writes_unacknowledged").await, 1);
}

/// Through Sentinel (`redis+sentinel://…/<master>`), Python and Node instances share the
/// namespace with Rust's, and follow a failover beside it: the master is killed, reads are
/// answered all along, each language's writes reach the promoted replica, and an invalidation
/// there reaches the others' L1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_sentinel_three_languages_follow_a_failover() {
    let Some((python, node)) = others() else {
        return;
    };
    let (mut master, replica, sentinels) = crate::sentinel::group().await;
    let url = crate::sentinel::url_of(&sentinels);
    let config = strata_redis::RedisConfig::from_url(&url).unwrap();
    let rust = crate::instance_with(&config, EntryOptions::ttl(TTL)).await;
    let mut peers = [
        Peer::start_at(&python, &url, "svc").await,
        Peer::start_at(&node, &url, "svc").await,
    ];
    for peer in &mut peers {
        let key = format!("before-{}", peer.name);
        peer.call(json!({"op": "set", "key": key, "value": 1}))
            .await;
        assert!(
            master
                .cli(&["EXISTS", &format!("svc:{key}")])
                .ends_with('1'),
            "{} wrote to the master",
            peer.name
        );
    }

    master.kill();
    for peer in &mut peers {
        // Reads are answered all along (from L1, else the loader); writes fail until the
        // sentinels name the replica and the client finds it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        // Each failed write's answer, counted: what a failure reports besides the last one.
        let mut failed = std::collections::BTreeMap::<String, u32>::new();
        for n in 0.. {
            let key = format!("after-{}-{n}", peer.name);
            let read = peer
                .call(json!({"op": "get_or_load", "key": key, "value": n}))
                .await;
            assert_eq!(
                read["value"],
                json!(n),
                "{} reads during the failover",
                peer.name
            );
            let wrote = peer
                .try_call(json!({"op": "set", "key": key, "value": n}))
                .await;
            if wrote.get("error").is_none()
                && replica
                    .cli(&["EXISTS", &format!("svc:{key}")])
                    .ends_with('1')
            {
                break;
            }
            let answer = wrote
                .get("error")
                .map_or("written, not on the replica", |e| {
                    e.as_str().unwrap_or("an error")
                });
            // The key's number varies; the rest of the message is what to count.
            let answer = answer.replace(&key, "<key>");
            *failed.entry(answer).or_default() += 1;
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: no write reached the promoted replica in 30 s (answers: {failed:?})",
                peer.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(
        replica.cli(&["ROLE"]).starts_with("master"),
        "the replica was promoted"
    );

    // After the failover an invalidation in Python reaches Rust's and Node's L1 (their
    // followers found the new master too).
    let calls = Arc::new(AtomicU64::new(0));
    let _: Arc<Value> = rust
        .get_or_load("shared", rust_loader(json!(1), &calls))
        .await
        .unwrap();
    let [py, js] = &mut peers;
    js.call(json!({"op": "get_or_load", "key": "shared", "value": 1}))
        .await;
    let (rust_before, js_before) = (
        rust.stats().invalidations_received,
        js.stat("invalidations_received").await,
    );
    py.call(json!({"op": "invalidate", "key": "shared"})).await;
    received(&rust, rust_before + 1).await;
    let got = js
        .call(json!({"op": "wait_received", "n": js_before + 1}))
        .await;
    assert!(got["received"].as_u64() >= Some(js_before + 1), "{got}");
    let again: Arc<Value> = rust
        .get_or_load("shared", rust_loader(json!(2), &calls))
        .await
        .unwrap();
    assert_eq!(*again, json!(2), "Rust's copy was dropped");
    let got = js
        .call(json!({"op": "get_or_load", "key": "shared", "value": 2}))
        .await;
    assert_eq!(got["value"], json!(2), "Node's copy was dropped");
}

/// W2 over three languages: 1,000 concurrent reads of a cold key — 334 in two Rust instances,
/// 333 in a Python process, 333 in a Node process — with a 50 ms load: one load in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stampede_over_rust_python_and_node_loads_once() {
    let Some((python, node)) = others() else {
        return;
    };
    let redis = RedisServer::start();
    let (a, b) = (rust_instance(&redis).await, rust_instance(&redis).await);
    let mut py = Peer::start(&python, &redis, "svc").await;
    let mut js = Peer::start(&node, &redis, "svc").await;
    let calls = Arc::new(AtomicU64::new(0));
    let value = json!({"id": 7});
    let rust_reads = {
        let (calls, value) = (calls.clone(), value.clone());
        async move {
            let reads = (0..334).map(|i| {
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
    let stampede =
        json!({"op": "stampede", "key": "cold", "reads": 333, "load_ms": 50, "value": value});
    let (rust_results, python_result, node_result) = tokio::join!(
        rust_reads,
        py.call(stampede.clone()),
        js.call(stampede.clone())
    );
    let rust_loads = calls.load(Ordering::SeqCst);
    let python_loads = python_result["loader_calls"].as_u64().unwrap();
    let node_loads = node_result["loader_calls"].as_u64().unwrap();
    println!(
        "W2 over three languages: loads Rust {rust_loads}, Python {python_loads}, Node {node_loads}"
    );
    assert_eq!(
        rust_loads + python_loads + node_loads,
        1,
        "one load across the languages"
    );
    assert!(
        rust_results
            .iter()
            .all(|r| r.as_ref().is_ok_and(|v| **v == value))
    );
    for result in [&python_result, &node_result] {
        assert_eq!(result["errors"], json!([]));
        assert_eq!(result["distinct"], json!([value.to_string()]));
    }
}

/// The staleness checker over Rust, Python and Node processes (random reads and writes over
/// 100 keys for 20 s), a Python one cut off for 3 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_languages_never_serve_past_the_staleness_bound_python_cut_off() {
    let Some((python, node)) = others() else {
        return;
    };
    staleness_run(&[Worker::Rust, python.clone(), node, python], 100).await;
}

/// The same with a Node process cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_languages_never_serve_past_the_staleness_bound_node_cut_off() {
    let Some((python, node)) = others() else {
        return;
    };
    staleness_run(&[python, Worker::Rust, node.clone(), node], 100).await;
}

/// One case on a real Redis Cluster (3 masters, 3 replicas): the three languages read what each
/// other wrote, a stampede over them loads once, and a tag invalidated in Python drops the Rust
/// and Node copies — the cluster's layout (hash tags, per-slot scripts, the log's slot) spoken
/// alike by all three.
#[cfg(feature = "cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_three_languages_share_a_namespace() {
    let Some((python, node)) = others() else {
        return;
    };
    let _one = crate::HEAVY.lock().await;
    let cluster = strata_testkit::RedisCluster::start();
    let config = strata_redis::RedisConfig::from_url(&cluster.url()).unwrap();
    let rust = crate::instance_with(&config, EntryOptions::ttl(TTL).tags(["t"])).await;
    let mut py = Peer::start_at(&python, &cluster.url(), "svc").await;
    let mut js = Peer::start_at(&node, &cluster.url(), "svc").await;
    let calls = Arc::new(AtomicU64::new(0));

    // A stampede over the three languages: one load.
    let rust_reads = {
        let (rust, calls) = (rust.clone(), calls.clone());
        async move {
            futures_util::future::join_all((0..100).map(|_| {
                let (rust, calls) = (rust.clone(), calls.clone());
                async move {
                    rust.get_or_load("cold", move || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, std::io::Error>(json!({"id": 7}))
                    })
                    .await
                }
            }))
            .await
        }
    };
    let stampede = json!({"op": "stampede", "key": "cold", "reads": 100, "load_ms": 50, "value": {"id": 7}, "tags": ["t"]});
    let (rust_results, p, n) = tokio::join!(
        rust_reads,
        py.call(stampede.clone()),
        js.call(stampede.clone())
    );
    let loads = calls.load(Ordering::SeqCst)
        + p["loader_calls"].as_u64().unwrap()
        + n["loader_calls"].as_u64().unwrap();
    println!("W2 on a cluster over three languages: {loads} load(s)");
    assert_eq!(loads, 1, "one load across the languages on a cluster");
    assert!(rust_results.iter().all(Result::is_ok));

    // Each reads what another wrote.
    py.call(json!({"op": "set", "key": "from-python", "value": "py", "tags": ["t"]}))
        .await;
    js.call(json!({"op": "set", "key": "from-node", "value": "js", "tags": ["t"]}))
        .await;
    let got: Arc<Value> = rust
        .get_or_load("from-python", rust_loader(json!("x"), &calls))
        .await
        .unwrap();
    assert_eq!(*got, json!("py"));
    let got: Arc<Value> = rust
        .get_or_load("from-node", rust_loader(json!("x"), &calls))
        .await
        .unwrap();
    assert_eq!(*got, json!("js"));
    let got = js
        .call(json!({"op": "get_or_load", "key": "from-python", "value": "x"}))
        .await;
    assert_eq!((&got["value"], &got["loaded"]), (&json!("py"), &json!(0)));

    // A tag invalidated in Python drops the Rust and Node copies (L1 and Redis).
    let received = rust.stats().invalidations_received;
    py.call(json!({"op": "invalidate_tag", "tag": "t"})).await;
    crate::polyglot::received(&rust, received + 1).await;
    let got: Arc<Value> = rust
        .get_or_load("from-node", rust_loader(json!("reloaded"), &calls))
        .await
        .unwrap();
    assert_eq!(*got, json!("reloaded"), "Rust's copy was dropped");
    // Node heard Python's write and its tag (its own write is not counted).
    let got = js.call(json!({"op": "wait_received", "n": 2})).await;
    assert_eq!(got["received"], 2, "{got}");
    let got = js
        .call(json!({"op": "get_or_load", "key": "from-python", "value": "reloaded"}))
        .await;
    assert_eq!(got["value"], json!("reloaded"), "Node's copy was dropped");
}

/// On a cluster a Python or a Node write is confirmed by a replica of its master, as a Rust one
/// is (`docs/protocol.md` §4): one `WAIT` where the key and the log share a master, one on each
/// otherwise, one per master a tag's members live on — and on the connection that wrote: with
/// the key's replica frozen, the write waits the replica wait (50 ms) out, where a `WAIT` sent
/// on another connection would have had nothing of this write to wait for.
#[cfg(feature = "cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_writes_in_every_language_wait_for_a_replica() {
    use crate::cluster::{master_of, replicas_in_sync, reset_stats, waits_on};
    let Some((python, node)) = others() else {
        return;
    };
    let _one = crate::HEAVY.lock().await;
    let cluster = strata_testkit::RedisCluster::start();
    replicas_in_sync(&cluster).await;
    let topology = cluster.topology();
    let master = |key: &str| master_of(&cluster, &topology, key);
    let log_master = master("svc#log{svc}").port;
    let keys = |same: bool| -> Vec<String> {
        (0..200)
            .map(|i| format!("k{i}"))
            .filter(|k| (master(&format!("svc:{k}")).port == log_master) == same)
            .take(10)
            .collect()
    };
    let waits = || waits_on(&cluster, log_master);
    let reset = || reset_stats(&cluster);
    let elsewhere = keys(false);
    let data_master = master(&format!("svc:{}", elsewhere[0]));
    let replica = topology
        .iter()
        .find(|n| n.master_id.as_deref() == Some(data_master.id.as_str()))
        .map(|n| cluster.index_of(n.port))
        .expect("the master's replica");

    for worker in [python, node] {
        let mut peer = Peer::start_at(&worker, &cluster.url(), "svc").await;
        let name = peer.name;
        // A first write: the log's master learns the append's script (refused by SHA1, then
        // sent with its text — a second `WAIT` beside the refused call).
        peer.call(json!({"op": "invalidate", "key": "warm-up"}))
            .await;
        reset();
        for key in keys(true) {
            peer.call(json!({"op": "invalidate", "key": key})).await;
        }
        assert_eq!(
            waits(),
            (10, 0),
            "{name}: one WAIT per write on the log's master"
        );
        reset();
        for key in &elsewhere {
            peer.call(json!({"op": "invalidate", "key": key})).await;
        }
        assert_eq!(waits(), (10, 10), "{name}: one on each master");
        reset();
        for key in keys(true) {
            peer.call(json!({"op": "set", "key": key, "value": 1}))
                .await;
        }
        assert_eq!(waits(), (10, 0), "{name}: a write-through the same");

        // A tag over keys on every master: one WAIT per master for its members, one for the
        // entry.
        for key in keys(true).iter().chain(&elsewhere) {
            peer.call(json!({"op": "set", "key": key, "value": 1, "tags": ["t"]}))
                .await;
        }
        let members_masters = keys(true)
            .iter()
            .chain(&elsewhere)
            .map(|k| master(&format!("svc:{k}")).port)
            .collect::<std::collections::HashSet<_>>()
            .len() as u64;
        reset();
        peer.call(json!({"op": "invalidate_tag", "tag": "t"})).await;
        let (on_log, others) = waits();
        assert_eq!(
            on_log + others,
            members_masters + 1,
            "{name}: one WAIT per master of the tag's members, one for the entry"
        );

        // The replica of the key's master, once it has acknowledged all it was sent, frozen:
        // the write (an invalidation of a key there: a change to replicate) waits for it — a
        // `WAIT` on another connection, or before the write, would find nothing
        // unacknowledged to wait for.
        peer.call(json!({"op": "set", "key": elsewhere[0], "value": 2}))
            .await;
        let data = cluster.node(cluster.index_of(data_master.port));
        strata_testkit::eventually("the replica to acknowledge all it has", WAIT, || async {
            let info = data.cli(&["INFO", "replication"]);
            let field = |name: &str| {
                info.split([',', '\n', '\r'])
                    .find_map(|f| f.strip_prefix(name))
                    .map(str::to_owned)
            };
            field("offset=").is_some() && field("offset=") == field("master_repl_offset:")
        })
        .await;
        cluster.node(replica).freeze();
        let started = std::time::Instant::now();
        peer.call(json!({"op": "invalidate", "key": elsewhere[0]}))
            .await;
        let took = started.elapsed();
        cluster.node(replica).thaw();
        assert!(
            took >= Duration::from_millis(50),
            "{name}: the write waited for the frozen replica on its own connection ({took:?})"
        );
        replicas_in_sync(&cluster).await;
    }
}
