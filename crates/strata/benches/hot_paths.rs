//! Micro-benchmarks of the hot paths, each beside the raw operation it wraps, in the same run:
//!
//! - `l1_hit`: `get_or_load` on a key in L1 vs `quick_cache::sync::Cache::get` (the map L1 is)
//!   of the same `Arc`;
//! - `l2_hit`: `get_or_load` with L1 disabled vs a raw Redis `GET` + JSON decode of the value;
//!   `l2_hit_busy`: the same two while the runtime's workers are kept busy (tasks that each
//!   compute for 50 µs, then go to the back of the run queue), as a service's are under load;
//! - `single_flight`: 64 concurrent `get_or_load` of a cold key (one load, 63 waiters) vs 64
//!   concurrent calls of the loader itself.
//!
//! `cargo bench -p strata-cache` (the L2 group starts a `redis-server` from PATH; skipped without).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};
use strata::{EntryOptions, HybridCache, L1};
use strata_redis::RedisStore;
use tokio::runtime::Runtime;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Product {
    id: u64,
    version: u64,
    name: String,
    price_cents: u64,
    tags: Vec<String>,
    body: String,
}

fn product() -> Product {
    Product {
        id: 42,
        version: 1,
        name: "product 42".into(),
        price_cents: 1999,
        tags: vec!["category:42".into()],
        body: "x".repeat(900),
    }
}

async fn load() -> Result<Product, std::io::Error> {
    Ok(product())
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn l1_hit(c: &mut Criterion) {
    let rt = runtime();
    let cache = rt.block_on(async {
        let cache = HybridCache::builder("bench").build().await.expect("cache");
        let _: Arc<Product> = cache.get_or_load("hot", load).await.expect("load");
        cache
    });
    // The map Strata's L1 is, with the same hasher, holding the same `Arc`.
    let raw: quick_cache::sync::Cache<
        String,
        Arc<Product>,
        quick_cache::UnitWeighter,
        foldhash::fast::RandomState,
    > = quick_cache::sync::Cache::with(
        10_000,
        10_000,
        quick_cache::UnitWeighter,
        foldhash::fast::RandomState::default(),
        quick_cache::sync::DefaultLifecycle::default(),
    );
    raw.insert("hot".to_owned(), Arc::new(product()));

    let mut g = c.benchmark_group("l1_hit");
    g.bench_function("strata get_or_load", |b| {
        b.to_async(&rt).iter(|| async {
            let p: Arc<Product> = cache.get_or_load("hot", load).await.expect("hit");
            p
        });
    });
    g.bench_function("quick_cache get", |b| {
        b.to_async(&rt)
            .iter(|| async { raw.get("hot").expect("hit") });
    });
    g.finish();
}

fn l2_hit(c: &mut Criterion) {
    let Ok(redis) = strata_testkit::RedisServer::options().try_start() else {
        eprintln!("l2_hit skipped: no redis-server on PATH");
        return;
    };
    let rt = runtime();
    let (cache, conn) = rt.block_on(async {
        let store = RedisStore::connect(&redis.url()).await.expect("redis");
        let cache = HybridCache::builder("bench")
            .l1(L1::disabled())
            .l2(store)
            .build()
            .await
            .expect("cache");
        let _: Arc<Product> = cache.get_or_load("warm", load).await.expect("load");
        let client = redis::Client::open(redis.url()).expect("url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("conn");
        let json = serde_json::to_vec(&product()).expect("json");
        let _: () = redis::cmd("SET")
            .arg("raw:warm")
            .arg(json)
            .query_async(&mut conn)
            .await
            .expect("set");
        (cache, conn)
    });

    for busy in [false, true] {
        // Busy workers: what a command waits for there is the run queue, not the server.
        let stop = Arc::new(AtomicBool::new(false));
        if busy {
            for _ in 0..BUSY_TASKS {
                rt.spawn(compute(stop.clone()));
            }
        }
        let name = if busy { "l2_hit_busy" } else { "l2_hit" };
        l2_group(c, name, &rt, &cache, &conn);
        stop.store(true, Ordering::Relaxed);
    }
    eprintln!("l2_hit stats: {:?}", cache.stats());
}

/// Tasks kept on the workers while `l2_hit_busy` runs.
const BUSY_TASKS: usize = 8;

/// Computes for 50 µs, then goes to the back of its worker's run queue, until `stop`.
async fn compute(stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_micros(50) {
            std::hint::spin_loop();
        }
        // A wake-up from inside its own poll puts a task at the back of the queue.
        let mut queued = false;
        std::future::poll_fn(|cx| {
            if std::mem::replace(&mut queued, true) {
                return std::task::Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        })
        .await;
    }
}

fn l2_group(
    c: &mut Criterion,
    name: &str,
    rt: &Runtime,
    cache: &HybridCache,
    conn: &redis::aio::MultiplexedConnection,
) {
    let mut g = c.benchmark_group(name);
    g.bench_function("strata get_or_load (L1 off)", |b| {
        b.to_async(rt).iter(|| async {
            let p: Arc<Product> = cache.get_or_load("warm", load).await.expect("hit");
            p
        });
    });
    g.bench_function("redis GET + JSON decode", |b| {
        b.to_async(rt).iter(|| {
            let mut conn = conn.clone();
            async move {
                let bytes: Vec<u8> = redis::cmd("GET")
                    .arg("raw:warm")
                    .query_async(&mut conn)
                    .await
                    .expect("get");
                serde_json::from_slice::<Product>(&bytes).expect("decode")
            }
        });
    });
    g.finish();
}

fn single_flight(c: &mut Criterion) {
    const CALLERS: usize = 64;
    let rt = runtime();
    let cache = rt.block_on(async { HybridCache::builder("bench").build().await.expect("cache") });
    let no_l2 = EntryOptions::ttl(Duration::from_secs(60)).skip_l2();
    let mut round = 0u64;

    let mut g = c.benchmark_group("single_flight");
    g.bench_function(
        BenchmarkId::new("strata get_or_load, cold key", CALLERS),
        |b| {
            b.to_async(&rt).iter(|| {
                round += 1;
                let key = format!("cold:{round}");
                let (cache, no_l2) = (cache.clone(), no_l2.clone());
                async move {
                    let callers: Vec<_> = (0..CALLERS)
                        .map(|_| {
                            let (cache, key, opts) = (cache.clone(), key.clone(), no_l2.clone());
                            tokio::spawn(async move {
                                cache
                                    .get_or_load_with::<Product, _, _, _>(&key, &opts, load)
                                    .await
                            })
                        })
                        .collect();
                    for c in callers {
                        c.await.expect("join").expect("value");
                    }
                }
            });
        },
    );
    g.bench_function(BenchmarkId::new("loader called directly", CALLERS), |b| {
        b.to_async(&rt).iter(|| async {
            let callers: Vec<_> = (0..CALLERS).map(|_| tokio::spawn(load())).collect();
            for c in callers {
                c.await.expect("join").expect("value");
            }
        });
    });
    g.finish();
}

criterion_group!(benches, l1_hit, l2_hit, single_flight);
criterion_main!(benches);
