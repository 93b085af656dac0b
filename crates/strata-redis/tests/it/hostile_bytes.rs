//! What other writers may leave in Redis, and what Strata must refuse to write there.

use std::sync::Arc;

use strata::{EntryOptions, Error, HybridCache};
use strata_redis::RedisStore;
use strata_testkit::RedisServer;
use strata_testkit::source::{Db, Product};

use crate::{TTL, instance};

#[tokio::test]
async fn corrupt_and_foreign_bytes_are_a_counted_miss() {
    let redis = RedisServer::start();
    let cache = instance(&redis, EntryOptions::ttl(TTL)).await;
    let db = Db::new();
    redis.cli(&["SET", "svc:garbage", "\u{1}\u{2}not an envelope"]);
    redis.cli(&[
        "SET",
        "svc:json",
        "{\"id\":1,\"version\":0,\"name\":\"foreign\"}",
    ]);
    let mut conn = crate::raw_connection(&redis).await;
    let truncated = [0xFF, b'S', b'T', 1, 1, 0, 9, 9];
    let _: () = redis::cmd("SET")
        .arg("svc:truncated")
        .arg(&truncated[..])
        .query_async(&mut conn)
        .await
        .unwrap();
    let future_version = [0xFF, b'S', b'T', 200, 1, 0];
    let _: () = redis::cmd("SET")
        .arg("svc:future")
        .arg(&future_version[..])
        .query_async(&mut conn)
        .await
        .unwrap();

    for (i, key) in ["garbage", "json", "truncated", "future"]
        .into_iter()
        .enumerate()
    {
        let p: Arc<Product> = cache.get_or_load(key, db.loader(i as u64)).await.unwrap();
        assert_eq!(p.id, i as u64);
    }
    let s = cache.stats();
    assert_eq!((s.decode_errors, s.loader_calls), (4, 4));
    let healed: Vec<u8> = redis::cmd("GET")
        .arg("svc:garbage")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(strata::envelope::decode(&healed).is_ok());
}

#[tokio::test]
async fn an_oversized_value_is_refused_and_nothing_reaches_redis() {
    let redis = RedisServer::start();
    let cache = HybridCache::builder("svc")
        .l2(RedisStore::connect(&redis.url()).await.unwrap())
        .max_value_bytes(1024)
        .build()
        .await
        .unwrap();
    let big = Product {
        id: 1,
        version: 0,
        name: "x".repeat(2000),
    };
    let err = cache.set("p", big, &EntryOptions::ttl(TTL)).await;
    assert!(
        matches!(err, Err(Error::ValueTooLarge { max: 1024, .. })),
        "{err:?}"
    );
    assert_eq!(redis.cli(&["DBSIZE"]), "0");
}

#[tokio::test]
async fn raw_values_are_readable_by_a_plain_get() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let cache = HybridCache::builder("svc")
        .l2(store)
        .raw_values(true)
        .default_entry(EntryOptions::ttl(TTL))
        .build()
        .await
        .unwrap();
    let db = Db::new();
    let _: Arc<Product> = cache
        .get_or_load("product:42", db.loader(42))
        .await
        .unwrap();
    cache.run_pending_tasks().await; // the fill has landed in L2
    assert_eq!(
        redis.cli(&["GET", "svc:product:42"]),
        r#"{"id":42,"version":0,"name":"product 42"}"#
    );
    let ttl: i64 = redis.cli(&["TTL", "svc:product:42"]).parse().unwrap();
    assert!((59..=60).contains(&ttl), "EX set: {ttl}");

    // And a value written by another language's service is read as is.
    redis.cli(&[
        "SET",
        "svc:product:7",
        r#"{"id":7,"version":3,"name":"from python"}"#,
    ]);
    let p: Arc<Product> = cache.get_or_load("product:7", db.loader(7)).await.unwrap();
    assert_eq!((p.version, db.calls()), (3, 1));
}

/// Keys a caller may pass through from user input, however odd, each its own entry.
const HOSTILE_KEYS: &[&str] = &[
    "a b",
    "a_b",
    "line\nbreak",
    "\r\n*3\r\n$3\r\nDEL",
    "*",
    "?",
    "[a-z]",
    "{slot}",
    "}{",
    ":",
    "#tag:x",
    "../billing:secret",
    "billing:secret",
    "\u{0}nul",
    "ünï©ødé 🦀",
    "",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_key_stays_inside_its_namespace() {
    let redis = RedisServer::start();
    redis.cli(&["SET", "billing:secret", "untouched"]);
    let cache = instance(&redis, EntryOptions::ttl(TTL).tags(["t"])).await;
    let db = Db::new();
    for (id, key) in HOSTILE_KEYS.iter().enumerate() {
        let p: Arc<Product> = cache.get_or_load(key, db.loader(id as u64)).await.unwrap();
        assert_eq!(p.id, id as u64);
    }
    // Each key is an entry of its own: none collided with another or escaped its prefix.
    let other = instance(&redis, EntryOptions::ttl(TTL)).await;
    for (id, key) in HOSTILE_KEYS.iter().enumerate() {
        let p: Arc<Product> = other.get_or_load(key, db.loader(999)).await.unwrap();
        assert_eq!(p.id, id as u64, "key {key:?} read back from L2");
    }
    assert_eq!(other.stats().l2_hits, HOSTILE_KEYS.len() as u64);
    let mut conn = crate::raw_connection(&redis).await;
    let all: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    for key in &all {
        let ok = key.starts_with(b"svc:") || key.starts_with(b"svc#") || key == b"billing:secret";
        assert!(
            ok,
            "a key outside the namespace: {:?}",
            String::from_utf8_lossy(key)
        );
    }
    // Invalidating and clearing reach exactly the namespace.
    cache.invalidate("*").await.unwrap();
    let p: Arc<Product> = other.get_or_load("?", db.loader(999)).await.unwrap();
    assert_eq!(p.id, 5, "`*` is a key, not a pattern");
    cache.invalidate_tag("*").await.unwrap();
    cache.clear().await.unwrap();
    assert_eq!(redis.cli(&["GET", "billing:secret"]), "untouched");
    let data: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("svc:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        data.is_empty(),
        "clear removed every entry of the namespace"
    );
}
