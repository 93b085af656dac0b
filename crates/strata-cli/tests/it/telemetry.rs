//! OTLP traces: a request through the gateway to a demo service arrives at a collector as
//! one trace — the client's — with spans from both processes and the cache's load.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use strata_testkit::eventually;

use crate::gateway::{Gateway, Http};

/// What a collector received: the bodies of `POST /v1/traces` (protobuf).
type Received = Arc<Mutex<Vec<Bytes>>>;

async fn collector() -> (Received, String) {
    let received = Received::default();
    let app = Router::new()
        .route(
            "/v1/traces",
            post(|State(r): State<Received>, body: Bytes| async move {
                r.lock().unwrap().push(body);
                ""
            }),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (received, url)
}

/// Protobuf carries strings and ids as raw bytes: enough to find them without decoding.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A resource's `service.name` attribute as protobuf encodes it: KeyValue { key: 1,
/// value: 2 = AnyValue { string_value: 1 } }.
fn service_name(name: &str) -> Vec<u8> {
    let mut kv = vec![0x0a, 12];
    kv.extend_from_slice(b"service.name");
    kv.extend_from_slice(&[0x12, name.len() as u8 + 2, 0x0a, name.len() as u8]);
    kv.extend_from_slice(name.as_bytes());
    kv
}

/// The product service, on SQLite, exporting to `otlp`; killed on drop.
struct Service(Child, String);

impl Service {
    fn start(dir: &std::path::Path, otlp: &str) -> Service {
        let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args([
                "demo-service",
                "--service",
                "product",
                "--seed",
                "--database-url",
            ])
            .arg(format!("sqlite://{}", dir.join("product.db").display()))
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env_remove("OTEL_SERVICE_NAME")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("the service exited").unwrap();
            if let Some(rest) = line.split("strata demo-service product on ").nth(1) {
                break rest.trim().to_owned();
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        Service(child, url)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_through_the_gateway_is_one_trace_across_processes() {
    let (received, otlp) = collector().await;
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path(), &otlp);
    let gw = Gateway::spawn(
        &[
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &service.1,
        ],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        tempfile::tempdir().unwrap(),
    );
    let (trace_id, client_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let reply = Http::new()
        .send(
            "GET",
            &gw.url("/products/7"),
            &[("traceparent", &format!("00-{trace_id}-{client_span}-01"))],
            "",
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let bytes = |hex: &str| -> Vec<u8> {
        (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    };
    let (id, client_span) = (bytes(trace_id), bytes(client_span));
    // Both processes export spans of the client's trace: the gateway's request, the
    // service's request (its child, through the `traceparent` the gateway sent on) and the
    // service's cache load under it.
    eventually(
        "spans of the trace from the gateway and the product service",
        Duration::from_secs(30),
        || async {
            let bodies = received.lock().unwrap();
            let of = |service: &str, span: &[u8]| {
                let service = service_name(service);
                bodies
                    .iter()
                    .any(|b| contains(b, &service) && contains(b, &id) && contains(b, span))
            };
            of("strata-gateway", b"gateway /")
                && of("product", b"GET /products/{id}")
                && of("product", b"strata.load")
        },
    )
    .await;
    // The service's spans hang under the gateway's, not straight under the client's: the
    // client's span id (the gateway span's parent) appears in no span of the service.
    let bodies = received.lock().unwrap();
    let service = service_name("product");
    assert!(
        !bodies
            .iter()
            .any(|b| contains(b, &service) && contains(b, &client_span)),
        "the gateway passed the client's traceparent on instead of its own"
    );
}
