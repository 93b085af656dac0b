//! `RedisStore` as an `L2Store`, checked against what Redis itself holds; the fencing contract
//! is checked on `MemoryStore` too, so both stores keep the same promises.

use std::time::Duration;

use bytes::Bytes;
use strata::envelope::{Header, Times, write_header};
use strata::{Codec, Fence, L2Store, MemoryStore, Read, WriteMode};
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
            WriteMode::REPLACE,
        )
        .await
        .unwrap();
    assert!(stored.stored && stored.logged.is_none());
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
            WriteMode::REPLACE,
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

    assert!(
        store.delete("svc", "b", None).await.unwrap().is_none(),
        "nothing logged"
    );
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
        2,
        "svc2's value and index remain: {left}"
    );
    assert_eq!(redis.cli(&["EXISTS", "svc:k0", "svc#tag:t"]), "0");
}

/// An envelope carrying `stamp`, as a cache writes it.
fn envelope(stamp: u64) -> Bytes {
    let times = Times {
        created: 1,
        fresh_until: 2,
        expires: 3,
        stale_until: u64::MAX / 2,
    };
    let header = Header {
        codec: Codec::Json,
        negative: false,
        times,
        stamp,
        load_ms: 0,
    };
    let mut out = Vec::new();
    write_header(&mut out, &header, &[]).unwrap();
    out.extend_from_slice(b"1");
    out.into()
}

