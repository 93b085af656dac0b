//! The order service over real product and inventory services (HTTP), one Redis.

use std::net::SocketAddr;
use std::time::Duration;

use crate::context;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use strata_demo::services::order::{self, Quote, Upstreams};
use strata_demo::services::user::{self, ProfileChange};
use strata_demo::services::{inventory, product};
use strata_demo::{Context, Remote};
use strata_testkit::{RedisServer, eventually};
use tokio::sync::oneshot;
use tower_service::Service;

/// Serves `router` on a loopback port until the sender is used or dropped.
async fn serve(router: Router) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (addr, stop)
}

struct Landscape {
    product: Context,
    inventory: Context,
    order: Context,
    user: Context,
    orders: Router,
    /// The order service's view of inventory (its breaker is the order service's).
    inventory_remote: Remote,
    stop_inventory: Option<oneshot::Sender<()>>,
    _stop_product: oneshot::Sender<()>,
    _stop_user: oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn landscape(redis: &RedisServer) -> Landscape {
    let dir = tempfile::tempdir().unwrap();
    let product = context("product", redis, &dir).await;
    product::seed(&product, 3, 30).await.unwrap();
    let inventory = context("inventory", redis, &dir).await;
    inventory::seed(&inventory, 30).await.unwrap();
    let user = context("user", redis, &dir).await;
    user::seed(&user, 5).await.unwrap();
    let order = context("order", redis, &dir).await;
    let (product_at, stop_product) = serve(product::router(product.clone())).await;
    let (inventory_at, stop_inventory) = serve(inventory::router(inventory.clone())).await;
    let (user_at, stop_user) = serve(user::router(user.clone())).await;
    let deadline = Duration::from_millis(500);
    let remote =
        |service, at: SocketAddr| Remote::new("order", service, &format!("http://{at}"), deadline);
    let inventory_remote = remote("inventory", inventory_at);
    let orders = order::router(
        order.clone(),
        Upstreams {
            user: remote("user", user_at),
            product: remote("product", product_at),
            inventory: inventory_remote.clone(),
        },
    );
    Landscape {
        product,
        inventory,
        order,
        user,
        orders,
        inventory_remote,
        stop_inventory: Some(stop_inventory),
        _stop_product: stop_product,
        _stop_user: stop_user,
        _dir: dir,
    }
}

async fn call(
    router: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, String) {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    for (n, v) in headers {
        request = request.header(*n, *v);
    }
    let response = router
        .clone()
        .call(request.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// Places an order; the status and body.
async fn place(l: &Landscape, user: i64, product: i64, quantity: i64) -> (StatusCode, String) {
    let body = format!(r#"{{"user_id":{user},"product_id":{product},"quantity":{quantity}}}"#);
    call(&l.orders, "POST", "/orders", &[], &body).await
}

async fn quote(l: &Landscape, id: i64) -> Quote {
    let (status, body) = call(&l.orders, "GET", &format!("/quotes/{id}"), &[], "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_in_other_services_reach_the_order_service_through_events() {
    let redis = RedisServer::start();
    let l = landscape(&redis).await;
    let before = quote(&l, 5).await;
    assert_eq!(quote(&l, 5).await, before);
    product::update_price(&l.product, 5, 777).await.unwrap();
    inventory::set_stock(&l.inventory, 5, 3).await.unwrap();
    eventually(
        "the order service quotes the new price and stock",
        Duration::from_secs(5),
        || async {
            let q = quote(&l, 5).await;
            q.price_cents == 777 && q.units == Some(3)
        },
    )
    .await;
    // Orders are priced from it, and are their owner's only.
    let (status, body) = place(&l, 1, 5, 2).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let placed: order::Order = serde_json::from_str(&body).unwrap();
    assert_eq!(placed.total_cents, 1554);
    let profile = user::user(&l.user, 1).await.unwrap().unwrap();
    assert_eq!(
        placed.ship_to,
        format!("{}, {}", profile.name, profile.country)
    );
    // The buyer's profile came from the user service; a change reaches the order service's
    // cached copy through `UserUpdated`.
    let change = ProfileChange {
        name: "Ada Lovelace".into(),
        email: "ada@example.com".into(),
    };
    let buyer = l.user.cache.stats().loader_calls;
    user::update_user(&l.user, 1, &change)
        .await
        .unwrap()
        .unwrap();
    eventually(
        "orders ship to the new name",
        Duration::from_secs(5),
        || async {
            let (status, body) = place(&l, 1, 5, 1).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            let o: order::Order = serde_json::from_str(&body).unwrap();
            o.ship_to.starts_with("Ada Lovelace, ")
        },
    )
    .await;
    assert!(
        l.user.cache.stats().loader_calls > buyer,
        "read again after the event"
    );
    let (status, _) = place(&l, 999, 5, 1).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "no such user");
    let path = format!("/orders/{}", placed.id);
    assert_eq!(
        call(&l.orders, "GET", &path, &[("x-user-id", "1")], "")
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        call(&l.orders, "GET", &path, &[("x-user-id", "2")], "")
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&l.orders, "GET", &path, &[], "").await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = place(&l, 1, 5, 4).await;
    assert_eq!(status, StatusCode::CONFLICT, "only 3 in stock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_inventory_service_degrades_quotes_to_stale_stock_not_errors() {
    let redis = RedisServer::start();
    let mut l = landscape(&redis).await;
    let before = quote(&l, 8).await;
    l.stop_inventory.take().unwrap().send(()).unwrap();
    // Past the stock's 2 s TTL the loader fails (connection refused) and the last known level
    // answers: every quote meanwhile is a 200 with the old stock.
    eventually(
        "a stale stock level is served",
        Duration::from_secs(10),
        || async {
            let q = quote(&l, 8).await;
            assert_eq!(q, before);
            l.order.cache.stats().stale_served > 0
        },
    )
    .await;
    let (status, body) = place(&l, 1, 8, 1).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // The order service's breaker opened on the failed calls: further calls fail at once,
    // without waiting out the deadline, and a product whose stock was never known is still
    // quoted — its stock as unknown — rather than failing.
    eventually(
        "the order service's inventory breaker opens",
        Duration::from_secs(10),
        || async {
            let _ = quote(&l, 9).await;
            l.inventory_remote.breaker() == strata::BreakerState::Open
        },
    )
    .await;
    let q = quote(&l, 9).await;
    assert_eq!(q.units, None, "{q:?}");
    assert!(q.price_cents > 0);
    let (status, body) = place(&l, 1, 9, 1).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
}
