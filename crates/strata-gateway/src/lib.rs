//! `strata-gateway`: a caching reverse proxy on [Strata](strata), meant as a drop-in for
//! nginx `proxy_cache` and Varnish — and a library, so a program can embed one.
//!
//! Requests are routed by longest path prefix to upstreams; each cached route sits behind a
//! [`strata_http`] cache (RFC 9111 semantics, `Cache-Status`, request collapsing, tag purge),
//! and every route shares one [`HybridCache`](strata::HybridCache). With Redis, every gateway
//! instance of a namespace shares stored responses, collapses misses across instances and
//! honours purges made on any of them; without, an embedded in-memory cache serves alone.
//! Requests reach upstreams as nginx and Varnish forward them: every end-to-end header,
//! `X-Forwarded-For`/`-Host`/`-Proto` and `Via` added (a route's `strip_unkeyed` sends a
//! cacheable request with only its keyed input, against cache poisoning).
//! Beside the routes, on a listener of their own (`admin_listen`, loopback by default): an
//! admin API under `/_strata/` (purge, health, a live dashboard; bearer token) and Prometheus
//! `/metrics`; and tasks that follow other services' invalidation logs so a service's
//! `invalidate_tag("product:42")` purges the gateway's responses tagged `product:42`.
//!
//! ```no_run
//! use strata_gateway::{Config, Gateway, shutdown_signal};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::parse(
//!     r#"
//!     listen = "127.0.0.1:8080"
//!     [[route]]
//!     prefix = "/"
//!     upstream = "http://127.0.0.1:3000"
//!     "#,
//!     "inline",
//! )?;
//! let gateway = Gateway::from_config(config).await?;
//! let listeners = gateway.bind()?;
//! println!("on http://{}", listeners.local_addr()?);
//! if let Some(admin) = listeners.admin_addr() {
//!     println!("purges and /metrics on http://{admin}");
//! }
//! gateway.serve(listeners, shutdown_signal()).await?;
//! # Ok(()) }
//! ```
//!
//! The configuration is the `gateway.toml` of `strata gateway --config` (the repository's
//! `examples/gateway.toml` documents every field). Serving runs one thread per worker, each
//! with its own single-threaded runtime and its own `SO_REUSEPORT` socket, as nginx runs a
//! worker per core; [`Gateway::serve`] returns once its shutdown future resolves and the
//! requests in flight have finished.

mod admin;
mod builder;
mod config;
mod dashboard;
mod error;
mod follow;
mod forwarding;
mod gateway;
mod handler;
mod proxy;
mod reply;
mod routes;
mod server;

pub use builder::GatewayBuilder;
pub use config::{Config, ConfigError, parse_duration};
pub use error::Error;
pub use gateway::Gateway;
pub use server::{Listeners, shutdown_signal};
