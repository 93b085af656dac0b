//! Hit rates across instances, kept in Redis.

use std::time::Duration;

use strata::EntryOptions;
use strata_redis::{RedisConfig, StatsReader, StatsReporter};
use strata_testkit::{RedisServer, eventually};

use crate::{TTL, WAIT, instance};

#[tokio::test]
async fn two_instances_add_up_in_one_hash() {
    let redis = RedisServer::start();
    let a = instance(&redis, EntryOptions::ttl(TTL)).await;
    let b = instance(&redis, EntryOptions::ttl(TTL)).await;
    let config = RedisConfig::from_url(&redis.url()).unwrap();
    let conn = config.connect().await.unwrap();
    let every = Duration::from_millis(50);
    let reporters = [
        StatsReporter::start(a.clone(), conn.clone(), every),
        StatsReporter::start(b.clone(), conn.clone(), Duration::from_secs(3600)),
    ];
    // A: 1 miss (a load) and 3 L1 hits; B: 1 L2 hit and 1 L1 hit.
    for _ in 0..4 {
        let _: std::sync::Arc<u32> = a
            .get_or_load("k", || async { Ok::<_, std::io::Error>(7) })
            .await
            .unwrap();
    }
    a.run_pending_tasks().await; // a's fill has landed in L2
    for _ in 0..2 {
        let _: std::sync::Arc<u32> = b
            .get_or_load("k", || async { Ok::<_, std::io::Error>(7) })
            .await
            .unwrap();
    }
    // B reports only when asked (its interval is an hour): a flush, as at shutdown.
    reporters[1].flush().await.unwrap();
    let reader = StatsReader::connect(&config).await.unwrap();
    eventually("both instances reported", WAIT, || async {
        let stats = reader.read().await.unwrap();
        stats.len() == 1 && stats[0].l1_hits == 4 && stats[0].l2_hits == 1 && stats[0].misses == 1
    })
    .await;
    let stats = reader.read().await.unwrap();
    assert_eq!(stats[0].namespace, "svc");
    assert_eq!(stats[0].loader_calls, 1);
    assert!((stats[0].hit_ratio() - 5.0 / 6.0).abs() < 1e-9);
    drop(reporters);
}

/// Two instances read a hot key and a crowd of cold ones; `strata top`'s reader sees the hot
/// one first, its reads summed over both (sampled: an estimate), and the set stays bounded.
#[tokio::test]
async fn hot_keys_add_up_over_instances_and_stay_bounded() {
    let redis = RedisServer::start();
    let caches = [
        instance(&redis, EntryOptions::ttl(TTL)).await,
        instance(&redis, EntryOptions::ttl(TTL)).await,
    ];
    let config = RedisConfig::from_url(&redis.url()).unwrap();
    let conn = config.connect().await.unwrap();
    let reporters: Vec<StatsReporter> = caches
        .iter()
        .map(|c| StatsReporter::start(c.clone(), conn.clone(), Duration::from_secs(3600)))
        .collect();
    for round in 0..3 {
        for cache in &caches {
            for i in 0..4_000 {
                let _: std::sync::Arc<u32> = cache
                    .get_or_load("hot", || async { Ok::<_, std::io::Error>(7) })
                    .await
                    .unwrap();
                // Absent everywhere: read, never loaded.
                let cold = cache.get::<u32>(&format!("cold-{round}-{i}")).await;
                assert!(cold.unwrap().is_none());
            }
        }
        for r in &reporters {
            r.flush().await.unwrap();
        }
    }
    let reader = StatsReader::connect(&config).await.unwrap();
    let top = reader.hot_keys(None, 5).await.unwrap();
    assert_eq!(top.len(), 1, "{top:?}");
    assert_eq!(top[0].namespace, "svc");
    let (key, reads) = &top[0].keys[0];
    assert_eq!(key, "hot");
    // 24,000 reads of it, one in 16 sampled: 1,500 samples expected.
    assert!((18_000..30_000).contains(reads), "{reads}");
    assert!(top[0].keys.iter().skip(1).all(|(_, n)| *n < *reads / 10));
    let kept: usize = redis.cli(&["ZCARD", "svc#hot"]).parse().unwrap();
    assert!(kept <= strata_redis::HOT_KEPT, "{kept}");
    let one = reader.hot_keys(Some("svc"), 1).await.unwrap();
    assert_eq!(one[0].keys.len(), 1);
}
