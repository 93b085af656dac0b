//! The compatibility channel, against a "service in another language": plain Redis commands.

use std::sync::Arc;

use futures_util::StreamExt;
use strata::{EntryOptions, HybridCache};
use strata_redis::{CompatChannel, RedisConfig, RedisStore, RedisStreamLog};
use strata_testkit::source::{Db, Product};
use strata_testkit::{RedisServer, eventually};

use crate::{TTL, WAIT, raw_connection};

async fn instance(redis: &RedisServer) -> HybridCache {
    let config = RedisConfig::from_url(&redis.url()).unwrap();
    let log = RedisStreamLog::connect_with(&config).await.unwrap();
    HybridCache::builder("svc")
        .l2(RedisStore::connect_with(&config).await.unwrap())
        .invalidation(CompatChannel::wrap(log, &config).await.unwrap())
        .default_entry(EntryOptions::ttl(TTL))
        .build()
        .await
        .unwrap()
}

/// Whether `key` is in `cache`'s L1 (a read that neither loads nor touches L2).
async fn in_l1(cache: &HybridCache, db: &Db, key: &str) -> bool {
    let before = cache.stats().l1_hits;
    let _: Arc<Product> = cache.get_or_load(key, db.loader(1)).await.unwrap();
    cache.stats().l1_hits == before + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_stacks_invalidation_drops_strata_l1_copies_of_its_service_only() {
    let redis = RedisServer::start();
    let cache = instance(&redis).await;
    let db = Db::new();
    for key in ["p", "kept"] {
        let _: Arc<Product> = cache.get_or_load(key, db.loader(1)).await.unwrap();
    }
    let mut foreign = raw_connection(&redis).await;
    let publish = |service: &str, key: &str| {
        redis::cmd("PUBLISH")
            .arg("cache:invalidate")
            .arg(format!(
                r#"{{"service":"{service}","key":"{key}","timestamp":1700000000000}}"#
            ))
            .to_owned()
    };
    // Another service's message, garbage, then ours (a cache-aside writer: DEL, then tell).
    publish("billing", "kept")
        .exec_async(&mut foreign)
        .await
        .unwrap();
    redis::cmd("PUBLISH")
        .arg("cache:invalidate")
        .arg("{oops")
        .exec_async(&mut foreign)
        .await
        .unwrap();
    redis::cmd("DEL")
        .arg("svc:p")
        .exec_async(&mut foreign)
        .await
        .unwrap();
    publish("svc", "p").exec_async(&mut foreign).await.unwrap();
    eventually("the foreign invalidation to drop p", WAIT, || async {
        cache.get::<Product>("p").await.unwrap().is_none()
    })
    .await;
    assert!(
        in_l1(&cache, &db, "kept").await,
        "billing's message was not for us"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strata_invalidations_reach_other_stacks_as_plain_json() {
    let redis = RedisServer::start();
    let cache = instance(&redis).await;
    let mut listener = redis::Client::open(redis.url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    listener.subscribe("cache:invalidate").await.unwrap();
    cache.invalidate("user:42").await.unwrap();
    cache.invalidate_tag("not-sent").await.unwrap();
    cache.invalidate("user:43").await.unwrap();
    let mut messages = listener.on_message();
    let mut got = Vec::new();
    for _ in 0..2 {
        let message = tokio::time::timeout(WAIT, messages.next())
            .await
            .unwrap()
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(message.get_payload_bytes()).unwrap();
        assert_eq!(json["service"], "svc");
        assert!(
            json["timestamp"].as_u64().unwrap() > 1_700_000_000_000,
            "{json}"
        );
        got.push(json["key"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        got,
        ["user:42", "user:43"],
        "key invalidations, in order; no tag"
    );
}
