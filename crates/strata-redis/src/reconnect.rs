//! The backoff between reconnect attempts of the followers' dedicated connections.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// 50 ms doubling to 500 ms, plus up to as much again in jitter, so that instances cut off together do not come back in
/// lockstep; never gives up (a follower lives as long as its cache).
pub(crate) fn reconnect_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_millis(500))
        .with_jitter()
        .without_max_times()
        .build()
}
