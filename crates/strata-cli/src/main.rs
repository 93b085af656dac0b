//! `strata`: the command-line face of Strata.
//!
//! - `strata gateway`: a caching reverse proxy (RFC 9111 shared cache, collapsing, purges)
//!   over the same hybrid cache, shared by every gateway instance through Redis.
//! - `strata bench <workload>`: runs the reference workloads of `WORKLOADS.md` against Strata
//!   and a hand-written cache-aside baseline, prints figures, draws plots, and gates CI.
#![warn(missing_docs, unreachable_pub)]
#![forbid(unsafe_code)]

mod bench;
mod gateway;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Caching for Rust microservices.
#[derive(Parser)]
#[command(name = "strata", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the caching reverse proxy.
    Gateway(gateway::GatewayArgs),
    /// Run a reference workload (W1–W4) and print its figures.
    Bench(bench::BenchArgs),
    /// One instance of a multi-process workload (started by `strata bench`).
    #[command(hide = true)]
    BenchWorker(bench::worker::WorkerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Gateway(args) => gateway::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::BenchWorker(args) => bench::worker::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
