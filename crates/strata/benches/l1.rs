//! The L1 candidates on the W1 stream itself (`../shared/WORKLOADS.md`): moka (configured as
//! Strata used it until quick_cache replaced it: TinyLFU, per-entry expiry, invalidation
//! closures), quick_cache (Strata's L1 now), and a sharded S3-FIFO map of our own
//! (`benches/l1/s3fifo.rs`).
//!
//! Each replays W1's operations (100,000 warm-up, 1,000,000 measured; 10,000 entries): a read
//! is a `get`, and on a miss an `insert` of the value; a write removes the key. Figures: the
//! hit ratio over the measured reads; ns per operation over the whole replay on one thread and
//! over two threads taking alternate operations; ns per `get` of a present key; ns per
//! `insert` of a new key into a full map (its eviction included).
//!
//! `cargo bench -p strata-cache --bench l1` prints a Markdown table (kept in BENCHMARKS.md).

use std::any::Any;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Zipf};

#[path = "l1/s3fifo.rs"]
#[allow(dead_code)]
mod s3fifo;

const N: u64 = 100_000;
const S: f64 = 0.99;
const WRITE_RATIO: f64 = 0.02;
const WARMUP: usize = 100_000;
const OPS: usize = 1_000_000;
const CAPACITY: u64 = 10_000;
const SEED: u64 = 42;

/// What an L1 entry carries: a type-erased value and a few timestamps (as `L1Entry`); only
/// cloned and dropped here.
#[derive(Clone)]
#[allow(dead_code)]
struct Entry {
    value: Option<Arc<dyn Any + Send + Sync>>,
    times: [u64; 6],
}

fn entry(key: u32) -> Entry {
    Entry {
        value: Some(Arc::new(key)),
        times: [u64::from(key); 6],
    }
}

#[derive(Clone, Copy)]
struct Op {
    write: bool,
    key: u32,
}

/// The W1 stream, exactly as the bench draws it.
fn stream() -> Vec<Op> {
    let mut rng = StdRng::seed_from_u64(SEED);
    let zipf = Zipf::new(N as f64, S).expect("Zipf parameters");
    (0..WARMUP + OPS)
        .map(|_| {
            let write = rng.random::<f64>() < WRITE_RATIO;
            let rank: f64 = zipf.sample(&mut rng);
            Op {
                write,
                key: (rank as u32).saturating_sub(1),
            }
        })
        .collect()
}

/// The operations each candidate offers.
trait Candidate: Send + Sync {
    fn name(&self) -> &'static str;
    fn get(&self, key: &str) -> Option<Entry>;
    fn insert(&self, key: &str, value: Entry);
    fn remove(&self, key: &str);
}

type Hasher = foldhash::fast::RandomState;

struct Moka(moka::sync::Cache<String, Entry, Hasher>);

struct Retain;

impl moka::Expiry<String, Entry> for Retain {
    fn expire_after_create(&self, _: &String, _: &Entry, _: Instant) -> Option<Duration> {
        Some(Duration::from_secs(60))
    }
}

impl Moka {
    fn new() -> Self {
        Moka(
            moka::sync::Cache::builder()
                .max_capacity(CAPACITY)
                .expire_after(Retain)
                .support_invalidation_closures()
                .build_with_hasher(Hasher::default()),
        )
    }
}

impl Candidate for Moka {
    fn name(&self) -> &'static str {
        "moka 0.12 (TinyLFU)"
    }
    fn get(&self, key: &str) -> Option<Entry> {
        self.0.get(key)
    }
    fn insert(&self, key: &str, value: Entry) {
        self.0.insert(key.to_owned(), value);
    }
    fn remove(&self, key: &str) {
        self.0.invalidate(key);
    }
}

struct Quick(quick_cache::sync::Cache<String, Entry, quick_cache::UnitWeighter, Hasher>);

