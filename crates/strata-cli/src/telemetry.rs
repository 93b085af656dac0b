//! Logs and traces of every `strata` process.
//!
//! - Logs (`tracing` events) go to stderr at `warn` and above, or as `STRATA_LOG` says
//!   (`info`, `strata=debug,warn`, …: per-target levels).
//! - Traces go over OTLP (HTTP, protobuf) when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, with the standard `OTEL_*` variables
//!   (service name, headers, timeout, batch delay); W3C `traceparent` links the spans of the
//!   gateway, the services and the cache's loads into one trace. Unset, no span is recorded.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::TracerProvider;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::WithHttpConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

/// Flushes the spans still buffered when dropped (at the process's end).
pub(crate) struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("telemetry: flushing traces: {e}");
        }
    }
}

/// Installs logging, and tracing over OTLP when configured, for the process called
/// `service` (unless `OTEL_SERVICE_NAME` names it). Must run inside the tokio runtime: the
/// exporter sends through it.
pub(crate) fn init(service: &str) -> Telemetry {
    let logs = std::env::var("STRATA_LOG")
        .ok()
        .and_then(|s| match s.parse::<Targets>() {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("STRATA_LOG={s:?}: {e}; logging warnings");
                None
            }
        })
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::WARN));
    let fmt = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .with_filter(logs);
    let endpoint = [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|v| !v.is_empty()));
    let provider = if endpoint {
        match provider(service) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("telemetry: no OTLP export: {e}");
                None
            }
        }
    } else {
        None
    };
    let otel = provider.as_ref().map(|p| {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("strata"))
            // Requests and the cache's loads (`strata.load` is a debug span).
            .with_filter(
                Targets::new()
                    .with_target("strata", LevelFilter::DEBUG)
                    .with_default(LevelFilter::INFO),
            )
    });
    // A second `init` (tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init();
    Telemetry { provider }
}

fn provider(service: &str) -> Result<SdkTracerProvider, Box<dyn std::error::Error>> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(Exporter::new(tokio::runtime::Handle::current()))
        .build()?;
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(service.to_owned());
    }
    Ok(SdkTracerProvider::builder()
        .with_resource(resource.build())
        // Batches on the SDK's own thread; each batch is sent through `Exporter`.
        .with_batch_exporter(exporter)
        .build())
}

/// The exporter's HTTP client: our hyper client, driven by the process's tokio runtime. The
/// SDK's batch thread has no runtime of its own, so each send is spawned onto ours and
/// awaited from there — no second HTTP stack (reqwest) for one POST every few seconds.
#[derive(Debug, Clone)]
struct Exporter {
    runtime: tokio::runtime::Handle,
    client: Arc<Client<HttpConnector, Full<Bytes>>>,
}

impl Exporter {
    fn new(runtime: tokio::runtime::Handle) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        Exporter {
            runtime,
            client: Arc::new(Client::builder(TokioExecutor::new()).build(connector)),
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for Exporter {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let call = async move {
            let response = client.request(request.map(Full::new)).await?;
            let (parts, body) = response.into_parts();
            // A collector's answer is small; cap it anyway.
            let body = http_body_util::Limited::new(body, 1 << 20)
                .collect()
                .await?
                .to_bytes();
            Ok::<_, HttpError>(Response::from_parts(parts, body))
        };
        let timed = async move {
            tokio::time::timeout(Duration::from_secs(10), call)
                .await
                .map_err(|_| HttpError::from("the collector did not answer within 10 s"))?
        };
        self.runtime.spawn(timed).await?
    }
}
