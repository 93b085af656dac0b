//! Bad input: oversized keys and values, corrupt and foreign bytes, bad configuration.

use std::sync::Arc;

use bytes::Bytes;
use strata::{Codec, EntryOptions, Error, HybridCache, L2Store, MemoryStore, WriteMode};
use strata_testkit::source::{Db, Product};

fn big_product() -> Product {
    Product {
        id: 1,
        version: 0,
        name: "x".repeat(500),
    }
}

#[tokio::test]
async fn an_overlong_key_is_refused_before_any_work() {
    let cache = HybridCache::builder("svc")
        .max_key_bytes(8)
        .build()
        .await
        .unwrap();
    let db = Db::new();
    let err = cache
        .get_or_load::<Product, _, _, _>("123456789", db.loader(1))
        .await;
    assert!(
        matches!(err, Err(Error::KeyTooLong { len: 9, max: 8 })),
        "{err:?}"
    );
    assert_eq!(db.calls(), 0);
    assert!(cache.invalidate("123456789").await.is_err());
}

async fn limited_to_200_bytes() -> (HybridCache, MemoryStore) {
    let store = MemoryStore::default();
    let cache = HybridCache::builder("svc")
        .l2(store.clone())
        .max_value_bytes(200)
        .build()
        .await
        .unwrap();
    (cache, store)
}

#[tokio::test]
async fn an_oversized_set_is_an_error_and_writes_nothing() {
    let (cache, store) = limited_to_200_bytes().await;
    let err = cache
        .set("p", big_product(), cache.default_entry_options())
        .await;
    assert!(
        matches!(err, Err(Error::ValueTooLarge { max: 200, .. })),
        "{err:?}"
    );
    assert!(store.is_empty());
    assert!(
        cache.get::<Product>("p").await.unwrap().is_none(),
        "nor in L1"
    );
}

#[tokio::test]
async fn an_oversized_loaded_value_is_returned_but_not_cached() {
    let (cache, store) = limited_to_200_bytes().await;
    for _ in 0..2 {
        let p: Arc<Product> = cache
            .get_or_load("p", || async { Ok::<_, std::io::Error>(big_product()) })
            .await
            .unwrap();
        assert_eq!(p.name.len(), 500);
    }
    assert!(store.is_empty());
    let s = cache.stats();
    assert_eq!((s.oversized, s.loader_calls), (2, 2));
}

#[tokio::test]
async fn corrupt_and_foreign_bytes_in_l2_are_a_counted_miss() {
    let store = MemoryStore::default();
    let cache = HybridCache::builder("svc")
        .l2(store.clone())
        .build()
        .await
        .unwrap();
    let db = Db::new();
    let mut envelope = Vec::new();
    let header = strata::envelope::Header {
        codec: Codec::Json,
        negative: false,
        times: strata::envelope::Times {
            created: 0,
            fresh_until: u64::MAX,
            expires: u64::MAX,
            stale_until: u64::MAX,
        },
        stamp: 0,
        load_ms: 0,
    };
    strata::envelope::write_header(&mut envelope, &header, &[]).unwrap();
    envelope.extend_from_slice(b"{\"not\":\"a product\"}");
    let plants: [&[u8]; 4] = [
        b"\xff\x00garbage",
        b"{\"id\":1,\"version\":0,\"name\":\"plain json\"}",
        b"",
        &envelope,
    ];
    for (i, bytes) in plants.iter().enumerate() {
        let key = format!("p:{i}");
        store
            .set(
                "svc",
                &key,
                Bytes::copy_from_slice(bytes),
                std::time::Duration::from_secs(60),
                &[],
                WriteMode::REPLACE,
            )
            .await
            .unwrap();
        let p: Arc<Product> = cache.get_or_load(&key, db.loader(i as u64)).await.unwrap();
        assert_eq!(p.id, i as u64);
    }
    let s = cache.stats();
    assert_eq!((s.decode_errors, s.loader_calls), (4, 4));
    let healed = store.get("svc", "p:0").await.unwrap().unwrap();
    assert!(
        strata::envelope::decode(&healed).is_ok(),
        "the load replaced the corrupt entry"
    );
}

