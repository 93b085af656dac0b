//! Which Redis failures are worth trying again.

use redis::{RedisError, RetryMethod};
use strata::Error;

/// Maps a Redis failure to Strata's error: [`Error::Unavailable`] (retryable — connection
/// refused or dropped, timeouts, `LOADING`, `TRYAGAIN`, `MASTERDOWN`, `READONLY` during a
/// failover, a failed re-authentication) or [`Error::Store`] (trying again will not help —
/// script errors, `WRONGTYPE`, `NOPERM`).
///
/// The `redis` crate's own retry classification is the source of truth; we only fold it.
pub(crate) fn classify(e: RedisError) -> Error {
    if matches!(e.retry_method(), RetryMethod::NoRetry) {
        Error::store(e)
    } else {
        Error::unavailable(e)
    }
}

/// [`classify`] for the invalidation log: [`Error::Unavailable`] or [`Error::Log`].
pub(crate) fn classify_log(e: RedisError) -> Error {
    into_log_error(classify(e))
}

/// A failure of an invalidation log is a log error, not a store error (retryable ones stay
/// [`Error::Unavailable`]).
pub(crate) fn into_log_error(e: Error) -> Error {
    match e {
        Error::Store(source) => Error::Log(source),
        other => other,
    }
}
