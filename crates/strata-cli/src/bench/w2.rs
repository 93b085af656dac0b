//! w2 (next step).

use super::{BenchArgs, BoxError, Run, Target};

pub(crate) async fn run(_args: &BenchArgs, _target: &Target) -> Result<Vec<Run>, BoxError> {
    Err("not yet".into())
}
