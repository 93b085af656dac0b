//! Runs `n` operations of one kind against a real Redis, for instruction counts under
//! `valgrind --tool=callgrind` (`scripts/per-op` runs it at two sizes and divides the
//! difference: the instructions one more operation costs this process).
//!
//! ```text
//! per_op <l1-hit|l2-hit|miss|write> <n> <setup> <redis-url>
//! ```
//! `setup` keys are prepared the same way whatever `n` is (values in L2, one key in L1), so
//! two runs differ only by their operations. Values are W1's record (about 1 KiB of JSON).
//! Uses only the public API, so the same file measures earlier versions of the library.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata::{EntryOptions, HybridCache, L1};
use strata_redis::{RedisConfig, RedisStore, RedisStreamLog};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: u64,
    version: u64,
    name: String,
    price_cents: u64,
    tags: Vec<String>,
    body: String,
}

fn record(id: u64) -> Record {
    Record {
        id,
        version: 1,
        name: format!("product {id}"),
        price_cents: 100 + id % 10_000,
        tags: vec![format!("category:{}", id % 100)],
        body: "x".repeat(900),
    }
}

async fn cache(config: &RedisConfig, namespace: &str, l1: L1) -> strata::Result<HybridCache> {
    let store = RedisStore::connect_with(config).await?;
    HybridCache::builder(namespace)
        .l1(l1)
        .invalidation(RedisStreamLog::sharing(&store))
        .l2(store)
        .default_entry(EntryOptions::ttl(Duration::from_secs(3600)).l1_ttl(Duration::from_secs(60)))
        .build()
        .await
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, kind, n, setup, url] = &args[..] else {
        return Err("usage: per_op <l1-hit|l2-hit|miss|write> <n> <setup> <redis-url>".into());
    };
    let (n, setup): (u64, u64) = (n.parse()?, setup.parse()?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let config = RedisConfig::from_url(url)?;
        // A namespace per run: nothing left from an earlier one.
        let ns = format!("per-op-{}", std::process::id());
        let reader = cache(&config, &ns, L1::with_capacity(1_000_000)).await?;
        let writer = cache(&config, &ns, L1::disabled()).await?;
        // Names made up front: formatting them is not the operation.
        let names: Vec<String> = (0..2 * setup + 2).map(|i| format!("product:{i}")).collect();
        let key = |i: u64| names[i as usize].as_str();
        for i in 0..setup {
            writer
                .set(
                    key(i),
                    record(i),
                    &EntryOptions::ttl(Duration::from_secs(3600)),
                )
                .await?;
        }
        let hot: Arc<Record> = reader
            .get_or_load(key(0), || async { Ok::<_, std::io::Error>(record(0)) })
            .await?;
        assert_eq!(hot.id, 0);
        match kind.as_str() {
            "l1-hit" => {
                for _ in 0..n {
                    let r: Arc<Record> = reader
                        .get_or_load(key(0), || async { Ok::<_, std::io::Error>(record(0)) })
                        .await?;
                    std::hint::black_box(r);
                }
            }
            "l2-hit" | "miss" => {
                // The setup stored keys 0..setup in L2 (only key 0 is in this L1); later keys miss.
                let keys = if kind == "miss" {
                    setup..setup + n
                } else {
                    1..n + 1
                };
                for i in keys {
                    let r: Arc<Record> = reader
                        .get_or_load(
                            key(i),
                            move || async move { Ok::<_, std::io::Error>(record(i)) },
                        )
                        .await?;
                    std::hint::black_box(r);
                }
            }
            "write" => {
                for i in 1..=n {
                    reader.invalidate(key(i)).await?;
                }
            }
            other => return Err(format!("unknown kind {other:?}").into()),
        }
        let stats = reader.stats();
        eprintln!(
            "{kind}: l1_hits {} l2_hits {} misses {} invalidations_sent {}",
            stats.l1_hits, stats.l2_hits, stats.misses, stats.invalidations_sent
        );
        reader.clear().await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
