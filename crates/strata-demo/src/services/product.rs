//! The product service: products and categories, the catalogue every other service reads.
//!
//! Caching policy (why: `docs/caching-strategy.md`):
//! - a product: cache-aside, 10 min TTL with 10 % jitter, stale-while-revalidate after 1 min,
//!   fail-safe for an hour; tagged `product:<id>` and `category:<id>`;
//! - categories: reference data in the shared `reference` cache, 1 h;
//! - a category's listing: 1 min, tagged `category:<id>`;
//! - an update: the row and a `ProductChanged` event in one transaction, then the product's
//!   tag invalidated — in this service's instances at once, in the others' caches (orders,
//!   the gateway) through the event.
//! - HTTP: `Cache-Control: public, max-age=30, stale-while-revalidate=30` and
//!   `Surrogate-Key` for the gateway.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use strata::{EntryOptions, Loaded};

use crate::context::Context;
use crate::error::Result;
use crate::event::Event;
use crate::outbox::Outbox;

/// A product, as served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    /// Its id.
    pub id: i64,
    /// Its category.
    pub category_id: i64,
    /// Its name.
    pub name: String,
    /// Its price.
    pub price_cents: i64,
    /// Bumped by every change.
    pub version: i64,
}

/// A category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Category {
    /// Its id.
    pub id: i64,
    /// Its name.
    pub name: String,
}

/// A price change.
#[derive(Debug, Deserialize)]
pub struct PriceChange {
    /// The new price.
    pub price_cents: i64,
}

fn product_options() -> EntryOptions {
    EntryOptions::ttl(Duration::from_secs(600))
        .jitter(0.1)
        .soft_ttl(Duration::from_secs(60))
        .fail_safe(Duration::from_secs(3600))
}

const SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");

/// The service's routes.
pub fn router(ctx: Context) -> Router {
    Router::new()
        .route("/products/{id}", get(get_product).put(put_price))
        .route("/categories", get(get_categories))
        .route("/categories/{id}/products", get(get_listing))
        .with_state(ctx)
}

