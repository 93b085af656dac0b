//! A gateway inside a program of your own: every path of `UPSTREAM` (default
//! `http://127.0.0.1:3000`) cached on `127.0.0.1:8080`, shared through `REDIS_URL` if set.
//!
//! ```text
//! cargo run -p strata-gateway --example embed
//! ```

use strata_gateway::{Config, Gateway, shutdown_signal};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let upstream = std::env::var("UPSTREAM").unwrap_or_else(|_| "http://127.0.0.1:3000".into());
    let config = Config::quick("127.0.0.1:8080".parse()?, &upstream)?.with_env();
    let gateway = Gateway::from_config(config).await?;
    let listeners = gateway.bind()?;
    println!("caching {upstream} on http://{}", listeners.local_addr()?);
    if let Some(admin) = listeners.admin_addr() {
        println!("purges, /metrics and the dashboard on http://{admin}");
    }
    println!("{}", gateway.summary());
    gateway.serve(listeners, shutdown_signal()).await?;
    Ok(())
}
