//! One service as a process: `strata demo-service --service <name> …`.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusBuilder;

use crate::context::{Context, ServiceConfig};
use crate::error::{DemoError, Result};
use crate::remote::Remote;
use crate::services::{inventory, order, payment, product, user};

/// The five services.
pub const SERVICES: [&str; 5] = ["product", "inventory", "user", "order", "payment"];

/// How to run one service.
#[derive(Debug, Clone)]
pub struct RunArgs {
    /// Which service.
    pub service: String,
    /// Where to listen (`127.0.0.1:0`: any free port; the address is printed).
    pub listen: SocketAddr,
    /// Its database.
    pub database_url: String,
    /// Redis, if any.
    pub redis_url: Option<String>,
    /// The user service's address (the order service reads it).
    pub user_url: Option<String>,
    /// The product service's address (the order service reads it).
    pub product_url: Option<String>,
    /// The inventory service's address (the order service reads it).
    pub inventory_url: Option<String>,
    /// Seed demo data when the database is empty.
    pub seed: bool,
}

/// Products, categories and users the demo seeds.
pub const SEED_PRODUCTS: i64 = 1000;
const SEED_CATEGORIES: i64 = 20;
const SEED_USERS: i64 = 200;

/// Runs the service until SIGINT/SIGTERM. Prints `strata demo-service <name> on http://<addr>`
/// once it is listening.
pub async fn run(args: RunArgs) -> Result<()> {
    let metrics = PrometheusBuilder::new()
        // Histograms as buckets (not summaries), so alerts can take quantiles across instances.
        .set_buckets(&[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ])
        .map_err(|e| DemoError::Config(format!("metrics: {e}")))?
        .install_recorder()
        .map_err(|e| DemoError::Config(format!("metrics: {e}")))?;
    let ctx = Context::start(&ServiceConfig {
        name: args.service.clone(),
        database_url: args.database_url.clone(),
        redis_url: args.redis_url.clone(),
    })
    .await?;
    let app = match args.service.as_str() {
        "product" => {
            if args.seed {
                product::seed(&ctx, SEED_CATEGORIES, SEED_PRODUCTS).await?;
            }
            product::router(ctx.clone())
        }
        "inventory" => {
            if args.seed {
                inventory::seed(&ctx, SEED_PRODUCTS).await?;
            }
            inventory::router(ctx.clone())
        }
        "user" => {
            if args.seed {
                user::seed(&ctx, SEED_USERS).await?;
            }
            user::router(ctx.clone())
        }
        "payment" => payment::router(ctx.clone()),
        "order" => {
            let need = |url: &Option<String>, what: &str| {
                url.clone().ok_or_else(|| {
                    DemoError::Config(format!("the order service needs --{what}-url"))
                })
            };
            let deadline = Duration::from_millis(500);
            let remote = |service, url| Remote::new("order", service, url, deadline);
            order::router(
                ctx.clone(),
                order::Upstreams {
                    user: remote("user", &need(&args.user_url, "user")?),
                    product: remote("product", &need(&args.product_url, "product")?),
                    inventory: remote("inventory", &need(&args.inventory_url, "inventory")?),
                },
            )
        }
        other => {
            return Err(DemoError::Config(format!(
                "no service {other:?} (expected one of {})",
                SERVICES.join(", ")
            )));
        }
    };
    let app = app
        .layer(axum::middleware::from_fn(crate::trace::traced))
        .merge(observability(ctx.clone(), metrics))
        // Without Redis, the services that depend on this one poll its outbox here.
        .merge(crate::feed::routes(ctx.db.clone()));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| DemoError::Config(format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| DemoError::Config(e.to_string()))?;
    eprintln!("strata demo-service {} on http://{addr}", args.service);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await
        .map_err(|e| DemoError::Config(format!("serving: {e}")))?;
    ctx.flush_stats().await;
    Ok(())
}

/// `/metrics` (Prometheus) and `/_stats` (this process's cache counters, for the demo's
/// report).
fn observability(ctx: Context, metrics: metrics_exporter_prometheus::PrometheusHandle) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let text = metrics.render();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text) }
            }),
        )
        .route(
            "/_stats",
            get(move || {
                let ctx = ctx.clone();
                async move { axum::Json(stats(&ctx)).into_response() }
            }),
        )
}

/// The counters the demo reports.
pub fn stats(ctx: &Context) -> serde_json::Value {
    let s = ctx.cache.stats();
    let r = ctx.reference.stats();
    serde_json::json!({
        "service": ctx.name,
        "l1_hits": s.l1_hits + r.l1_hits,
        "l2_hits": s.l2_hits + r.l2_hits,
        "misses": s.misses + r.misses,
        "waited": s.waited + r.waited,
        "stale_served": s.stale_served + r.stale_served,
        "loader_calls": s.loader_calls + r.loader_calls,
        "db_queries": ctx.queries(),
        "invalidations_received": s.invalidations_received,
    })
}

async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