/// Seeds `categories` categories and `products` products (ids from 1), unless present.
pub async fn seed(ctx: &Context, categories: i64, products: i64) -> Result<()> {
    let pool = ctx.db.pool();
    if !ctx.db.is_empty("products").await? {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    for c in 1..=categories {
        sqlx::query("INSERT INTO categories (id, name) VALUES ($1, $2)")
            .bind(c)
            .bind(format!("Category {c}"))
            .execute(&mut *tx)
            .await?;
    }
    for p in 1..=products {
        sqlx::query(
            "INSERT INTO products (id, category_id, name, price_cents, version) \
             VALUES ($1, $2, $3, $4, 0)",
        )
        .bind(p)
        .bind(1 + (p - 1) % categories)
        .bind(format!("Product {p}"))
        .bind(500 + (p * 37) % 10_000)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// One product from the database (a query counted in [`Context::count_query`]).
async fn load_product(ctx: &Context, id: i64) -> Result<Option<Product>> {
    ctx.count_query();
    let row = sqlx::query(
        "SELECT id, category_id, name, price_cents, version FROM products WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(ctx.db.pool())
    .await?;
    Ok(row.as_ref().map(product_of).transpose()?)
}

fn product_of(r: &sqlx::any::AnyRow) -> Result<Product, sqlx::Error> {
    Ok(Product {
        id: r.try_get("id")?,
        category_id: r.try_get("category_id")?,
        name: r.try_get("name")?,
        price_cents: r.try_get("price_cents")?,
        version: r.try_get("version")?,
    })
}

/// A product through the cache: tagged by product and category, "not found" cached too.
pub async fn product(ctx: &Context, id: i64) -> Result<Option<std::sync::Arc<Product>>> {
    let loader_ctx = ctx.clone();
    let found = ctx
        .cache
        .get_or_load_adaptive(
            &format!("product:{id}"),
            &product_options(),
            move || async move {
                let product = load_product(&loader_ctx, id).await?;
                Ok::<_, crate::DemoError>(match product {
                    Some(p) => {
                        let tags = [
                            format!("product:{id}"),
                            format!("category:{}", p.category_id),
                        ];
                        Loaded::value(p).with_options(product_options().tags(tags))
                    }
                    None => Loaded::not_found(),
                })
            },
        )
        .await?;
    Ok(found)
}

fn failure(error: impl std::fmt::Display) -> Response {
    tracing::warn!(%error, "product service");
    (StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response()
}

async fn get_product(State(ctx): State<Context>, Path(id): Path<i64>) -> Response {
    match product(&ctx, id).await {
        Ok(Some(p)) => (
            [
                (
                    header::CACHE_CONTROL,
                    "public, max-age=30, stale-while-revalidate=30".to_owned(),
                ),
                (
                    SURROGATE_KEY,
                    format!("product:{id} category:{}", p.category_id),
                ),
            ],
            Json(&*p),
        )
            .into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => failure(e),
    }
}

async fn put_price(
    State(ctx): State<Context>,
    Path(id): Path<i64>,
    Json(change): Json<PriceChange>,
) -> Response {
    if change.price_cents < 0 {
        return (StatusCode::UNPROCESSABLE_ENTITY, "price_cents must be ≥ 0").into_response();
    }
    match update_price(&ctx, id, change.price_cents).await {
        Ok(Some(p)) => Json(p).into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => failure(e),
    }
}

/// Changes a price: the row and its event in one transaction, then the cache.
pub async fn update_price(ctx: &Context, id: i64, price_cents: i64) -> Result<Option<Product>> {
    let mut tx = ctx.db.pool().begin().await?;
    let updated = sqlx::query(
        "UPDATE products SET price_cents = $1, version = version + 1 WHERE id = $2 \
         RETURNING id, category_id, name, price_cents, version",
    )
    .bind(price_cents)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = updated else {
        return Ok(None);
    };
    let product = product_of(&row)?;
    Outbox::append(
        &mut tx,
        &Event::ProductChanged {
            product_id: id,
            category_id: product.category_id,
            price_cents,
            version: product.version,
        },
    )
    .await?;
    tx.commit().await?;
    ctx.events_committed();
    // Every instance of this service drops it now; other services through the event.
    ctx.cache.invalidate_tag(&format!("product:{id}")).await?;
    Ok(Some(product))
}

async fn get_categories(State(ctx): State<Context>) -> Response {
    let loader_ctx = ctx.clone();
    let options =
        EntryOptions::ttl(Duration::from_secs(3600)).fail_safe(Duration::from_secs(86_400));
    let categories = ctx
        .reference
        .get_or_load_with("categories", &options, move || async move {
            loader_ctx.count_query();
            let rows = sqlx::query("SELECT id, name FROM categories ORDER BY id")
                .fetch_all(loader_ctx.db.pool())
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(Category {
                        id: r.try_get("id")?,
                        name: r.try_get("name")?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
        })
        .await;
    match categories {
        Ok(c) => ([(header::CACHE_CONTROL, "public, max-age=300")], Json(&*c)).into_response(),
        Err(e) => failure(e),
    }
}

async fn get_listing(State(ctx): State<Context>, Path(id): Path<i64>) -> Response {
    let loader_ctx = ctx.clone();
    let options = EntryOptions::ttl(Duration::from_secs(60)).tags([format!("category:{id}")]);
    let listing = ctx
        .cache
        .get_or_load_with(
            &format!("category:{id}:products"),
            &options,
            move || async move {
                loader_ctx.count_query();
                let rows = sqlx::query(
                    "SELECT id, category_id, name, price_cents, version FROM products \
                 WHERE category_id = $1 ORDER BY id LIMIT 100",
                )
                .bind(id)
                .fetch_all(loader_ctx.db.pool())
                .await?;
                rows.iter()
                    .map(product_of)
                    .collect::<Result<Vec<_>, sqlx::Error>>()
            },
        )
        .await;
    match listing {
        Ok(l) => (
            [
                (header::CACHE_CONTROL, "public, max-age=30".to_owned()),
                (SURROGATE_KEY, format!("category:{id}")),
            ],
            Json(&*l),
        )
            .into_response(),
        Err(e) => failure(e),
    }
}
