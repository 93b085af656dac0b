//! The inventory service dies: the order service goes on quoting from what it last knew,
//! its breaker opens, and when inventory is back the breaker closes again.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::load::Http;
use super::processes::Process;

use crate::BoxError;

/// The products quoted before, during and after the outage.
const QUOTED: i64 = 20;
/// How long quotes are read with inventory down: past the order service's 2 s stock TTL, so
/// every level it holds has expired and is served stale.
pub(crate) const DOWN_FOR: Duration = Duration::from_secs(3);

/// Kills `inventory` (SIGKILL), reads quotes from the order service at `order` while it is
/// down, restarts it, and measures how long until quotes carry live stock again.
pub(crate) async fn inventory_down(
    http: &Http,
    order: &str,
    inventory: &mut Process,
) -> Result<Value, BoxError> {
    let quote =
        |id: i64| async move { http.send("GET", &format!("{order}/quotes/{id}"), "").await };
    // The order service knows every quoted product's stock before the outage.
    for id in 1..=QUOTED {
        let (status, body) = quote(id).await?;
        if status != 200 {
            return Err(format!("quote {id} before the outage: {status} {body}").into());
        }
    }
    let stale_before = stale_served(http, order).await?;
    inventory.kill();
    let started = Instant::now();
    let (mut quotes, mut errors, mut unknown) = (0u64, 0u64, 0u64);
    let mut breaker_opened = false;
    while started.elapsed() < DOWN_FOR {
        for id in 1..=QUOTED {
            quotes += 1;
            match quote(id).await {
                Ok((200, body)) => {
                    let units = serde_json::from_str::<Value>(&body)
                        .ok()
                        .and_then(|q| q.get("units").cloned());
                    if units.is_none_or(|u| u.is_null()) {
                        unknown += 1;
                    }
                }
                _ => errors += 1,
            }
        }
        breaker_opened |= breaker_state(http, order).await? == Some(2);
    }
    let stale = stale_served(http, order).await? - stale_before;

    inventory.restart()?;
    let back = Instant::now();
    // Recovered once the breaker has let a probe through (a quote whose stock level had
    // expired) and closed.
    let recovered = loop {
        for id in 1..=QUOTED {
            let _ = quote(id).await;
        }
        if breaker_state(http, order).await? == Some(0) {
            break Some(back.elapsed());
        }
        if back.elapsed() > Duration::from_secs(15) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    Ok(json!({
        "quotes": quotes,
        "errors": errors,
        "units_unknown": unknown,
        "stale_served": stale,
        "breaker_opened": breaker_opened,
        "breaker_closed_after_restart_ms": recovered.map(|t| t.as_secs_f64() * 1000.0),
    }))
}

/// The order service's count of stale answers.
async fn stale_served(http: &Http, order: &str) -> Result<f64, BoxError> {
    let (_, body) = http.send("GET", &format!("{order}/_stats"), "").await?;
    let stats: Value = serde_json::from_str(&body)?;
    Ok(stats
        .get("stale_served")
        .and_then(Value::as_f64)
        .unwrap_or(0.0))
}

/// The order service's breaker towards inventory (0 closed, 1 half-open, 2 open), from its
/// `/metrics`.
async fn breaker_state(http: &Http, order: &str) -> Result<Option<u8>, BoxError> {
    let (_, metrics) = http.send("GET", &format!("{order}/metrics"), "").await?;
    Ok(super::metrics::samples(&metrics, "strata_breaker_state")
        .find(|(labels, _)| {
            super::metrics::label(labels, "namespace") == Some("order")
                && super::metrics::label(labels, "target") == Some("inventory")
        })
        .map(|(_, v)| v as u8))
}
