//! The Rust service of `examples/polyglot/`: a product catalog over HTTP whose cache shares the
//! namespace `catalog` with the FastAPI and Express services there (see its README).
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 PORT=8001 cargo run -p strata-redis --example polyglot
//! ```
//!
//! `GET /products/{id}` reads through the cache (the "database" is the key `db:product:{id}`
//! in the same Redis, 50 ms per query); `PUT /products/{id}` with a JSON body writes the
//! database, then invalidates the cache entry in every instance of every language.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use strata::{EntryOptions, HybridCache};
use strata_redis::{RedisConfig, RedisStore, RedisStreamLog};

/// A product as all three services store it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Product {
    #[serde(default)]
    id: u64,
    name: String,
    price_cents: u64,
}

#[derive(Clone)]
struct App {
    cache: HybridCache,
    db: redis::aio::MultiplexedConnection,
    queries: Arc<AtomicU64>,
}

/// What a read answers: the product, who served it, how many database queries this service
/// made so far.
#[derive(Serialize)]
struct Answer {
    product: Product,
    served_by: &'static str,
    db_queries: u64,
}

type Failure = (StatusCode, String);

fn unavailable(e: impl std::fmt::Display) -> Failure {
    (StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

/// The database query: 50 ms, then the stored product (or a made-up one never written).
async fn query(
    mut db: redis::aio::MultiplexedConnection,
    id: u64,
) -> Result<Product, Box<dyn std::error::Error + Send + Sync>> {
    tokio::time::sleep(Duration::from_millis(50)).await;
    let json: Option<String> = redis::cmd("GET")
        .arg(format!("db:product:{id}"))
        .query_async(&mut db)
        .await?;
    Ok(match json {
        Some(json) => serde_json::from_str(&json)?,
        None => Product {
            id,
            name: format!("product {id}"),
            price_cents: 1000 + id,
        },
    })
}

async fn read(State(app): State<App>, Path(id): Path<u64>) -> Result<Json<Answer>, Failure> {
    let (db, queries) = (app.db.clone(), app.queries.clone());
    let product = app
        .cache
        .get_or_load(&format!("product:{id}"), move || async move {
            queries.fetch_add(1, Ordering::SeqCst);
            query(db, id).await
        })
        .await
        .map_err(unavailable)?;
    Ok(Json(Answer {
        product: Product::clone(&product),
        served_by: "rust",
        db_queries: app.queries.load(Ordering::SeqCst),
    }))
}

async fn write(
    State(app): State<App>,
    Path(id): Path<u64>,
    Json(mut product): Json<Product>,
) -> Result<StatusCode, Failure> {
    product.id = id;
    let mut db = app.db.clone();
    let () = redis::cmd("SET")
        .arg(format!("db:product:{id}"))
        .arg(serde_json::to_string(&product).map_err(unavailable)?)
        .query_async(&mut db)
        .await
        .map_err(unavailable)?;
    app.cache
        .invalidate(&format!("product:{id}"))
        .await
        .map_err(unavailable)?;
    Ok(StatusCode::NO_CONTENT)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let port = std::env::var("PORT").unwrap_or_else(|_| "8001".into());
    let config = RedisConfig::from_url(&url)?;
    let store = RedisStore::connect_with(&config).await?;
    let cache = HybridCache::builder("catalog")
        .invalidation(RedisStreamLog::sharing(&store))
        .l2(store)
        .default_entry(EntryOptions::ttl(Duration::from_secs(300)))
        .build()
        .await?;
    let db = redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let app = App {
        cache,
        db,
        queries: Arc::default(),
    };
    let router = Router::new()
        .route("/products/{id}", get(read).put(write))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("rust catalog on http://127.0.0.1:{port}");
    axum::serve(listener, router).await?;
    Ok(())
}
