//! `RedisStore` as an `L2Store`, checked against what Redis itself holds; the fencing contract
//! is checked on `MemoryStore` too, so both stores keep the same promises.

use std::time::Duration;

use bytes::Bytes;
use strata::{Generation, L2Store, LoadStart, MemoryStore, WriteMode};
use strata_redis::RedisStore;
use strata_testkit::RedisServer;

const TTL: Duration = Duration::from_secs(100);

pub(crate) async fn put(
    store: &dyn L2Store,
    ns: &str,
    key: &str,
    value: &'static [u8],
    tags: &[String],
) {
    let stored = store
        .set(
            ns,
            key,
            Bytes::from_static(value),
            TTL,
            tags,
            WriteMode::Replace,
        )
        .await
        .unwrap();
    assert!(stored);
}

#[tokio::test]
async fn stores_values_under_the_namespace_layout() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let value = Bytes::from_static(b"\x00\xffbinary\r\n");
    let key = "a b*{x}\n";
    store
        .set(
            "svc",
            key,
            value.clone(),
            Duration::from_secs(30),
            &[],
            WriteMode::Replace,
        )
        .await
        .unwrap();
    assert_eq!(store.get("svc", key).await.unwrap(), Some(value.clone()));
    assert_eq!(
        store.get("other", key).await.unwrap(),
        None,
        "namespaces are apart"
    );
    let ttl: i64 = redis.cli(&["PTTL", "svc:a b*{x}\n"]).parse().unwrap();
    assert!((29_000..=30_000).contains(&ttl), "PX set: {ttl}");

    put(&store, "svc", "b", b"2", &[]).await;
    let many = store.get_many("svc", &["b", "missing", key]).await.unwrap();
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
    let tags = ["cat:1".to_owned(), "brand:2".to_owned()];
    for key in ["p1", "p2"] {
        put(&store, "svc", key, b"v", &tags).await;
    }
    put(&store, "svc", "p3", b"v", &tags[1..]).await;
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
    for i in 0..2500 {
        put(&store, "svc", &format!("k{i}"), b"v", &["t".into()]).await;
    }
    put(&store, "svc2", "k0", b"v", &["t".into()]).await;
    assert_eq!(
        store.clear("svc").await.unwrap(),
        2501,
        "2,500 values and one tag index"
    );
    let left = redis.cli(&["KEYS", "svc2*"]);
    assert_eq!(
        left.lines().count(),
        3,
        "svc2's value, index and generation remain: {left}"
    );
    assert_eq!(redis.cli(&["EXISTS", "svc:k0", "svc#tag:t"]), "0");
}

