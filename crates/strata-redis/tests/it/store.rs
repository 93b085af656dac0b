//! `RedisStore` as an `L2Store`, checked against what Redis itself holds.

use std::time::Duration;

use bytes::Bytes;
use strata::L2Store;
use strata_redis::RedisStore;
use strata_testkit::RedisServer;

#[tokio::test]
async fn stores_values_under_the_namespace_layout() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let value = Bytes::from_static(b"\x00\xffbinary\r\n");
    store
        .set(
            "svc",
            "a b*{x}\n",
            value.clone(),
            Duration::from_secs(30),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        store.get("svc", "a b*{x}\n").await.unwrap(),
        Some(value.clone())
    );
    assert_eq!(
        store.get("other", "a b*{x}\n").await.unwrap(),
        None,
        "namespaces are apart"
    );
    let ttl: i64 = redis.cli(&["PTTL", "svc:a b*{x}\n"]).parse().unwrap();
    assert!((29_000..=30_000).contains(&ttl), "PX set: {ttl}");

    store
        .set(
            "svc",
            "b",
            Bytes::from_static(b"2"),
            Duration::from_secs(30),
            &[],
        )
        .await
        .unwrap();
    let many = store
        .get_many("svc", &["b", "missing", "a b*{x}\n"])
        .await
        .unwrap();
    assert_eq!(
        many,
        vec![Some(Bytes::from_static(b"2")), None, Some(value)]
    );
    assert!(store.get_many("svc", &[]).await.unwrap().is_empty());

    store.delete("svc", "b").await.unwrap();
    assert_eq!(redis.cli(&["EXISTS", "svc:b"]), "0");
}

#[tokio::test]
async fn tags_index_keys_and_delete_them_together() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let ttl = Duration::from_secs(100);
    let tags = ["cat:1".to_owned(), "brand:2".to_owned()];
    for key in ["p1", "p2"] {
        store
            .set("svc", key, Bytes::from_static(b"v"), ttl, &tags)
            .await
            .unwrap();
    }
    store
        .set("svc", "p3", Bytes::from_static(b"v"), ttl, &tags[1..])
        .await
        .unwrap();
    assert_eq!(redis.cli(&["SCARD", "svc#tag:cat:1"]), "2");
    let index_ttl: i64 = redis.cli(&["PTTL", "svc#tag:cat:1"]).parse().unwrap();
    assert!(
        index_ttl > 90_000,
        "the index lives as long as its entries: {index_ttl}"
    );

    assert_eq!(store.delete_by_tag("svc", "cat:1").await.unwrap(), 2);
    assert_eq!(
        redis.cli(&["EXISTS", "svc:p1", "svc:p2", "svc#tag:cat:1"]),
        "0"
    );
    assert_eq!(redis.cli(&["EXISTS", "svc:p3"]), "1");
    assert_eq!(
        store.delete_by_tag("svc", "cat:1").await.unwrap(),
        0,
        "idempotent"
    );
}

#[tokio::test]
async fn clear_removes_one_namespace_only() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let ttl = Duration::from_secs(100);
    for i in 0..2500 {
        store
            .set(
                "svc",
                &format!("k{i}"),
                Bytes::from_static(b"v"),
                ttl,
                &["t".into()],
            )
            .await
            .unwrap();
    }
    store
        .set("svc2", "k0", Bytes::from_static(b"v"), ttl, &["t".into()])
        .await
        .unwrap();
    assert_eq!(
        store.clear("svc").await.unwrap(),
        2501,
        "2,500 values and one tag index"
    );
    assert_eq!(redis.cli(&["DBSIZE"]), "2", "svc2's value and index remain");
}
