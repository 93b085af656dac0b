//! The user service: profiles (personal) and countries (reference data).
//!
//! Caching policy: a profile is cache-aside for 10 min in the service and invalidated on
//! update (`UserUpdated` tells the others); over HTTP it is private — its owner's only
//! (`X-User-Id`), `Cache-Control: private, no-cache`, so no shared cache (the gateway) keeps
//! it. Countries: the shared `reference` cache, 24 h.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use strata::EntryOptions;

use crate::context::Context;
use crate::error::Result;
use crate::event::Event;
use crate::outbox::Outbox;

/// A user's profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Its id.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// E-mail address.
    pub email: String,
    /// Country code.
    pub country: String,
    /// Bumped by every change.
    pub version: i64,
}

/// A profile change.
#[derive(Debug, Deserialize)]
pub struct ProfileChange {
    /// New display name.
    pub name: String,
    /// New e-mail address.
    pub email: String,
}

/// A country.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Country {
    /// ISO code.
    pub code: String,
    /// Name.
    pub name: String,
}

fn options() -> EntryOptions {
    EntryOptions::ttl(Duration::from_secs(600)).jitter(0.1)
}

/// The service's routes.
pub fn router(ctx: Context) -> Router {
    Router::new()
        .route("/users/{id}", get(get_user).put(put_user))
        .route("/countries", get(get_countries))
        .with_state(ctx)
}

/// Countries and `users` users, unless present.
pub async fn seed(ctx: &Context, users: i64) -> Result<()> {
    let pool = ctx.db.pool();
    if !ctx.db.is_empty("users").await? {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    let countries = [
        ("DE", "Germany"),
        ("FR", "France"),
        ("GB", "United Kingdom"),
        ("US", "United States"),
    ];
    for (code, name) in countries {
        sqlx::query("INSERT INTO countries (code, name) VALUES ($1, $2)")
            .bind(code)
            .bind(name)
            .execute(&mut *tx)
            .await?;
    }
    for u in 1..=users {
        let country = countries[usize::try_from(u).unwrap_or(0) % countries.len()].0;
        sqlx::query(
            "INSERT INTO users (id, name, email, country, version) VALUES ($1, $2, $3, $4, 0)",
        )
        .bind(u)
        .bind(format!("User {u}"))
        .bind(format!("user{u}@example.com"))
        .bind(country)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

fn user_of(r: &sqlx::any::AnyRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        email: r.try_get("email")?,
        country: r.try_get("country")?,
        version: r.try_get("version")?,
    })
}

/// A profile through the cache.
pub async fn user(ctx: &Context, id: i64) -> Result<Option<std::sync::Arc<User>>> {
    let loader_ctx = ctx.clone();
    Ok(ctx
        .cache
        .get_or_load_optional(&format!("user:{id}"), &options(), move || async move {
            loader_ctx.count_query();
            let row =
                sqlx::query("SELECT id, name, email, country, version FROM users WHERE id = $1")
                    .bind(id)
                    .fetch_optional(loader_ctx.db.pool())
                    .await?;
            row.as_ref().map(user_of).transpose()
        })
        .await?)
}

/// The caller, from `X-User-Id` (set by the gateway or an auth layer in front).
fn caller(headers: &HeaderMap) -> Option<i64> {
    headers.get("x-user-id")?.to_str().ok()?.parse().ok()
}

async fn get_user(State(ctx): State<Context>, Path(id): Path<i64>, headers: HeaderMap) -> Response {
    if caller(&headers) != Some(id) {
        // Someone else's profile looks like none at all.
        return StatusCode::NOT_FOUND.into_response();
    }
    match user(&ctx, id).await {
        Ok(Some(u)) => ([(header::CACHE_CONTROL, "private, no-cache")], Json(&*u)).into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

async fn put_user(
    State(ctx): State<Context>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Json(change): Json<ProfileChange>,
) -> Response {
    if caller(&headers) != Some(id) {
        return StatusCode::NOT_FOUND.into_response();
    }
    if change.name.trim().is_empty() || !change.email.contains('@') {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            "a name and an e-mail address are needed",
        )
            .into_response();
    }
    match update_user(&ctx, id, &change).await {
        Ok(Some(u)) => Json(u).into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// Changes a profile: row and `UserUpdated` in one transaction, then the cached copy dropped.
pub async fn update_user(ctx: &Context, id: i64, change: &ProfileChange) -> Result<Option<User>> {
    let mut tx = ctx.db.pool().begin().await?;
    let row = sqlx::query(
        "UPDATE users SET name = $1, email = $2, version = version + 1 WHERE id = $3 \
         RETURNING id, name, email, country, version",
    )
    .bind(&change.name)
    .bind(&change.email)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let user = user_of(&row)?;
    Outbox::append(&mut tx, &Event::UserUpdated { user_id: id }).await?;
    tx.commit().await?;
    ctx.events_committed();
    ctx.cache.invalidate(&format!("user:{id}")).await?;
    Ok(Some(user))
}

async fn get_countries(State(ctx): State<Context>) -> Response {
    let loader_ctx = ctx.clone();
    let options = EntryOptions::ttl(Duration::from_secs(86_400));
    let countries = ctx
        .reference
        .get_or_load_with("countries", &options, move || async move {
            loader_ctx.count_query();
            let rows = sqlx::query("SELECT code, name FROM countries ORDER BY code")
                .fetch_all(loader_ctx.db.pool())
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(Country {
                        code: r.try_get("code")?,
                        name: r.try_get("name")?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
        })
        .await;
    match countries {
        Ok(c) => ([(header::CACHE_CONTROL, "public, max-age=3600")], Json(&*c)).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}
