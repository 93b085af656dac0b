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
