//! The inventory service: stock levels, which change often and matter at order time.
//!
//! Caching policy: write-through with a short TTL (5 s) — a change writes the new level into
//! the cache (every instance's L1 through the log) in the same breath as the database, so
//! readers rarely miss, and the TTL bounds how wrong a level read elsewhere can be;
//! `InventoryChanged` tells dependent caches (orders).

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use strata::EntryOptions;

use crate::context::Context;
use crate::error::Result;
use crate::event::Event;
use crate::outbox::Outbox;

/// A product's stock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stock {
    /// The product.
    pub product_id: i64,
    /// Units in stock.
    pub units: i64,
    /// Bumped by every change.
    pub version: i64,
}

/// A new stock level.
#[derive(Debug, Deserialize)]
pub struct StockChange {
    /// Units in stock now.
    pub units: i64,
}

fn options() -> EntryOptions {
    EntryOptions::ttl(Duration::from_secs(5)).fail_safe(Duration::from_secs(600))
}

/// The service's routes.
pub fn router(ctx: Context) -> Router {
    Router::new()
        .route("/stock/{id}", get(get_stock).put(put_stock))
        .with_state(ctx)
}

/// Stock for products `1..=products`, unless present.
pub async fn seed(ctx: &Context, products: i64) -> Result<()> {
    let pool = ctx.db.pool();
    if !ctx.db.is_empty("stock").await? {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    for p in 1..=products {
        sqlx::query("INSERT INTO stock (product_id, units, version) VALUES ($1, $2, 0)")
            .bind(p)
            .bind(10 + (p * 13) % 90)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

fn stock_of(row: &sqlx::any::AnyRow) -> Result<Stock, sqlx::Error> {
    Ok(Stock {
        product_id: row.try_get("product_id")?,
        units: row.try_get("units")?,
        version: row.try_get("version")?,
    })
}

/// A product's stock through the cache.
pub async fn stock(ctx: &Context, id: i64) -> Result<Option<std::sync::Arc<Stock>>> {
    let loader_ctx = ctx.clone();
    Ok(ctx
        .cache
        .get_or_load_optional(&format!("stock:{id}"), &options(), move || async move {
            loader_ctx.count_query();
            let row =
                sqlx::query("SELECT product_id, units, version FROM stock WHERE product_id = $1")
                    .bind(id)
                    .fetch_optional(loader_ctx.db.pool())
                    .await?;
            row.as_ref().map(stock_of).transpose()
        })
        .await?)
}

async fn get_stock(State(ctx): State<Context>, Path(id): Path<i64>) -> Response {
    match stock(&ctx, id).await {
        Ok(Some(s)) => ([(header::CACHE_CONTROL, "public, max-age=2")], Json(&*s)).into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

async fn put_stock(
    State(ctx): State<Context>,
    Path(id): Path<i64>,
    Json(change): Json<StockChange>,
) -> Response {
    if change.units < 0 {
        return (StatusCode::UNPROCESSABLE_ENTITY, "units must be ≥ 0").into_response();
    }
    match set_stock(&ctx, id, change.units).await {
        Ok(Some(s)) => Json(s).into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// Sets a stock level: row and event in one transaction, then written through the cache.
pub async fn set_stock(ctx: &Context, id: i64, units: i64) -> Result<Option<Stock>> {
    let mut tx = ctx.db.pool().begin().await?;
    let row = sqlx::query(
        "UPDATE stock SET units = $1, version = version + 1 WHERE product_id = $2 \
         RETURNING product_id, units, version",
    )
    .bind(units)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let stock = stock_of(&row)?;
    Outbox::append(
        &mut tx,
        &Event::InventoryChanged {
            product_id: id,
            stock: units,
        },
    )
    .await?;
    tx.commit().await?;
    ctx.events_committed();
    ctx.cache
        .set(&format!("stock:{id}"), stock.clone(), &options())
        .await?;
    Ok(Some(stock))
}
