//! Strata in one minute: a miss, a hit, an invalidation, a fail-safe stale serve, the counters.
//!
//! ```text
//! cargo run --release --example quickstart                                  # embedded L2
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --release --example quickstart # Redis L2 + bus
//! ```

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use strata::{EntryOptions, HybridCache};
use strata_redis::{RedisConfig, RedisStore, RedisStreamLog};

#[derive(Debug, Serialize, Deserialize)]
struct Product {
    id: u64,
    name: String,
    price_cents: u64,
}

/// A pretend database: 20 ms per query, and an off switch.
#[derive(Clone, Default)]
struct Database {
    queries: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
    price: Arc<AtomicUsize>,
}

impl Database {
    async fn product(&self, id: u64) -> io::Result<Product> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        if self.down.load(Ordering::SeqCst) {
            return Err(io::Error::other("connection refused"));
        }
        Ok(Product {
            id,
            name: "Teapot".into(),
            price_cents: 1999 + self.price.load(Ordering::SeqCst) as u64,
        })
    }
}

async fn read(
    cache: &HybridCache,
    db: &Database,
) -> Result<(Arc<Product>, Duration), strata::Error> {
    let db = db.clone();
    let started = Instant::now();
    let p = cache
        .get_or_load("product:42", move || async move { db.product(42).await })
        .await?;
    Ok((p, started.elapsed()))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = EntryOptions::ttl(Duration::from_secs(1))
        .fail_safe(Duration::from_secs(300))
        .fail_safe_throttle(Duration::from_secs(5));
    let builder = HybridCache::builder("quickstart").default_entry(options);
    let builder = match std::env::var("REDIS_URL") {
        Ok(url) => {
            let config = RedisConfig::from_url(&url)?;
            println!("L2: Redis at {config}");
            let store = RedisStore::connect_with(&config).await?;
            builder
                .invalidation(RedisStreamLog::sharing(&store))
                .l2(store)
        }
        Err(_) => {
            println!(
                "L2: embedded in-memory store (set REDIS_URL=redis://127.0.0.1:6379 for Redis)"
            );
            builder
        }
    };
    let cache = builder.build().await?;
    cache.clear().await?; // start from nothing, even on a shared Redis
    let db = Database::default();

    let (p, took) = read(&cache, &db).await?;
    println!(
        "1. miss          {:>10.1?}  {} at {} cents, loaded from the database",
        took, p.name, p.price_cents
    );

    let (p, took) = read(&cache, &db).await?;
    println!(
        "2. hit           {:>10.1?}  {} at {} cents, from L1: no query, no decoding",
        took, p.name, p.price_cents
    );

    db.price.store(1000, Ordering::SeqCst);
    cache.invalidate("product:42").await?;
    let (p, took) = read(&cache, &db).await?;
    println!(
        "3. invalidated   {:>10.1?}  {} at {} cents, reloaded after the price change",
        took, p.name, p.price_cents
    );

    tokio::time::sleep(Duration::from_millis(1100)).await; // let the 1 s TTL pass
    db.down.store(true, Ordering::SeqCst);
    let (p, took) = read(&cache, &db).await?;
    println!(
        "4. database down {:>10.1?}  {} at {} cents, the last good value (fail-safe)",
        took, p.name, p.price_cents
    );
    let (_, took) = read(&cache, &db).await?;
    println!("5. still down    {took:>10.1?}  served stale again without retrying the database");

    let s = cache.stats();
    println!();
    println!("database queries  {}", db.queries.load(Ordering::SeqCst));
    println!(
        "counters          l1_hits={} l2_hits={} misses={} stale_served={} loader_calls={} loader_errors={} l2_errors={} invalidations_sent={}",
        s.l1_hits,
        s.l2_hits,
        s.misses,
        s.stale_served,
        s.loader_calls,
        s.loader_errors,
        s.l2_errors,
        s.invalidations_sent
    );
    Ok(())
}