/// The fencing contract of `L2Store`: a fill is stored only if nothing changed the key or its
/// namespace since the read it is fenced with.
pub(crate) async fn fills_are_fenced_by_generation(store: &dyn L2Store) {
    let v = |s: &'static str| Bytes::from_static(s.as_bytes());
    let fill = |read: Generation| WriteMode::Fill { read, lease: None };

    let read = store.generation("ns", "k").await.unwrap();
    assert_eq!(store.get("ns", "k").await.unwrap(), None);
    assert!(
        store
            .set("ns", "k", v("loaded"), TTL, &[], fill(read))
            .await
            .unwrap()
    );
    let after_fill = store.generation("ns", "k").await.unwrap();
    assert_eq!(after_fill, read, "a fill does not bump");

    // An invalidation between the read and the fill: the fill is refused.
    let before = store.generation("ns", "k").await.unwrap();
    store.delete("ns", "k").await.unwrap();
    assert!(
        !store
            .set("ns", "k", v("old"), TTL, &[], fill(before))
            .await
            .unwrap()
    );
    assert_eq!(
        store.get("ns", "k").await.unwrap(),
        None,
        "nothing written back"
    );

    // A write-through between them: last committed wins.
    let before = store.generation("ns", "k").await.unwrap();
    assert!(
        store
            .set("ns", "k", v("new"), TTL, &[], WriteMode::Replace)
            .await
            .unwrap()
    );
    assert!(
        !store
            .set("ns", "k", v("old"), TTL, &[], fill(before))
            .await
            .unwrap()
    );
    assert_eq!(store.get("ns", "k").await.unwrap(), Some(v("new")));

    // A tag invalidation, and a namespace clear, fence the same way.
    let tags = ["t".to_owned()];
    assert!(
        store
            .set("ns", "k", v("tagged"), TTL, &tags, WriteMode::Replace)
            .await
            .unwrap()
    );
    let before = store.generation("ns", "k").await.unwrap();
    store.delete_by_tag("ns", "t").await.unwrap();
    assert!(
        !store
            .set("ns", "k", v("old"), TTL, &tags, fill(before))
            .await
            .unwrap()
    );
    let before = store.generation("ns", "cold").await.unwrap();
    store.clear("ns").await.unwrap();
    assert!(
        !store
            .set("ns", "cold", v("old"), TTL, &[], fill(before))
            .await
            .unwrap()
    );
    assert_eq!(store.get("ns", "cold").await.unwrap(), None);

    // Other keys and namespaces are not disturbed.
    let other = store.generation("ns2", "k").await.unwrap();
    assert!(
        store
            .set("ns2", "k", v("x"), TTL, &[], fill(other))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn redis_fills_are_fenced_by_generation() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    fills_are_fenced_by_generation(&store).await;
    let ttl: i64 = redis.cli(&["PTTL", "ns#gen:k"]).parse().unwrap();
    assert!(ttl > 24 * 3600 * 1000, "generations outlive entries: {ttl}");
}

#[tokio::test]
async fn memory_fills_are_fenced_by_generation() {
    fills_are_fenced_by_generation(&MemoryStore::default()).await;
}

/// The lease contract of `L2Store`: `begin_load` reads the generation and takes the store's
/// lease once; the fill that carries the token releases it, stored or refused; a stranger's
/// token releases nothing; a value that appeared after the caller found none is handed back
/// instead of a lease.
pub(crate) async fn leases_are_taken_with_the_generation_and_released_by_the_fill(
    store: &dyn L2Store,
) {
    let v = |s: &'static str| Bytes::from_static(s.as_bytes());
    let claim = |token| Some((token, TTL));
    let taken = |start: LoadStart| start.lease_taken;
    let start = store.begin_load("ns", "k", claim(1), true).await.unwrap();
    assert_eq!(start.generation, store.generation("ns", "k").await.unwrap());
    assert!(start.lease_taken && start.filled.is_none());
    let read = start.generation;
    let again = store.begin_load("ns", "k", claim(2), true).await.unwrap();
    assert!(!taken(again), "held");
    let none = store.begin_load("ns", "k", None, true).await.unwrap();
    assert!(!taken(none), "none asked");
    let stranger = WriteMode::Fill {
        read,
        lease: Some(2),
    };
    assert!(
        store
            .set("ns", "k", v("x"), TTL, &[], stranger)
            .await
            .unwrap()
    );
    // The caller found nothing, and now there is a value: it is handed back, no lease taken.
    let raced = store.begin_load("ns", "k", claim(3), true).await.unwrap();
    assert_eq!(raced.filled, Some(v("x")));
    assert!(!raced.lease_taken);
    // The caller found that (stale) value itself: the lease is what it asks for — still held.
    let stale = store.begin_load("ns", "k", claim(3), false).await.unwrap();
    assert!(!taken(stale), "still held");
    // The holder's fill is refused (the key changed), and still releases the lease.
    store.delete("ns", "k").await.unwrap();
    let holder = WriteMode::Fill {
        read,
        lease: Some(1),
    };
    assert!(
        !store
            .set("ns", "k", v("old"), TTL, &[], holder)
            .await
            .unwrap()
    );
    let released = store.begin_load("ns", "k", claim(3), true).await.unwrap();
    assert!(taken(released), "released");
}

#[tokio::test]
async fn redis_leases_are_taken_with_the_generation_and_released_by_the_fill() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    leases_are_taken_with_the_generation_and_released_by_the_fill(&store).await;
    let pttl: u64 = redis.cli(&["PTTL", "ns#lease:k"]).parse().unwrap();
    assert!(
        pttl > 0 && pttl <= 100_000,
        "the lease carries its TTL: {pttl}"
    );
}

#[tokio::test]
async fn memory_leases_are_taken_with_the_generation_and_released_by_the_fill() {
    leases_are_taken_with_the_generation_and_released_by_the_fill(&MemoryStore::default()).await;
}
