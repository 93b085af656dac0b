//! The user and payment services.

use std::time::Duration;

use crate::context;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use strata_demo::Topic;
use strata_demo::services::{payment, user};
use strata_testkit::{RedisServer, eventually};
use tower_service::Service;

async fn call(
    router: &Router,
    method: &str,
    uri: &str,
    user: Option<&str>,
    body: &str,
) -> (StatusCode, String, String) {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(u) = user {
        request = request.header("x-user-id", u);
    }
    let response = router
        .clone()
        .call(request.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let cc = response
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned(), cc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_are_their_owners_and_updates_reach_every_instance() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let a_ctx = context("user", &redis, &dir).await;
    user::seed(&a_ctx, 10).await.unwrap();
    let a = user::router(a_ctx.clone());
    let b = user::router(context("user", &redis, &dir).await);
    let (status, body, cc) = call(&b, "GET", "/users/3", Some("3"), "").await;
    assert_eq!(
        (status, cc.as_str()),
        (StatusCode::OK, "private, no-cache"),
        "{body}"
    );
    assert!(body.contains("User 3"));
    assert_eq!(
        call(&b, "GET", "/users/3", Some("4"), "").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&b, "GET", "/users/3", None, "").await.0,
        StatusCode::NOT_FOUND
    );
    let change = r#"{"name":"Ada","email":"ada@example.com"}"#;
    assert_eq!(
        call(&a, "PUT", "/users/3", Some("3"), change).await.0,
        StatusCode::OK
    );
    eventually(
        "B serves the new profile",
        Duration::from_secs(5),
        || async {
            call(&b, "GET", "/users/3", Some("3"), "")
                .await
                .1
                .contains("Ada")
        },
    )
    .await;
    assert!(
        call(
            &a,
            "PUT",
            "/users/3",
            Some("3"),
            r#"{"name":"","email":"x"}"#
        )
        .await
        .0
        .is_client_error()
    );
    eventually(
        "UserUpdated is announced",
        Duration::from_secs(5),
        || async { redis.cli(&["XLEN", Topic::Users.stream()]) == "1" },
    )
    .await;
    let (status, body, _) = call(&a, "GET", "/countries", None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("Germany"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_are_never_cached() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let ctx = context("payment", &redis, &dir).await;
    let svc = payment::router(ctx.clone());
    let (status, body, cc) = call(
        &svc,
        "POST",
        "/payments",
        None,
        r#"{"order_id":9,"amount_cents":1500}"#,
    )
    .await;
    assert_eq!(
        (status, cc.as_str()),
        (StatusCode::CREATED, "no-store"),
        "{body}"
    );
    let paid: payment::Payment = serde_json::from_str(&body).unwrap();
    for _ in 0..2 {
        let (status, body, cc) =
            call(&svc, "GET", &format!("/payments/{}", paid.id), None, "").await;
        assert_eq!((status, cc.as_str()), (StatusCode::OK, "no-store"));
        assert!(body.contains("captured"));
    }
    let stats = ctx.cache.stats();
    assert_eq!(
        stats.l1_hits + stats.l2_hits + stats.misses + stats.loader_calls,
        0
    );
    assert!(
        call(
            &svc,
            "POST",
            "/payments",
            None,
            r#"{"order_id":9,"amount_cents":0}"#
        )
        .await
        .0
        .is_client_error()
    );
}
