//! Outbox, relay and consumers: every committed change announced once, nothing else.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use strata_demo::{Consumer, Db, Event, Handled, Outbox, Relay, Topic};
use strata_redis::RedisConfig;
use strata_testkit::RedisServer;

async fn product_db(dir: &tempfile::TempDir) -> Db {
    let db = Db::sqlite_in(dir.path(), "product").await.unwrap();
    sqlx::query("INSERT INTO categories (id, name) VALUES (1, 'teapots')")
        .execute(db.pool())
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO products (id, category_id, name, price_cents) VALUES (42, 1, 'Teapot', 1999)",
    )
    .execute(db.pool())
    .await
    .unwrap();
    db
}

fn changed(price: i64) -> Event {
    Event::ProductChanged {
        product_id: 42,
        category_id: 1,
        price_cents: price,
        version: 1,
    }
}

/// Changes the price and announces it, committing or not.
async fn change_price(db: &Db, price: i64, commit: bool) {
    let mut tx = db.pool().begin().await.unwrap();
    sqlx::query("UPDATE products SET price_cents = $1, version = version + 1 WHERE id = 42")
        .bind(price)
        .execute(&mut *tx)
        .await
        .unwrap();
    Outbox::append(&mut tx, &changed(price)).await.unwrap();
    if commit {
        tx.commit().await.unwrap();
    } else {
        tx.rollback().await.unwrap();
    }
}

async fn relay(db: &Db, redis: &RedisServer) -> Relay {
    let config = RedisConfig::from_url(&redis.url()).unwrap();
    Relay::new(db.clone(), config.connect().await.unwrap())
}

fn consumer(db: &Db, redis: &RedisServer, group: &str, name: &str) -> Consumer {
    let config = RedisConfig::from_url(&redis.url()).unwrap();
    Consumer::new(db.clone(), config, group, name, &[Topic::Products])
}

/// A handler that counts, and records the prices it saw.
fn counting() -> (
    Arc<AtomicUsize>,
    impl Fn(Event) -> std::future::Ready<Handled>,
) {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    (count, move |_event| {
        c.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Handled::Done)
    })
}

#[tokio::test]
async fn an_event_is_published_if_and_only_if_its_transaction_commits() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = product_db(&dir).await;
    let relay = relay(&db, &redis).await;
    change_price(&db, 2499, false).await;
    change_price(&db, 2999, true).await;
    assert_eq!(relay.publish_pending().await.unwrap(), 1);
    assert_eq!(
        relay.publish_pending().await.unwrap(),
        0,
        "marked published"
    );
    assert_eq!(redis.cli(&["XLEN", Topic::Products.stream()]), "1");
    let entry = redis.cli(&["XRANGE", Topic::Products.stream(), "-", "+"]);
    assert!(entry.contains(r#""price_cents":2999"#), "{entry}");
    // The field, not the bare number: the entry's id is milliseconds since 1970, which may
    // hold `2499` (seen: `1796292499553-0`).
    assert!(
        !entry.contains(r#""price_cents":2499"#),
        "the rolled-back change was announced: {entry}"
    );
}

#[tokio::test]
async fn redelivered_and_foreign_entries_are_skipped() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = product_db(&dir).await;
    let relay = relay(&db, &redis).await;
    // The consumer group exists before anything is published (it starts at "$").
    let mut consumer = consumer(&db, &redis, "order", "order-1");
    let (count, handler) = counting();
    assert_eq!(consumer.poll(&handler).await.unwrap(), 0);
    for price in [100, 200, 300] {
        change_price(&db, price, true).await;
    }
    relay.publish_pending().await.unwrap();
    // A relay that crashed before marking publishes the same rows again.
    sqlx::query("UPDATE outbox SET published_ms = NULL")
        .execute(db.pool())
        .await
        .unwrap();
    relay.publish_pending().await.unwrap();
    // And something that is not an event of ours.
    redis.cli(&[
        "XADD",
        Topic::Products.stream(),
        "*",
        "id",
        "x-1",
        "payload",
        "\u{1}garbage",
    ]);
    redis.cli(&["XADD", Topic::Products.stream(), "*", "unrelated", "1"]);
    assert_eq!(redis.cli(&["XLEN", Topic::Products.stream()]), "8");
    let mut handled = 0;
    for _ in 0..5 {
        handled += consumer.poll(&handler).await.unwrap();
    }
    assert_eq!((handled, count.load(Ordering::SeqCst)), (3, 3));
    // Everything was acknowledged, duplicates and garbage included.
    let pending = redis.cli(&["XPENDING", Topic::Products.stream(), "order"]);
    assert!(pending.starts_with('0'), "{pending}");
}

#[tokio::test]
async fn a_retry_comes_back_and_each_service_sees_every_event() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = product_db(&dir).await;
    let gw_dir = tempfile::tempdir().unwrap();
    let other_db = Db::sqlite_in(gw_dir.path(), "product").await.unwrap();
    let relay = relay(&db, &redis).await;
    let mut flaky = consumer(&db, &redis, "order", "order-1");
    let mut other = consumer(&other_db, &redis, "gateway", "gateway-1");
    let attempts = Arc::new(AtomicUsize::new(0));
    let a = attempts.clone();
    let retry_once = move |_event: Event| {
        let n = a.fetch_add(1, Ordering::SeqCst);
        std::future::ready(if n == 0 {
            Handled::Retry
        } else {
            Handled::Done
        })
    };
    let (seen, counting) = counting();
    flaky.poll(&retry_once).await.unwrap();
    other.poll(&counting).await.unwrap();
    change_price(&db, 500, true).await;
    relay.publish_pending().await.unwrap();
    let mut done = 0;
    for _ in 0..4 {
        done += flaky.poll(&retry_once).await.unwrap();
        other.poll(&counting).await.unwrap();
    }
    assert_eq!(
        (done, attempts.load(Ordering::SeqCst)),
        (1, 2),
        "retried once, then done"
    );
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "the other service's group saw it too"
    );
}

