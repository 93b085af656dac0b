//! The same services on PostgreSQL: migrations, outbox, queries — the portable SQL.

use std::time::Duration;

use strata_demo::services::{inventory, product};
use strata_demo::{Context, Relay, ServiceConfig, Topic};
use strata_redis::RedisConfig;
use strata_testkit::{PostgresServer, RedisServer, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_run_on_postgres() {
    let pg = PostgresServer::start();
    let redis = RedisServer::start();
    pg.create_database("product");
    pg.create_database("inventory");
    let start = |name: &str| {
        let config = ServiceConfig {
            name: name.into(),
            database_url: pg.url(name),
            redis_url: Some(redis.url()),
        };
        async move { Context::start(&config).await.unwrap() }
    };
    let products = start("product").await;
    product::seed(&products, 3, 30).await.unwrap();
    product::seed(&products, 3, 30).await.unwrap(); // idempotent
    let stock = start("inventory").await;
    inventory::seed(&stock, 30).await.unwrap();
    let before = product::product(&products, 9).await.unwrap().unwrap();
    let after = product::update_price(&products, 9, 1234)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (after.price_cents, after.version),
        (1234, before.version + 1)
    );
    assert_eq!(
        product::product(&products, 9)
            .await
            .unwrap()
            .unwrap()
            .price_cents,
        1234
    );
    inventory::set_stock(&stock, 9, 4).await.unwrap();
    assert_eq!(inventory::stock(&stock, 9).await.unwrap().unwrap().units, 4);
    // The outbox rows reach the streams through the relays.
    eventually(
        "both events are published",
        Duration::from_secs(5),
        || async {
            redis.cli(&["XLEN", Topic::Products.stream()]) == "1"
                && redis.cli(&["XLEN", Topic::Inventory.stream()]) == "1"
        },
    )
    .await;
    let config = RedisConfig::from_url(&redis.url()).unwrap();
    let relay = Relay::new(products.db.clone(), config.connect().await.unwrap());
    assert_eq!(
        relay.publish_pending().await.unwrap(),
        0,
        "marked published in PostgreSQL"
    );
}