impl Quick {
    fn new() -> Self {
        // As Strata builds its L1 (quick_cache's default policy shares measured best here).
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(CAPACITY as usize)
            .weight_capacity(CAPACITY)
            .build()
            .expect("options");
        Quick(quick_cache::sync::Cache::with_options(
            options,
            quick_cache::UnitWeighter,
            Hasher::default(),
            quick_cache::sync::DefaultLifecycle::default(),
        ))
    }
}

impl Candidate for Quick {
    fn name(&self) -> &'static str {
        "quick_cache 0.6 (S3-FIFO-like)"
    }
    fn get(&self, key: &str) -> Option<Entry> {
        self.0.get(key)
    }
    fn insert(&self, key: &str, value: Entry) {
        self.0.insert(key.to_owned(), value);
    }
    fn remove(&self, key: &str) {
        self.0.remove(key);
    }
}

struct Ours(s3fifo::Map<Entry, Hasher>, usize);

impl Ours {
    fn new(shards: usize) -> Self {
        Ours(
            s3fifo::Map::with_hasher(CAPACITY, shards, Hasher::default()),
            shards,
        )
    }
}

impl Candidate for Ours {
    fn name(&self) -> &'static str {
        match self.1 {
            1 => "strata S3-FIFO, 1 shard",
            8 => "strata S3-FIFO, 8 shards",
            _ => "strata S3-FIFO, 64 shards",
        }
    }
    fn get(&self, key: &str) -> Option<Entry> {
        self.0.get(key, Entry::clone)
    }
    fn insert(&self, key: &str, value: Entry) {
        self.0.insert(key, value, 1);
    }
    fn remove(&self, key: &str) {
        self.0.remove(key);
    }
}

/// Replays `ops` (those at `offset + k * step`); returns measured hits and reads.
fn replay(c: &dyn Candidate, keys: &[String], ops: &[Op], first: usize, step: usize) -> (u64, u64) {
    let (mut hits, mut reads) = (0, 0);
    for (i, op) in ops.iter().enumerate().skip(first).step_by(step) {
        let key = &keys[op.key as usize];
        let measured = i >= WARMUP;
        if op.write {
            c.remove(key);
            continue;
        }
        let hit = c.get(key).is_some();
        if !hit {
            c.insert(key, entry(op.key));
        }
        if measured {
            hits += u64::from(hit);
            reads += 1;
        }
    }
    (hits, reads)
}

struct Figures {
    name: &'static str,
    hit_ratio: f64,
    ns_per_op: f64,
    ns_per_op_2t: f64,
    hit_ratio_2t: f64,
    ns_per_get: f64,
    ns_per_insert: f64,
}

