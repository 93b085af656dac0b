//! Traces across the landscape (W3C Trace Context): each request handled is a server span
//! whose parent is the caller's `traceparent`, and each call to another service carries the
//! current span on. With no OTLP endpoint configured the spans are disabled and this costs
//! a branch per request.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub use strata_http::trace_context::{inject, server_span};

/// Axum middleware: every request in a [`server_span`] named for its route.
pub async fn traced(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_owned(),
        |p| p.as_str().to_owned(),
    );
    let span = server_span(
        &format!("{} {route}", request.method()),
        request.method(),
        request.headers(),
    );
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}