/// Without Redis: the order side polls the product service's outbox over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_consumers_poll_the_outbox_over_http_and_miss_no_late_commit() {
    let dir = tempfile::tempdir().unwrap();
    let producer = product_db(&dir).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap();
    let app = strata_demo::feed::routes(producer.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let remote = strata_demo::Remote::new(
        "order",
        "product",
        &format!("http://{at}"),
        std::time::Duration::from_secs(2),
    );
    let consumer_db = Db::sqlite_in(dir.path(), "order").await.unwrap();
    let mut feed = strata_demo::FeedConsumer::new(consumer_db, vec![(Topic::Products, remote)]);
    let (count, handler) = counting();

    change_price(&producer, 2999, false).await; // rolled back: never on the feed
    change_price(&producer, 3999, true).await;
    assert_eq!(feed.poll(&handler).await.unwrap(), 1);
    assert_eq!(feed.poll(&handler).await.unwrap(), 0, "handled once");

    // A transaction that began earlier commits later: its event (stamped when appended) is
    // older than the newest one handled, yet within the overlap each poll re-reads. (SQLite
    // has one writer at a time, so the late commit is written as what the reader sees: a
    // row stamped a second before the newest.)
    change_price(&producer, 5999, true).await;
    assert_eq!(feed.poll(&handler).await.unwrap(), 1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let late = now - 1000;
    sqlx::query("INSERT INTO outbox (id, topic, payload, created_ms) VALUES ($1, $2, $3, $4)")
        .bind(format!("{late:013}-00000000000000ab"))
        .bind("products")
        .bind(changed(4999).encode())
        .bind(late)
        .execute(producer.pool())
        .await
        .unwrap();
    assert_eq!(feed.poll(&handler).await.unwrap(), 1, "the late commit");
    assert_eq!(count.load(Ordering::SeqCst), 3);

    // Foreign topics are refused with a clear answer.
    let reply = status_of(&format!("http://{at}/_outbox?topic=nope")).await;
    assert_eq!(reply, 400);
}

/// The status of a plain GET.
async fn status_of(url: &str) -> u16 {
    use http_body_util::Empty;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    client
        .get(url.parse().unwrap())
        .await
        .unwrap()
        .status()
        .as_u16()
}
