//! The product service: two instances on one database and one Redis.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use strata_demo::services::product::{self, Product};
use strata_demo::{Context, Topic};
use strata_testkit::{RedisServer, eventually};
use tower_service::Service;

async fn instance(redis: &RedisServer, dir: &tempfile::TempDir) -> (Context, Router) {
    let ctx = crate::context("product", redis, dir).await;
    product::seed(&ctx, 3, 30).await.unwrap();
    (ctx.clone(), product::router(ctx))
}

async fn call(
    router: &Router,
    method: &str,
    uri: &str,
    body: &str,
) -> (StatusCode, String, String) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let response = router.clone().call(request).await.unwrap();
    let status = response.status();
    let tags = response
        .headers()
        .get("surrogate-key")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned(), tags)
}

async fn price(router: &Router, id: i64) -> i64 {
    let (status, body, _) = call(router, "GET", &format!("/products/{id}"), "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_str::<Product>(&body).unwrap().price_cents
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_price_change_reaches_every_instance_and_is_announced() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (a_ctx, a) = instance(&redis, &dir).await;
    let (b_ctx, b) = instance(&redis, &dir).await;
    let before = price(&a, 7).await;
    assert_eq!(price(&b, 7).await, before);
    assert_eq!(price(&a, 7).await, before);
    // One load for both instances: A loaded, B read it from L2, A's second read from L1.
    assert_eq!(
        a_ctx.cache.stats().loader_calls + b_ctx.cache.stats().loader_calls,
        1
    );
    let (status, body, _) = call(&a, "PUT", "/products/7", r#"{"price_cents": 4242}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    eventually("B serves the new price", Duration::from_secs(5), || async {
        price(&b, 7).await == 4242
    })
    .await;
    assert_eq!(price(&a, 7).await, 4242);
    eventually(
        "the change is announced on the stream",
        Duration::from_secs(5),
        || async {
            redis
                .cli(&["XRANGE", Topic::Products.stream(), "-", "+"])
                .contains(r#""price_cents":4242"#)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_tags_not_found_and_bad_input() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (ctx, svc) = instance(&redis, &dir).await;
    let (status, _, tags) = call(&svc, "GET", "/products/4", "").await;
    assert_eq!(
        (status, tags.as_str()),
        (StatusCode::OK, "product:4 category:1")
    );
    // Not found is cached too: the second miss does not reach the database.
    for _ in 0..2 {
        assert_eq!(
            call(&svc, "GET", "/products/999", "").await.0,
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(ctx.cache.stats().loader_calls, 2);
    let (status, body, _) = call(&svc, "GET", "/categories", "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("Category 3"), "{body}");
    let (status, body, tags) = call(&svc, "GET", "/categories/2/products", "").await;
    assert_eq!((status, tags.as_str()), (StatusCode::OK, "category:2"));
    assert_eq!(
        serde_json::from_str::<Vec<Product>>(&body).unwrap().len(),
        10
    );
    // Bad input: refused, nothing changed.
    assert!(
        call(&svc, "PUT", "/products/4", "{not json")
            .await
            .0
            .is_client_error()
    );
    assert!(
        call(&svc, "PUT", "/products/4", r#"{"price_cents": -1}"#)
            .await
            .0
            .is_client_error()
    );
    assert_eq!(
        call(&svc, "PUT", "/products/999", r#"{"price_cents": 1}"#)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(redis.cli(&["XLEN", Topic::Products.stream()]), "0");
}
