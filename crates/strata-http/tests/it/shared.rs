//! Instances sharing a real Redis: responses, collapsing and purges span them.

use std::sync::Arc;
use std::time::Duration;

use strata_http::{Policy, Purge};
use strata_testkit::{RedisServer, eventually};

use crate::harness::{hybrid, on_redis, origin};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_stored_by_one_instance_is_a_hit_on_another() {
    let redis = RedisServer::start();
    let o = origin();
    let a = on_redis(&redis, &o, Policy::new("api")).await;
    let b = on_redis(&redis, &o, Policy::new("api")).await;
    assert_eq!(a.get("/products/1").await.x_cache(), "MISS");
    let r = b.get("/products/1").await;
    assert_eq!((r.x_cache(), r.body.as_str()), ("HIT", "product 1 v0"));
    assert_eq!(o.hits("/products/1"), 1);
    // Hit-for-pass is shared too: B goes straight to the origin for a private URL A met.
    a.get("/private").await;
    assert!(
        b.get("/private")
            .await
            .cache_status()
            .contains("detail=hit-for-pass")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stampede_over_two_instances_makes_one_origin_request() {
    let redis = RedisServer::start();
    let o = origin();
    let a = Arc::new(on_redis(&redis, &o, Policy::new("api")).await);
    let b = Arc::new(on_redis(&redis, &o, Policy::new("api")).await);
    let requests: Vec<_> = (0..400)
        .map(|i| {
            let instance = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { instance.get("/slow").await })
        })
        .collect();
    for r in requests {
        let r = r.await.unwrap();
        assert_eq!(
            (r.status.as_u16(), r.body.as_str()),
            (200, "slow"),
            "{}",
            r.cache_status()
        );
    }
    assert_eq!(o.hits("/slow"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_on_one_instance_reach_the_other() {
    let redis = RedisServer::start();
    let o = origin();
    let a = on_redis(&redis, &o, Policy::new("api")).await;
    let b = on_redis(&redis, &o, Policy::new("api")).await;
    for p in ["/products/1", "/products/2", "/products/3"] {
        a.get(p).await;
        assert_eq!(b.get(p).await.x_cache(), "HIT");
    }
    a.http
        .purge(&Purge {
            urls: vec!["/products/1".into()],
            ..Purge::default()
        })
        .await
        .unwrap();
    eventually("B drops the purged URL", WAIT, || async {
        b.get("/products/1").await.x_cache() == "MISS"
    })
    .await;
    assert_eq!(b.get("/products/2").await.x_cache(), "HIT");
    // Soft: B revalidates (a 304) instead of refetching.
    let before = o.not_modified();
    a.http
        .purge(&Purge {
            tags: vec!["product:2".into()],
            soft: true,
            ..Purge::default()
        })
        .await
        .unwrap();
    eventually("B revalidates the soft-purged URL", WAIT, || async {
        b.get("/products/2")
            .await
            .cache_status()
            .contains("fwd-status=304")
    })
    .await;
    assert_eq!(o.not_modified(), before + 1);
    assert_eq!(b.get("/products/3").await.x_cache(), "HIT", "untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_services_invalidate_tag_purges_its_http_entries() {
    let redis = RedisServer::start();
    let o = origin();
    let a = on_redis(&redis, &o, Policy::new("api")).await;
    let b = on_redis(&redis, &o, Policy::new("api")).await;
    a.get("/products/42").await;
    assert_eq!(b.get("/products/42").await.x_cache(), "HIT");
    // The product changes; the service's own data cache (same namespace) invalidates its
    // tag, and that is the purge.
    o.version.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let service = hybrid(&redis, "shop").await;
    service.invalidate_tag("product:42").await.unwrap();
    for instance in [&a, &b] {
        eventually("the new version is served", WAIT, || async {
            instance.get("/products/42").await.body == "product 42 v1"
        })
        .await;
    }
    assert_eq!(o.hits("/products/42"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_bytes_under_an_http_key_are_a_miss_not_an_error() {
    let redis = RedisServer::start();
    let o = origin();
    let a = on_redis(&redis, &o, Policy::new("api")).await;
    // What another program (or a corrupted write) left where the response would live.
    redis.cli(&[
        "SET",
        "shop:http:api\n/products/9",
        "\u{1}not an entry\u{ff}",
    ]);
    let r = a.get("/products/9").await;
    assert_eq!(
        (r.status.as_u16(), r.x_cache(), r.body.as_str()),
        (200, "MISS", "product 9 v0")
    );
    // The garbage was where the entry lives (the test plants it at the right key): it is
    // gone, replaced by the stored response.
    let now = redis.cli(&["GET", "shop:http:api\n/products/9"]);
    assert!(!now.contains("not an entry"), "{now}");
    let again = on_redis(&redis, &o, Policy::new("api"))
        .await
        .get("/products/9")
        .await;
    assert_eq!(
        again.x_cache(),
        "HIT",
        "the entry was stored over the foreign bytes"
    );
}