#[tokio::test]
async fn raw_values_are_plain_json_in_l2() {
    let store = MemoryStore::default();
    let build = || {
        HybridCache::builder("svc")
            .raw_values(true)
            .l2(store.clone())
            .build()
    };
    let (a, b) = (build().await.unwrap(), build().await.unwrap());
    let db = Db::new();
    let p: Arc<Product> = a.get_or_load("p", db.loader(4)).await.unwrap();
    a.run_pending_tasks().await; // the fill has landed in L2
    let bytes = store.get("svc", "p").await.unwrap().unwrap();
    let plain: Product = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(plain, *p);
    let read: Arc<Product> = b.get_or_load("p", db.loader(4)).await.unwrap();
    assert_eq!((db.calls(), b.stats().l2_hits, read.id), (1, 1, 4));
}

#[tokio::test]
async fn an_entry_may_choose_its_codec_and_any_instance_reads_it() {
    let store = MemoryStore::default();
    let build = || HybridCache::builder("svc").l2(store.clone()).build();
    let (a, b) = (build().await.unwrap(), build().await.unwrap());
    let blob = Bytes::from(vec![200u8; 10_000]);
    let options = EntryOptions::default().codec(Codec::MessagePack);
    a.set("blob", blob.clone(), &options).await.unwrap();
    let bytes = store.get("svc", "blob").await.unwrap().unwrap();
    let envelope = strata::envelope::decode(&bytes).unwrap();
    assert_eq!(envelope.header.codec, Codec::MessagePack);
    // Bytes as bytes: the payload is the blob plus a few bytes of framing (JSON: ~4 ×).
    assert!(bytes.len() < 10_100, "{} bytes", bytes.len());
    let read: Arc<Bytes> = b
        .get_or_load("blob", || async {
            Ok::<Bytes, std::io::Error>(Bytes::new())
        })
        .await
        .unwrap();
    assert_eq!((*read).clone(), blob, "a JSON-by-default instance reads it");
    assert_eq!(b.stats().l2_hits, 1);
}

#[tokio::test]
async fn bad_configuration_is_a_clear_error() {
    let cases = [
        HybridCache::builder("has:colon").build().await,
        HybridCache::builder("").build().await,
        HybridCache::builder("svc")
            .raw_values(true)
            .codec(Codec::MessagePack)
            .build()
            .await,
        HybridCache::builder("svc").max_value_bytes(0).build().await,
        HybridCache::builder("svc")
            .default_entry(EntryOptions::ttl(std::time::Duration::ZERO))
            .build()
            .await,
        HybridCache::builder("svc")
            .lease_ttl(std::time::Duration::ZERO)
            .build()
            .await,
        // The in-process log never reports progress: a staleness bound could not be kept.
        HybridCache::builder("svc")
            .max_staleness(std::time::Duration::from_secs(5))
            .build()
            .await,
    ];
    for case in cases {
        let err = case.unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
    }
}

#[tokio::test]
async fn an_l1_bounded_by_bytes_keeps_about_that_many_bytes() {
    // 64 KiB of L1 and 4 KiB values: about 15 fit; a count-bounded L1 of 1,000 keeps all 100.
    async fn l1_hits_after_filling(l1: strata::L1) -> u64 {
        let cache = HybridCache::builder("svc").l1(l1).build().await.unwrap();
        for i in 0..100 {
            let value = "x".repeat(4096);
            cache
                .set(&format!("k{i}"), value, &EntryOptions::default())
                .await
                .unwrap();
        }
        cache.run_pending_tasks().await;
        for i in 0..100 {
            let _: Option<Arc<String>> = cache.get(&format!("k{i}")).await.unwrap();
        }
        cache.stats().l1_hits
    }
    let by_bytes = l1_hits_after_filling(strata::L1::with_max_bytes(64 << 10)).await;
    let by_count = l1_hits_after_filling(strata::L1::with_capacity(1_000)).await;
    assert_eq!(by_count, 100);
    assert!(
        (1..=16).contains(&by_bytes),
        "{by_bytes} of 100 values in a 64 KiB L1"
    );
}
