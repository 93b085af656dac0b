//! `strata gateway`: the [`strata_gateway`] library, configured from a file or the quick
//! form's flags, until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use strata_gateway::{Config, Gateway, shutdown_signal};

use crate::BoxError;

/// `strata gateway`.
#[derive(Args, Debug)]
pub(crate) struct GatewayArgs {
    /// The configuration file (routes, cache policies, Redis, admin token).
    #[arg(long, short, conflicts_with_all = ["upstream"])]
    config: Option<PathBuf>,
    /// Quick form: where to listen.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Quick form: one upstream for every path, policy from its headers.
    #[arg(long, required_unless_present = "config")]
    upstream: Option<String>,
}

pub(crate) async fn run(args: GatewayArgs) -> Result<ExitCode, BoxError> {
    let config = match (&args.config, &args.upstream) {
        (Some(path), _) => Config::load(path)?,
        (None, Some(upstream)) => Config::quick(args.listen, upstream)?,
        (None, None) => return Err("give --config FILE, or --upstream URL".into()),
    };
    // The file's settings win; else the environment's.
    let config = config.with_env();
    let listen = config.listen();
    let gateway = Gateway::from_config(config).await?;
    let listeners = gateway
        .bind()
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    eprintln!(
        "strata gateway on http://{} — {}",
        listeners.local_addr()?,
        gateway.summary()
    );
    gateway.serve(listeners, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
