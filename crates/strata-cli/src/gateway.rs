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
    /// Quick form: where the admin API, `/metrics` and the dashboard listen, or `off`
    /// (default: loopback, the port after `--listen`'s).
    #[arg(long, conflicts_with = "config", value_parser = admin_listen)]
    admin_listen: Option<AdminAt>,
}

/// `--admin-listen`: an address, or `off`.
#[derive(Clone, Copy, Debug)]
struct AdminAt(Option<SocketAddr>);

fn admin_listen(text: &str) -> Result<AdminAt, String> {
    if text == "off" {
        return Ok(AdminAt(None));
    }
    text.parse()
        .map(|a| AdminAt(Some(a)))
        .map_err(|_| format!("{text:?} is not an address (expected e.g. 127.0.0.1:8081, or off)"))
}

pub(crate) async fn run(args: GatewayArgs) -> Result<ExitCode, BoxError> {
    let config = match (&args.config, &args.upstream) {
        (Some(path), _) => Config::load(path)?,
        (None, Some(upstream)) => {
            let config = Config::quick(args.listen, upstream)?;
            match args.admin_listen {
                Some(AdminAt(at)) => config.with_admin_listen(at),
                None => config,
            }
        }
        (None, None) => return Err("give --config FILE, or --upstream URL".into()),
    };
    // The file's settings win; else the environment's.
    let config = config.with_env();
    let gateway = Gateway::from_config(config).await?;
    let listeners = gateway.bind()?;
    let admin = listeners
        .admin_addr()
        .map(|a| format!(" (admin on http://{a})"))
        .unwrap_or_default();
    eprintln!(
        "strata gateway on http://{}{admin} — {}",
        listeners.local_addr()?,
        gateway.summary()
    );
    gateway.serve(listeners, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
