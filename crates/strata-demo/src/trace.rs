//! Traces across the landscape (W3C Trace Context): each request handled is a server span
//! whose parent is the caller's `traceparent`, and each call to another service carries the
//! current span on. With no OTLP endpoint configured the spans are disabled and this costs
//! a branch per request.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::global;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A server span for a request `name`d like `GET /products/{id}`, child of the trace the
/// request's headers carry (if any).
pub fn server_span(name: &str, method: &http::Method, headers: &http::HeaderMap) -> Span {
    let span = tracing::info_span!(
        "request",
        otel.name = name,
        otel.kind = "server",
        http.request.method = %method,
        http.response.status_code = tracing::field::Empty,
        cache = tracing::field::Empty,
    );
    if !span.is_disabled() {
        let parent = global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
        let _ = span.set_parent(parent);
    }
    span
}

/// Puts the current span's context into `headers` (`traceparent`, `tracestate`), so the
/// service called continues this trace.
pub fn inject(headers: &mut http::HeaderMap) {
    let span = Span::current();
    if span.is_disabled() {
        return;
    }
    let cx = span.context();
    global::get_text_map_propagator(|p| p.inject_context(&cx, &mut HeaderInjector(headers)));
}

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
