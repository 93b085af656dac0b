//! The order service: composes buyers, products and stock from the other services over
//! HTTP, through its own caches and behind a circuit breaker per service, and degrades to
//! stale data when one of them is down.
//!
//! Caching policy:
//! - a buyer's profile from the user service: 5 min, evicted by `UserUpdated`; fail-safe for
//!   an hour. Private data, but this cache is the order service's own namespace and the key
//!   is the user's: nothing here is served to anyone else;
//! - a product read from the product service: 5 min, tagged `product:<id>`, evicted by
//!   `ProductChanged`; fail-safe for an hour;
//! - a stock level from the inventory service: 2 s (it changes often), evicted by
//!   `InventoryChanged`; fail-safe for 10 min, retried every second — when inventory is down, quotes and orders
//!   go on with the last known level instead of failing, and a quote for a product whose
//!   level was never known says `units: null` rather than failing;
//! - orders: owner-only, never shared (`Cache-Control: private, no-store`), not cached.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use strata::EntryOptions;

use super::inventory::Stock;
use super::product::Product;
use super::user::User;
use crate::consumer::{Consumer, Handled};
use crate::context::Context;
use crate::error::{DemoError, Result};
use crate::event::{Event, Topic, now_ms};
use crate::feed::FeedConsumer;
use crate::remote::Remote;

/// The services the order service reads.
#[derive(Clone, Debug)]
pub struct Upstreams {
    /// The user service.
    pub user: Remote,
    /// The product service.
    pub product: Remote,
    /// The inventory service.
    pub inventory: Remote,
}

#[derive(Clone)]
struct Service {
    ctx: Context,
    up: Upstreams,
}

/// What a product costs and how many are in stock, as the order service sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quote {
    /// The product.
    pub product_id: i64,
    /// Its name.
    pub name: String,
    /// Its price.
    pub price_cents: i64,
    /// Units in stock: possibly the last known level when inventory is unreachable, `None`
    /// when it is unreachable and no level was ever known.
    pub units: Option<i64>,
}

/// An order to place.
#[derive(Debug, Deserialize)]
pub struct NewOrder {
    /// Who orders.
    pub user_id: i64,
    /// What.
    pub product_id: i64,
    /// How many.
    pub quantity: i64,
}

/// A placed order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// Its id.
    pub id: i64,
    /// Who ordered.
    pub user_id: i64,
    /// What.
    pub product_id: i64,
    /// How many.
    pub quantity: i64,
    /// Price × quantity when ordered.
    pub total_cents: i64,
    /// The buyer's name and country, from the user service when ordered.
    pub ship_to: String,
}

/// The service's routes; starts its event consumer: on Redis Streams when there is Redis,
/// else polling the other services' outboxes over HTTP.
pub fn router(ctx: Context, up: Upstreams) -> Router {
    let cache = ctx.cache.clone();
    let handler = move |event| evict(cache.clone(), event);
    match ctx.redis.clone() {
        Some(redis) => {
            let consumer = Consumer::new(
                ctx.db.clone(),
                redis,
                "order",
                &format!("order-{}", std::process::id()),
                &[Topic::Products, Topic::Inventory, Topic::Users],
            );
            tokio::spawn(consumer.run(handler));
        }
        None => {
            let feed = FeedConsumer::new(
                ctx.db.clone(),
                vec![
                    (Topic::Products, up.product.clone()),
                    (Topic::Inventory, up.inventory.clone()),
                    (Topic::Users, up.user.clone()),
                ],
            );
            tokio::spawn(feed.run(handler));
        }
    }
    Router::new()
        .route("/quotes/{product_id}", get(get_quote))
        .route("/orders", post(post_order))
        .route("/orders/{id}", get(get_order))
        .with_state(Service { ctx, up })
}

/// What an event makes stale here.
async fn evict(cache: strata::HybridCache, event: Event) -> Handled {
    let done = match event {
        Event::ProductChanged { product_id, .. } => {
            cache.invalidate_tag(&format!("product:{product_id}")).await
        }
        Event::InventoryChanged { product_id, .. } => {
            cache
                .invalidate(&format!("remote:stock:{product_id}"))
                .await
        }
        Event::UserUpdated { user_id, .. } => {
            cache.invalidate(&format!("remote:user:{user_id}")).await
        }
    };
    match done {
        Ok(()) => Handled::Done,
        Err(error) => {
            tracing::warn!(%error, "evicting after an event");
            Handled::Retry
        }
    }
}

impl Service {
    async fn buyer(&self, id: i64) -> Result<Option<Arc<User>>> {
        let remote = self.up.user.clone();
        let options =
            EntryOptions::ttl(Duration::from_secs(300)).fail_safe(Duration::from_secs(3600));
        Ok(self
            .ctx
            .cache
            .get_or_load_optional(
                &format!("remote:user:{id}"),
                &options,
                // On the buyer's behalf: profiles are their owner's only.
                move || async move { remote.get_for::<User>(&format!("/users/{id}"), id).await },
            )
            .await?)
    }

