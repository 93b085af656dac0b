//! Resilience around the shared tier: every call to the L2 store (leases included) and to the
//! invalidation log goes through a [`Guard`]: a bulkhead (L2 only), a circuit breaker per
//! target, a timeout per kind of call, and retries of retryable failures under a budget.
//! Loader calls have a bulkhead of their own.
//!
//! What a caller sees: reads never fail because of the shared tier (L1, the loader or a stale
//! value answer); writes defer their shared half while it is unreachable
//! ([`HybridCache::health`](crate::HybridCache::health) shows how many are pending).

mod breaker;
mod bulkhead;
mod circuit_breaker;
mod guard;
mod guarded_store;
mod retry;

use std::time::Duration;

pub use breaker::{BreakerConfig, BreakerState};
pub use bulkhead::Bulkhead;
pub(crate) use bulkhead::Compartment;
pub use circuit_breaker::{BreakerError, CircuitBreaker};
pub(crate) use guard::{Call, Guard};
pub(crate) use guarded_store::GuardedStore;
pub use retry::RetryPolicy;
pub(crate) use retry::full_jitter;

/// Timeouts, retries, circuit breakers and bulkheads of one cache; see
/// [`HybridCacheBuilder::resilience`](crate::HybridCacheBuilder::resilience).
///
/// ```
/// use std::time::Duration;
/// use strata::{BreakerConfig, Bulkhead, Resilience, RetryPolicy};
/// let resilience = Resilience::default()
///     .read_timeout(Duration::from_millis(100))
///     .retry(RetryPolicy::default().max_retries(1))
///     .breaker(BreakerConfig::default().open_for(Duration::from_millis(500)))
///     .bulkhead(Bulkhead::default().loader_calls(32));
/// ```
#[derive(Clone, Debug)]
pub struct Resilience {
    pub(crate) read_timeout: Duration,
    pub(crate) write_timeout: Duration,
    pub(crate) admin_timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) breaker: BreakerConfig,
    pub(crate) bulkhead: Bulkhead,
}

impl Default for Resilience {
    /// Reads 250 ms, writes 500 ms, clears 10 s; [`RetryPolicy::default`],
    /// [`BreakerConfig::default`], [`Bulkhead::default`].
    fn default() -> Self {
        Resilience {
            read_timeout: Duration::from_millis(250),
            write_timeout: Duration::from_millis(500),
            admin_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
            bulkhead: Bulkhead::default(),
        }
    }
}

impl Resilience {
    /// The longest an L2 read, generation read or lease call may take, retries included
    /// (default 250 ms). This bounds what an outage adds to a read before the breaker opens;
    /// calls still waiting when it opens give up at once.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// The longest an L2 write, invalidation or log append may take, retries included
    /// (default 500 ms).
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// The longest a namespace clear may take (default 10 s).
    pub fn admin_timeout(mut self, timeout: Duration) -> Self {
        self.admin_timeout = timeout;
        self
    }

    /// How retryable failures are retried.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// When the circuit breakers (one for L2, one for the log) open and close.
    pub fn breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = config;
        self
    }

    /// How many L2 operations and loader calls run at once.
    pub fn bulkhead(mut self, bulkhead: Bulkhead) -> Self {
        self.bulkhead = bulkhead;
        self
    }
}

/// What [`HybridCache::health`](crate::HybridCache::health) reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// The L2 store's circuit breaker (leases included).
    pub l2: BreakerState,
    /// The invalidation log's circuit breaker (publishes).
    pub log: BreakerState,
    /// Writes whose shared half is waiting for the shared tier to come back.
    pub deferred_writes: usize,
    /// How long since the log's follower last reported this instance caught up — the age of
    /// what L1 can vouch for (`None` for a log that does not report, e.g. pub/sub). Seconds
    /// here mean the follower is cut off or behind.
    pub log_silent_for: Option<std::time::Duration>,
}

/// A call refused because its target's circuit breaker is open.
#[derive(Debug, thiserror::Error)]
#[error("circuit breaker for {target} is open")]
pub(crate) struct CircuitOpen {
    pub(crate) target: &'static str,
}

/// A call that did not finish within its timeout.
#[derive(Debug, thiserror::Error)]
#[error("{target} did not answer within {after:?}")]
pub(crate) struct TimedOut {
    pub(crate) target: &'static str,
    pub(crate) after: Duration,
}