/// The fencing contract of `L2Store`: a read that finds nothing leaves its lease there, and a
/// fill is stored only if what it was fenced with is still in place — its lease, or the
/// entry it refreshes — so nothing that changed the key in between (an invalidation, a
/// write-through, a tag invalidation, a clear) is overwritten with an older value.
pub(crate) async fn fills_are_fenced_by_what_they_found(store: &dyn L2Store) {
    let v = |s: &'static str| Bytes::from_static(s.as_bytes());
    let lease = |token| Some((token, TTL));
    let fill = |fence| WriteMode::Fill {
        fence,
        lease: None,
        lease_ttl: TTL,
    };
    let set = |key: &'static str, value, mode| async move {
        store
            .set("ns", key, value, TTL, &[], mode)
            .await
            .unwrap()
            .stored
    };

    // A miss takes the lease; others find it loading; the holder's retry finds it its own.
    let read = |key: &'static str, token| async move {
        store.read("ns", key, lease(token), false).await.unwrap()
    };
    assert_eq!(read("k", 1).await, Read::Leased);
    assert_eq!(read("k", 2).await, Read::Loading { waited_on: false });
    assert_eq!(read("k", 1).await, Read::Leased, "a retry of the holder's");
    assert_eq!(
        store.read("ns", "k", None, false).await.unwrap(),
        Read::Loading { waited_on: false }
    );
    assert_eq!(
        store.get("ns", "k").await.unwrap(),
        None,
        "a lease is no value"
    );
    assert_eq!(store.get_many("ns", &["k"]).await.unwrap(), vec![None]);
    assert!(
        !set("k", v("x"), fill(Fence::Lease(2))).await,
        "not 2's lease"
    );
    assert_eq!(
        read("k", 2).await,
        Read::Loading { waited_on: false },
        "1's lease left in place"
    );
    assert!(set("k", v("loaded"), fill(Fence::Lease(1))).await);
    assert_eq!(read("k", 3).await, Read::Value(v("loaded")), "a hit");

    // An invalidation between the read and the fill: refused.
    store.delete("ns", "k", None).await.unwrap();
    assert_eq!(read("k", 3).await, Read::Leased);
    store.delete("ns", "k", None).await.unwrap();
    assert!(!set("k", v("old"), fill(Fence::Lease(3))).await);
    assert_eq!(
        store.get("ns", "k").await.unwrap(),
        None,
        "nothing written back"
    );

    // A write-through between them: last committed wins.
    assert_eq!(read("k", 4).await, Read::Leased);
    assert!(set("k", v("new"), WriteMode::REPLACE).await);
    assert!(!set("k", v("old"), fill(Fence::Lease(4))).await);
    assert_eq!(store.get("ns", "k").await.unwrap(), Some(v("new")));

    // A refresh is fenced by the stamp of the entry it replaces; an unreadable entry by its
    // very bytes.
    assert!(set("k", envelope(7), WriteMode::REPLACE).await);
    assert!(set("k", envelope(8), fill(Fence::Stamp(7))).await);
    assert!(
        !set("k", envelope(9), fill(Fence::Stamp(7))).await,
        "8 is there"
    );
    assert!(set("k", v("garbage"), WriteMode::REPLACE).await);
    assert!(set("k", envelope(10), fill(Fence::Bytes(v("garbage")))).await);
    assert!(!set("k", envelope(11), fill(Fence::Bytes(v("garbage")))).await);

    // A refresh's fill gives back the refresh lease its token holds, in the same step; a fill
    // without a token leaves the lease to its holder.
    let refresh = store.lease().expect("a store with leases");
    assert!(refresh.try_acquire("ns", "k", 12, TTL).await.unwrap());
    assert!(set("k", envelope(13), fill(Fence::Stamp(10))).await);
    assert!(
        !refresh.try_acquire("ns", "k", 14, TTL).await.unwrap(),
        "still 12's"
    );
    let refreshed = WriteMode::Fill {
        fence: Fence::Stamp(13),
        lease: Some(12),
        lease_ttl: TTL,
    };
    assert!(set("k", envelope(15), refreshed).await);
    assert!(
        refresh.try_acquire("ns", "k", 14, TTL).await.unwrap(),
        "given back by the fill"
    );
    refresh.release("ns", "k", 14).await.unwrap();

    // A tag invalidation takes a member's lease with it; a clear, every lease.
    let tags = ["t".to_owned()];
    let tagged = |value| async move {
        store
            .set("ns", "k", value, TTL, &tags, WriteMode::REPLACE)
            .await
            .unwrap()
    };
    tagged(v("tagged")).await;
    store.delete("ns", "k", None).await.unwrap();
    assert_eq!(read("k", 5).await, Read::Leased);
    store.delete_by_tag("ns", "t").await.unwrap();
    assert!(!set("k", v("old"), fill(Fence::Lease(5))).await);
    assert_eq!(read("cold", 6).await, Read::Leased);
    store.clear("ns").await.unwrap();
    assert!(!set("cold", v("old"), fill(Fence::Lease(6))).await);
    assert_eq!(store.get("ns", "cold").await.unwrap(), None);

    // A failed load gives its lease back; a stranger's token frees nothing.
    assert_eq!(read("r", 7).await, Read::Leased);
    store.release("ns", "r", 8).await.unwrap();
    assert_eq!(read("r", 9).await, Read::Loading { waited_on: false });
    store.release("ns", "r", 7).await.unwrap();
    assert_eq!(read("r", 9).await, Read::Leased);

    // Many at once: values read, misses leased, another's lease seen.
    put(store, "ns", "a", b"A", &[]).await;
    let many = store
        .read_many("ns", &["a", "b", "r"], lease(10))
        .await
        .unwrap();
    assert_eq!(
        many,
        vec![
            Read::Value(v("A")),
            Read::Leased,
            Read::Loading { waited_on: false }
        ]
    );

    // Other namespaces are not disturbed.
    assert_eq!(
        store.read("ns2", "k", lease(11), false).await.unwrap(),
        Read::Leased
    );
}

#[tokio::test]
async fn redis_fills_are_fenced_by_what_they_found() {
    redis_fills_fenced(&RedisServer::start()).await;
}

/// The same where the server compares (`SET … IFEQ`): the fill of a miss is a plain command.
#[tokio::test]
async fn redis_fills_are_fenced_by_what_they_found_with_ifeq() {
    if let Some(program) = strata_testkit::conditional_set_server() {
        redis_fills_fenced(&RedisServer::options().program(program).start()).await;
    }
}

async fn redis_fills_fenced(redis: &RedisServer) {
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    fills_are_fenced_by_what_they_found(&store).await;
    let pttl: u64 = redis.cli(&["PTTL", "ns2:k"]).parse().unwrap();
    assert!(
        pttl > 0 && pttl <= 100_000,
        "the lease record carries the lease's TTL: {pttl}"
    );
    // The lease record is what the envelope docs say, in the data key itself.
    assert_eq!(redis.cli(&["STRLEN", "ns2:k"]), "12");
    assert_eq!(redis.cli(&["GETRANGE", "ns2:k", "1", "2"]), "SL");
}

