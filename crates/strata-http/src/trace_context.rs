//! W3C Trace Context across HTTP hops (feature `trace-context`): a request handled is a
//! server span whose parent is the caller's `traceparent`, and a request sent on carries the
//! current span. Through OpenTelemetry's global propagator, so whatever the program installed
//! (W3C, B3, …) is what is read and written. With no OpenTelemetry subscriber layer the spans
//! are disabled and each call costs a branch.

use opentelemetry::global;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A server span for a request `name`d like `GET /products/{id}`, child of the trace the
/// request's headers carry (if any). Its `http.response.status_code` and `cache` fields are
/// left empty for the caller to record.
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
