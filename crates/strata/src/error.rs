//! The one error type of the crate.

use std::sync::Arc;
use std::time::Duration;

/// A shareable, type-erased error source.
///
/// Sources are reference-counted so that one failed load can be handed, unchanged, to every
/// caller that was waiting on it (single-flight).
pub type BoxError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in Strata.
///
/// Failures of the L2 store or the invalidation log on the *read* path never surface here: a read
/// falls back to L1, the loader or a stale value and counts the failure in [`Stats`](crate::Stats).
/// Writes (`set`, `invalidate`, …) do report them, because the caller must know when other
/// instances may not have seen the change.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The builder or an option was given a value it cannot work with.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A key is longer than the cache's `max_key_bytes`; nothing was read or written.
    #[error("key is {len} bytes, over the limit of {max} bytes")]
    KeyTooLong {
        /// Length of the key in bytes.
        len: usize,
        /// The configured limit.
        max: usize,
    },

    /// An encoded value is larger than the cache's `max_value_bytes`; nothing was written.
    #[error("value for key {key:?} encodes to {len} bytes, over the limit of {max} bytes")]
    ValueTooLarge {
        /// The key whose value was refused.
        key: String,
        /// Encoded length in bytes.
        len: usize,
        /// The configured limit.
        max: usize,
    },

    /// The loader returned an error and no stale value could be served in its place.
    #[error("loader for key {key:?} failed: {source}")]
    Loader {
        /// The key being loaded.
        key: String,
        /// What the loader returned.
        source: BoxError,
    },

    /// The loader did not finish within its hard timeout and no stale value could be served.
    #[error("loader for key {key:?} timed out after {after:?}")]
    LoaderTimeout {
        /// The key being loaded.
        key: String,
        /// The hard timeout that elapsed.
        after: Duration,
    },

    /// The key is cached as "not found" (negative caching), but the caller asked for a value.
    #[error("key {0:?} is cached as not found")]
    NotFound(String),

    /// The key holds a value of another Rust type than the one asked for.
    #[error("key {key:?} holds a value that is not a {expected}")]
    TypeMismatch {
        /// The key.
        key: String,
        /// The type the caller asked for.
        expected: &'static str,
    },

    /// A value could not be encoded with the cache's codec.
    #[error("cannot encode value for key {key:?}: {message}")]
    Encode {
        /// The key.
        key: String,
        /// The codec's message.
        message: String,
    },

    /// Bytes could not be decoded (corrupt, foreign, or written by an unknown codec or format).
    ///
    /// Reads never return this: they count it and treat the entry as a miss.
    #[error("cannot decode: {0}")]
    Decode(String),

    /// The L2 store failed and trying again will not help (a refused command, a script error,
    /// missing ACL permissions).
    #[error("L2 store error: {0}")]
    Store(BoxError),

    /// The L2 store or the invalidation log could not be reached, or answered that it cannot
    /// serve now (connection refused or dropped, timeout, `LOADING`, `TRYAGAIN`, failover in
    /// progress, circuit breaker open). Retryable.
    ///
    /// Reads never return this. Writes (`set`, `invalidate`, …) defer their shared half while
    /// the shared tier is unreachable and replay it once it is back (see
    /// [`HybridCache::health`](crate::HybridCache::health)); they return this only from a
    /// cache with [`max_staleness`](crate::HybridCacheBuilder::max_staleness), which
    /// acknowledges a write only once every instance can be told.
    #[error("unavailable: {0}")]
    Unavailable(BoxError),

    /// A bulkhead was full: too many loader calls (or L2 operations) of this cache were in
    /// progress for the configured wait, and no stale value could be served.
    #[error("overloaded: more than {limit} concurrent {what} for longer than the bulkhead's wait")]
    Overloaded {
        /// What was limited: `"loader calls"` or `"L2 operations"`.
        what: &'static str,
        /// The configured limit.
        limit: usize,
    },

    /// The invalidation log (backplane) failed.
    #[error("invalidation log error: {0}")]
    Log(BoxError),

    /// A load this call was waiting on ended without an answer (its task was cancelled).
    #[error("load of key {0:?} was abandoned")]
    Abandoned(String),
}

impl Error {
    /// Wraps an L2 store failure.
    pub fn store(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Store(Arc::new(source))
    }

    /// Wraps a failure to reach the L2 store or the log that may pass if tried again
    /// (see [`Error::Unavailable`]).
    pub fn unavailable(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Unavailable(Arc::new(source))
    }

    /// Whether trying again later may succeed: [`Error::Unavailable`] and
    /// [`Error::Overloaded`].
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::Overloaded { .. })
    }

    /// Wraps an invalidation log failure.
    pub fn log(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Log(Arc::new(source))
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Converts a loader's error into a shareable source.
pub(crate) fn box_error<E: Into<Box<dyn std::error::Error + Send + Sync>>>(e: E) -> BoxError {
    Arc::from(e.into())
}
