//! Driving the landscape: a Zipf load through the gateway, a product update in the middle,
//! and how long until every cache drops the old price.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Zipf};
use tokio::sync::Mutex;

use crate::BoxError;

/// A small HTTP client for the demo.
#[derive(Clone)]
pub(crate) struct Http(Client<HttpConnector, Full<Bytes>>);

impl Http {
    pub(crate) fn new() -> Http {
        Http(Client::builder(TokioExecutor::new()).build_http())
    }

    /// Sends a request; the status and body.
    pub(crate) async fn send(
        &self,
        method: &str,
        url: &str,
        body: &str,
    ) -> Result<(u16, String), BoxError> {
        let request = http::Request::builder()
            .method(method)
            .uri(url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))?;
        let response =
            tokio::time::timeout(Duration::from_secs(5), self.0.request(request)).await??;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// The `price_cents` field of a JSON answer, if any.
    pub(crate) async fn price(&self, url: &str) -> Option<i64> {
        let (status, body) = self.send("GET", url, "").await.ok()?;
        if status != 200 {
            return None;
        }
        serde_json::from_str::<serde_json::Value>(&body)
            .ok()?
            .get("price_cents")?
            .as_i64()
    }
}

/// What the load measured.
pub(crate) struct Measured {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) latency: Histogram<u64>,
    /// Time from the update's commit to each layer serving the new price.
    pub(crate) propagation: Vec<(String, Option<Duration>)>,
    pub(crate) updated_product: i64,
}

/// The endpoints whose price must change after the update.
pub(crate) struct Watch {
    pub(crate) gateway: String,
    pub(crate) product: String,
    pub(crate) order: String,
}

/// `workers` tasks read products and quotes through `gateway` for `run_for`, Zipf-distributed
/// over `products` ids; halfway, product 1's price changes; the time until the gateway, the
/// product service and the order service all serve it is measured.
pub(crate) async fn drive(
    http: &Http,
    gateway: &str,
    watch: Watch,
    products: u64,
    run_for: Duration,
    workers: usize,
) -> Result<Measured, BoxError> {
    let zipf = Zipf::new(products as f64, 1.0).map_err(|e| format!("zipf: {e}"))?;
    let latency = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let (requests, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (http, gateway, latency) = (http.clone(), gateway.to_owned(), latency.clone());
        let (requests, errors, stop) = (requests.clone(), errors.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(42 + w as u64);
            let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).ok();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id = zipf.sample(&mut rng) as u64;
                n += 1;
                // Three product reads to one quote (which the order service composes).
                let path = if n.is_multiple_of(4) {
                    format!("/quotes/{id}")
                } else {
                    format!("/products/{id}")
                };
                let started = Instant::now();
                let ok = matches!(
                    http.send("GET", &format!("{gateway}{path}"), "").await,
                    Ok((200, _))
                );
                let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                if let Some(h) = local.as_mut() {
                    let _ = h.record(us.max(1));
                }
                requests.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            if let Some(h) = local {
                let _ = latency.lock().await.add(&h);
            }
        }));
    }
    tokio::time::sleep(run_for / 2).await;
    // The update: through the gateway (an unsafe method: it invalidates the URL there too).
    let updated_product = 1;
    let old = http
        .price(&format!("{}/products/{updated_product}", watch.product))
        .await
        .unwrap_or(0);
    let new_price = old + 100;
    let layers = [
        (
            "gateway",
            format!("{}/products/{updated_product}", watch.gateway),
        ),
        (
            "product service",
            format!("{}/products/{updated_product}", watch.product),
        ),
        (
            "order service",
            format!("{}/quotes/{updated_product}", watch.order),
        ),
    ];
    // Every layer holds the old price before the change (the load has warmed them; this
    // makes sure), so the times below are each cache letting go of it.
    for (_, url) in &layers {
        let _ = http.price(url).await;
    }
    let started = Instant::now();
    let (status, body) = http
        .send(
            "PUT",
            &format!("{gateway}/products/{updated_product}"),
            &format!(r#"{{"price_cents":{new_price}}}"#),
        )
        .await?;
    if status != 200 {
        return Err(format!("the price update failed: {status} {body}").into());
    }
    let mut propagation: Vec<(String, Option<Duration>)> = layers
        .iter()
        .map(|(n, _)| ((*n).to_owned(), None))
        .collect();
    while started.elapsed() < Duration::from_secs(10)
        && propagation.iter().any(|(_, t)| t.is_none())
    {
        for (i, (_, url)) in layers.iter().enumerate() {
            if propagation[i].1.is_none() && http.price(url).await == Some(new_price) {
                propagation[i].1 = Some(started.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(
        run_for
            .saturating_sub(run_for / 2)
            .saturating_sub(started.elapsed()),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let latency = Arc::try_unwrap(latency)
        .map_err(|_| "latency still shared")?
        .into_inner();
    Ok(Measured {
        requests: requests.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        latency,
        propagation,
        updated_product,
    })
}
