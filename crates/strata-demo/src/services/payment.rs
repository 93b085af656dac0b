//! The payment service: never cached, anywhere — a payment's state must be read from its
//! source every time (`Cache-Control: no-store`), and no cache layer is in front of it.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::context::Context;
use crate::event::now_ms;

/// A payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    /// Its id.
    pub id: i64,
    /// The order paid.
    pub order_id: i64,
    /// How much.
    pub amount_cents: i64,
    /// `captured` (this demo's payments always succeed).
    pub status: String,
}

/// A payment to make.
#[derive(Debug, Deserialize)]
pub struct NewPayment {
    /// The order paid.
    pub order_id: i64,
    /// How much.
    pub amount_cents: i64,
}

/// The service's routes.
pub fn router(ctx: Context) -> Router {
    Router::new()
        .route("/payments", post(post_payment))
        .route("/payments/{id}", get(get_payment))
        .with_state(ctx)
}

const NO_STORE: (header::HeaderName, &str) = (header::CACHE_CONTROL, "no-store");

async fn post_payment(State(ctx): State<Context>, Json(new): Json<NewPayment>) -> Response {
    if new.amount_cents <= 0 {
        return (StatusCode::UNPROCESSABLE_ENTITY, "amount_cents must be > 0").into_response();
    }
    let payment = Payment {
        id: now_ms() * 1000 + i64::from(fastrand::u16(..1000)),
        order_id: new.order_id,
        amount_cents: new.amount_cents,
        status: "captured".into(),
    };
    let inserted = sqlx::query(
        "INSERT INTO payments (id, order_id, amount_cents, status, created_ms) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(payment.id)
    .bind(payment.order_id)
    .bind(payment.amount_cents)
    .bind(&payment.status)
    .bind(now_ms())
    .execute(ctx.db.pool())
    .await;
    match inserted {
        Ok(_) => (StatusCode::CREATED, [NO_STORE], Json(payment)).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, [NO_STORE], e.to_string()).into_response(),
    }
}

async fn get_payment(State(ctx): State<Context>, Path(id): Path<i64>) -> Response {
    let row = sqlx::query("SELECT id, order_id, amount_cents, status FROM payments WHERE id = $1")
        .bind(id)
        .fetch_optional(ctx.db.pool())
        .await;
    let payment = row.and_then(|r| {
        r.map(|r| {
            Ok(Payment {
                id: r.try_get("id")?,
                order_id: r.try_get("order_id")?,
                amount_cents: r.try_get("amount_cents")?,
                status: r.try_get("status")?,
            })
        })
        .transpose()
    });
    match payment {
        Ok(Some(p)) => ([NO_STORE], Json(p)).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, [NO_STORE]).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, [NO_STORE], e.to_string()).into_response(),
    }
}