#[tokio::test]
async fn memory_fills_are_fenced_by_what_they_found() {
    fills_are_fenced_by_what_they_found(&MemoryStore::default()).await;
}

#[tokio::test]
async fn a_waiter_is_told_when_the_load_it_waits_on_ends() {
    waiter_told(&RedisServer::start(), true).await;
}

/// The same where the server compares: a waited-on record is filled by the script, which
/// announces it; a stray fill leaves the record untouched.
#[tokio::test]
async fn a_waiter_is_told_when_the_load_it_waits_on_ends_with_ifeq() {
    if let Some(program) = strata_testkit::conditional_set_server() {
        waiter_told(&RedisServer::options().program(program).start(), false).await;
    }
}

/// `puts_back`: a stray fill overwrites the record and puts it back (Redis 7's `SET … XX
/// GET` in the script), with a lease's TTL; else it never touches it.
async fn waiter_told(redis: &RedisServer, puts_back: bool) {
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let lease = |token| Some((token, TTL));
    assert_eq!(
        store.read("ns", "k", lease(1), false).await.unwrap(),
        Read::Leased
    );
    // A plain read marks nothing; a waiting one marks the key waited on.
    assert_eq!(
        store.read("ns", "k", lease(2), false).await.unwrap(),
        Read::Loading { waited_on: false }
    );
    assert_eq!(
        redis.cli(&["STRLEN", "ns:k"]),
        "12",
        "a plain read marks nothing"
    );
    assert_eq!(
        store.read("ns", "k", lease(2), true).await.unwrap(),
        Read::Loading { waited_on: false }
    );
    assert_eq!(
        redis.cli(&["STRLEN", "ns:k"]),
        "13",
        "waited on: a `W` more"
    );
    // Readers after that see the mark, and need not make it again.
    assert_eq!(
        store.read("ns", "k", lease(3), false).await.unwrap(),
        Read::Loading { waited_on: true }
    );
    assert_eq!(
        store.read("ns", "k", lease(1), false).await.unwrap(),
        Read::Leased,
        "still 1's"
    );
    // A fill that is not 1's puts 1's record back as it was, for a lease's life.
    let stray = WriteMode::Fill {
        fence: Fence::Lease(2),
        lease: None,
        lease_ttl: Duration::from_secs(5),
    };
    let v = Bytes::from_static(b"stray");
    assert!(
        !store
            .set("ns", "k", v, TTL, &[], stray)
            .await
            .unwrap()
            .stored
    );
    assert_eq!(
        redis.cli(&["STRLEN", "ns:k"]),
        "13",
        "1's record, waited on"
    );
    let left: u64 = redis.cli(&["PTTL", "ns:k"]).parse().unwrap();
    if puts_back {
        assert!((1..=5_000).contains(&left), "a lease's life: {left} ms");
    } else {
        assert!(left > 5_000, "untouched, the reader's lease TTL: {left} ms");
    }
    let mode = WriteMode::Fill {
        fence: Fence::Lease(1),
        lease: None,
        lease_ttl: TTL,
    };
    let written = store
        .set("ns", "k", Bytes::from_static(b"v"), TTL, &[], mode)
        .await
        .unwrap();
    assert!(written.stored);
    assert_eq!(redis.cli(&["XLEN", "ns#filled"]), "1", "announced");
    assert_eq!(redis.cli(&["GET", "ns:k"]), "v");
    // A failed load's release is announced too.
    assert_eq!(
        store.read("ns", "j", lease(3), false).await.unwrap(),
        Read::Leased
    );
    assert_eq!(
        store.read("ns", "j", lease(4), true).await.unwrap(),
        Read::Loading { waited_on: false }
    );
    store.release("ns", "j", 3).await.unwrap();
    assert_eq!(redis.cli(&["XLEN", "ns#filled"]), "2");
    assert_eq!(
        store.read("ns", "j", lease(4), false).await.unwrap(),
        Read::Leased
    );
}