    async fn product(&self, id: i64) -> Result<Option<Arc<Product>>> {
        let remote = self.up.product.clone();
        let options = EntryOptions::ttl(Duration::from_secs(300))
            .fail_safe(Duration::from_secs(3600))
            .tags([format!("product:{id}")]);
        Ok(self
            .ctx
            .cache
            .get_or_load_optional(
                &format!("remote:product:{id}"),
                &options,
                move || async move { remote.get::<Product>(&format!("/products/{id}")).await },
            )
            .await?)
    }

    async fn stock(&self, id: i64) -> Result<Option<Arc<Stock>>> {
        let remote = self.up.inventory.clone();
        // Stale levels are retried every second (not the default 30 s): stock moves, and a
        // retry is cheap while inventory is down — its breaker answers at once.
        let options = EntryOptions::ttl(Duration::from_secs(2))
            .fail_safe(Duration::from_secs(600))
            .fail_safe_throttle(Duration::from_secs(1));
        Ok(self
            .ctx
            .cache
            .get_or_load_optional(
                &format!("remote:stock:{id}"),
                &options,
                move || async move { remote.get::<Stock>(&format!("/stock/{id}")).await },
            )
            .await?)
    }

    async fn quote(&self, id: i64) -> Result<Option<Quote>> {
        let (product, stock) = tokio::join!(self.product(id), self.stock(id));
        let Some(product) = product? else {
            return Ok(None);
        };
        let units = match stock {
            Ok(stock) => Some(stock.map_or(0, |s| s.units)),
            // Unreachable and never known: say so, and still quote the price.
            Err(error) => {
                tracing::warn!(%error, product = id, "stock unknown");
                None
            }
        };
        Ok(Some(Quote {
            product_id: id,
            name: product.name.clone(),
            price_cents: product.price_cents,
            units,
        }))
    }
}

fn unavailable(error: DemoError) -> Response {
    tracing::warn!(%error, "order service");
    (StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response()
}

async fn get_quote(State(s): State<Service>, Path(id): Path<i64>) -> Response {
    match s.quote(id).await {
        Ok(Some(q)) => ([(header::CACHE_CONTROL, "public, max-age=5")], Json(q)).into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => unavailable(e),
    }
}

async fn post_order(State(s): State<Service>, Json(new): Json<NewOrder>) -> Response {
    if new.quantity <= 0 {
        return (StatusCode::UNPROCESSABLE_ENTITY, "quantity must be > 0").into_response();
    }
    let (buyer, quote) = tokio::join!(s.buyer(new.user_id), s.quote(new.product_id));
    let buyer = match buyer {
        Ok(Some(b)) => b,
        Ok(None) => return (StatusCode::UNPROCESSABLE_ENTITY, "no such user").into_response(),
        Err(e) => return unavailable(e),
    };
    let quote = match quote {
        Ok(Some(q)) => q,
        Ok(None) => return (StatusCode::NOT_FOUND, "no such product").into_response(),
        Err(e) => return unavailable(e),
    };
    match quote.units {
        None => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "stock unknown: the inventory service is unreachable",
            )
                .into_response();
        }
        Some(units) if units < new.quantity => {
            return (StatusCode::CONFLICT, "not enough in stock").into_response();
        }
        Some(_) => {}
    }
    let order = Order {
        // Time-ordered and unique enough for a demo across instances.
        id: now_ms() * 1000 + i64::from(fastrand::u16(..1000)),
        user_id: new.user_id,
        product_id: new.product_id,
        quantity: new.quantity,
        total_cents: quote.price_cents * new.quantity,
        ship_to: format!("{}, {}", buyer.name, buyer.country),
    };
    let inserted = sqlx::query(
        "INSERT INTO orders (id, user_id, product_id, quantity, total_cents, ship_to, created_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(order.id)
    .bind(order.user_id)
    .bind(order.product_id)
    .bind(order.quantity)
    .bind(order.total_cents)
    .bind(&order.ship_to)
    .bind(now_ms())
    .execute(s.ctx.db.pool())
    .await;
    match inserted {
        Ok(_) => (
            StatusCode::CREATED,
            [(header::CACHE_CONTROL, "private, no-store")],
            Json(order),
        )
            .into_response(),
        Err(e) => unavailable(e.into()),
    }
}

/// An order, for its owner only (`X-User-Id`; the gateway or an auth layer sets it).
async fn get_order(State(s): State<Service>, Path(id): Path<i64>, headers: HeaderMap) -> Response {
    let Some(user) = headers
        .get("x-user-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
    else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let row = sqlx::query(
        "SELECT id, user_id, product_id, quantity, total_cents, ship_to FROM orders WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(s.ctx.db.pool())
    .await;
    let order = match row.and_then(|r| r.as_ref().map(order_of).transpose()) {
        Ok(Some(order)) => order,
        Ok(None) => return StatusCode::NOT_FOUND.into_response(),
        Err(e) => return unavailable(e.into()),
    };
    // Someone else's order looks like none at all.
    if order.user_id != user {
        return StatusCode::NOT_FOUND.into_response();
    }
    ([(header::CACHE_CONTROL, "private, no-store")], Json(order)).into_response()
}

fn order_of(r: &sqlx::any::AnyRow) -> Result<Order, sqlx::Error> {
    Ok(Order {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        product_id: r.try_get("product_id")?,
        quantity: r.try_get("quantity")?,
        total_cents: r.try_get("total_cents")?,
        ship_to: r.try_get("ship_to")?,
    })
}
