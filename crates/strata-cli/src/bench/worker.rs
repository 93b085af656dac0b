//! Worker processes of the multi-process workloads.

use std::process::ExitCode;

use super::BoxError;

/// `strata bench-worker` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct WorkerArgs {}

pub(crate) async fn run(_args: WorkerArgs) -> Result<ExitCode, BoxError> {
    Err("not yet".into())
}
