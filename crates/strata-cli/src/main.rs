//! `strata`: the command-line face of Strata.
//!
//! - `strata demo`: the reference e-commerce landscape (five services, the gateway, Redis),
//!   seeded, driven with a Zipf load, a product repriced mid-run, and reported on.
//! - `strata stats`: hit rates per service over all instances, kept in Redis by each
//!   instance (batched), refreshed live with `--watch`.
//! - `strata top`: the keys each service reads most, over all its instances (sampled by each,
//!   published with its stats): what a stampede hits.
//! - `strata gateway`: a caching reverse proxy (RFC 9111 shared cache, collapsing, purges)
//!   over the same hybrid cache, shared by every gateway instance through Redis.
//! - `strata load`: drives any HTTP service (a staging URL) with a Zipf load and forced
//!   invalidations; hit ratio from the responses and the services' counters, latency without
//!   coordinated omission, staleness; CI gates.
//! - `strata doctor`: checks a Redis before a deploy (memory policy, persistence, replicas,
//!   cluster state, ACL permissions per namespace, latency, features), a verdict and a fix each.
//! - `strata bench <workload>`: runs the reference workloads of `WORKLOADS.md` against Strata
//!   and a hand-written cache-aside baseline, prints figures, draws plots, and gates CI.
// Lints: the workspace's (`unsafe_code` denied; one module, `bench::shared`, maps memory
// that the bench's processes share and allows it there alone).

mod bench;
#[cfg(feature = "demo")]
mod demo;
mod doctor;
mod gate;
mod gateway;
mod load;
#[cfg(feature = "plots")]
mod plot;
mod stats;
mod telemetry;
mod top;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Any error a command ends with: printed for the user, with exit code 2.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

// The library leaves the allocator to the program. This one allocates per request in the
// gateway and per miss in the bench, across threads; mimalloc's thread-local free lists cost
// less than glibc's arenas there (measured in BENCHMARKS.md, "Allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Caching for Rust microservices.
#[derive(Parser)]
#[command(name = "strata", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the reference e-commerce landscape, drive it, and report.
    #[cfg(feature = "demo")]
    Demo(demo::DemoArgs),
    /// One service of the demo landscape (started by `strata demo`).
    #[cfg(feature = "demo")]
    #[command(hide = true)]
    DemoService(demo::ServiceArgs),
    /// Hit rates per service over all instances, as kept in Redis (`--watch` to follow).
    Stats(stats::StatsArgs),
    /// The keys each service reads most, over all its instances, as kept in Redis.
    Top(top::TopArgs),
    /// Run the caching reverse proxy.
    Gateway(gateway::GatewayArgs),
    /// Drive any HTTP service with a Zipf load and invalidations; hit ratio, latency,
    /// staleness, CI gates.
    Load(Box<load::LoadArgs>),
    /// Check a Redis before Strata runs on it: memory policy, persistence, replicas, cluster,
    /// ACL permissions per namespace, latency, features.
    Doctor(doctor::DoctorArgs),
    /// Run a reference workload (W1–W5) and print its figures.
    Bench(bench::BenchArgs),
    /// One instance of a multi-process workload (started by `strata bench`).
    #[command(hide = true)]
    BenchWorker(bench::worker::WorkerArgs),
}

impl Command {
    /// The process's name in traces.
    fn service_name(&self) -> String {
        match self {
            #[cfg(feature = "demo")]
            Command::DemoService(args) => args.service_name().to_owned(),
            Command::Gateway(_) => "strata-gateway".into(),
            #[cfg(feature = "demo")]
            Command::Demo(_) => "strata-demo".into(),
            Command::Stats(_) => "strata-stats".into(),
            Command::Top(_) => "strata-top".into(),
            Command::Bench(_) | Command::BenchWorker(_) => "strata-bench".into(),
            Command::Load(_) => "strata-load".into(),
            Command::Doctor(_) => "strata-doctor".into(),
        }
    }
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
        let _telemetry = telemetry::init(&cli.command.service_name());
        match cli.command {
            #[cfg(feature = "demo")]
            Command::Demo(args) => until_interrupted(demo::run(args)).await,
            #[cfg(feature = "demo")]
            Command::DemoService(args) => demo::service(args).await,
            Command::Gateway(args) => gateway::run(args).await,
            Command::Stats(args) => stats::run(args).await,
            Command::Top(args) => top::run(args).await,
            Command::Bench(args) => until_interrupted(bench::run(args)).await,
            // Ctrl-C ends the load early with a report, not without one.
            Command::Load(args) => load::run(*args).await,
            Command::Doctor(args) => doctor::run(args).await,
            Command::BenchWorker(args) => bench::worker(args).await,
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

/// Runs `work` until it ends or the process is asked to stop (SIGINT, SIGTERM). Then `work` is
/// dropped with everything it holds — the `redis-server` it started, the processes it runs —
/// so nothing outlives the command, and it exits 130 as an interrupted command does.
async fn until_interrupted(
    work: impl std::future::Future<Output = Result<ExitCode, BoxError>>,
) -> Result<ExitCode, BoxError> {
    use tokio::signal::unix::{SignalKind, signal};
    // Listening from now, before `work` runs: a signal that came before the first poll
    // would otherwise end the process the default way, leaving its servers behind.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        done = work => done,
        _ = interrupt.recv() => interrupted(),
        _ = terminate.recv() => interrupted(),
    }
}

fn interrupted() -> Result<ExitCode, BoxError> {
    eprintln!("interrupted: stopping what was started");
    Ok(ExitCode::from(130))
}