fn measure(make: &dyn Fn() -> Box<dyn Candidate>, keys: &[String], ops: &[Op]) -> Figures {
    // One thread: the whole stream.
    let c = make();
    let t = Instant::now();
    let (hits, reads) = replay(&*c, keys, ops, 0, 1);
    let ns_per_op = t.elapsed().as_nanos() as f64 / ops.len() as f64;
    // Gets of present keys: the measured reads again, those present.
    let present: Vec<&String> = ops[WARMUP..]
        .iter()
        .filter(|o| !o.write)
        .map(|o| &keys[o.key as usize])
        .filter(|k| c.get(k).is_some())
        .collect();
    let t = Instant::now();
    for k in &present {
        std::hint::black_box(c.get(k));
    }
    let ns_per_get = t.elapsed().as_nanos() as f64 / present.len().max(1) as f64;
    // Inserts of keys never seen, into the full map.
    let fresh: Vec<String> = (0..200_000).map(|i| format!("fresh:{i}")).collect();
    let t = Instant::now();
    for (i, k) in fresh.iter().enumerate() {
        c.insert(k, entry(i as u32));
    }
    let ns_per_insert = t.elapsed().as_nanos() as f64 / fresh.len() as f64;
    // Two threads, alternate operations.
    let c: Arc<dyn Candidate> = Arc::from(make());
    let t = Instant::now();
    let (h2, r2) = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|first| {
                let c = c.clone();
                s.spawn(move || replay(&*c, keys, ops, first, 2))
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    });
    let ns_per_op_2t = t.elapsed().as_nanos() as f64 / ops.len() as f64;
    Figures {
        name: c.name(),
        hit_ratio: hits as f64 / reads as f64,
        ns_per_op,
        ns_per_op_2t,
        hit_ratio_2t: h2 as f64 / r2 as f64,
        ns_per_get,
        ns_per_insert,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run a short smoke.
    let ops = stream();
    let keys: Vec<String> = (0..N).map(|i| format!("product:{i}")).collect();
    let _ = Hasher::default().hash_one("warm the hasher");
    let candidates: Vec<Box<dyn Fn() -> Box<dyn Candidate>>> = vec![
        Box::new(|| Box::new(Moka::new())),
        Box::new(|| Box::new(Quick::new())),
        Box::new(|| Box::new(Ours::new(1))),
        Box::new(|| Box::new(Ours::new(8))),
        Box::new(|| Box::new(Ours::new(64))),
    ];
    println!(
        "W1 stream: {WARMUP} warm-up + {OPS} measured operations, {CAPACITY} entries, Zipf {S} over {N} keys, {:.0}% writes",
        WRITE_RATIO * 100.0
    );
    let (oracle, lfu) = bounds(&ops);
    println!("bounds: static oracle {oracle:.4}, perfect LFU {lfu:.4} (hit ratio)");
    println!();
    println!(
        "| L1 | hit ratio | ns/op, 1 thread | ns/op, 2 threads | hit ratio, 2 threads | ns/get (present) | ns/insert (full) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for make in &candidates {
        let f = measure(make, &keys, &ops);
        println!(
            "| {} | {:.4} | {:.0} | {:.0} | {:.4} | {:.0} | {:.0} |",
            f.name,
            f.hit_ratio,
            f.ns_per_op,
            f.ns_per_op_2t,
            f.hit_ratio_2t,
            f.ns_per_get,
            f.ns_per_insert
        );
    }
}

/// Upper bounds on this stream, for reference: the *static oracle* keeps the 10,000 most
/// popular keys (knowing the distribution); *perfect LFU* keeps the keys read most often so
/// far, with every key's full count (unbounded memory). A write empties the key either way.
fn bounds(ops: &[Op]) -> (f64, f64) {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let (mut oracle, mut lfu) = ((0u64, 0u64), (0u64, 0u64));
    let mut present = vec![false; N as usize];
    let mut count = vec![0u32; N as usize];
    let mut cached = vec![false; N as usize];
    let mut size = 0u64;
    // (count when pushed, key): stale items are skipped when popped.
    let mut heap: BinaryHeap<Reverse<(u32, u32)>> = BinaryHeap::new();
    for (i, op) in ops.iter().enumerate() {
        let k = op.key as usize;
        if op.write {
            present[k] = false;
            if cached[k] {
                cached[k] = false;
                size -= 1;
            }
            continue;
        }
        let measured = i >= WARMUP;
        let hit = present[k];
        if k < CAPACITY as usize {
            present[k] = true;
        }
        count[k] += 1;
        let lfu_hit = cached[k];
        if lfu_hit {
            heap.push(Reverse((count[k], op.key)));
        } else {
            // The least counted key cached now (skipping stale heap items).
            let victim = loop {
                match heap.peek() {
                    Some(&Reverse((c, v))) if !cached[v as usize] || c != count[v as usize] => {
                        heap.pop();
                    }
                    other => break other.map(|&Reverse(x)| x),
                }
            };
            if size < CAPACITY {
                size += 1;
                cached[k] = true;
                heap.push(Reverse((count[k], op.key)));
            } else if let Some((c, v)) = victim
                && c < count[k]
            {
                heap.pop();
                cached[v as usize] = false;
                cached[k] = true;
                heap.push(Reverse((count[k], op.key)));
            }
        }
        if measured {
            oracle = (oracle.0 + u64::from(hit), oracle.1 + 1);
            lfu = (lfu.0 + u64::from(lfu_hit), lfu.1 + 1);
        }
    }
    (
        oracle.0 as f64 / oracle.1 as f64,
        lfu.0 as f64 / lfu.1 as f64,
    )
}
