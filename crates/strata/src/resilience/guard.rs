//! `Guard`: every call to one target of the shared tier goes through it — bulkhead, circuit
//! breaker, timeout, retries under the budget.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::breaker::{Breaker, BreakerState, Outcome};
use super::bulkhead::Compartment;
use super::retry::{RetryBudget, RetryPolicy};
use super::{CircuitOpen, Resilience, TimedOut};
use crate::error::{Error, Result};
use crate::stats::{Counter, Counters};

/// What a call does, for its timeout.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Call {
    /// On the read path: reads, generations, leases.
    Read,
    /// Writes, invalidations, log appends.
    Write,
    /// Namespace-wide work: clears.
    Admin,
}

/// The protection around one target.
pub(crate) struct Guard {
    target: &'static str,
    breaker: Breaker,
    retry: RetryPolicy,
    budget: RetryBudget,
    timeouts: [Duration; 3],
    compartment: Option<Compartment>,
    counters: Arc<Counters>,
}

impl Guard {
    /// A guard for `target`; `bulkhead` bounds its concurrent calls.
    pub(crate) fn new(
        namespace: &str,
        target: &'static str,
        config: &Resilience,
        bulkhead: bool,
        counters: Arc<Counters>,
    ) -> Self {
        Guard {
            target,
            breaker: Breaker::new(namespace, target, config.breaker.clone()),
            budget: RetryBudget::new(&config.retry),
            retry: config.retry.clone(),
            timeouts: [
                config.read_timeout,
                config.write_timeout,
                config.admin_timeout,
            ],
            compartment: bulkhead.then(|| {
                Compartment::new(
                    config.bulkhead.l2,
                    config.bulkhead.max_wait,
                    "L2 operations",
                )
            }),
            counters,
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// Runs `op` under the guard. `op` is called again for each retry.
    pub(crate) async fn call<T, F, Fut>(&self, kind: Call, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let _slot = match &self.compartment {
            Some(c) => Some(c.enter().await.inspect_err(|_| self.rejected())?),
            None => None,
        };
        self.budget.deposit();
        let after = self.timeouts[kind as usize];
        let mut delays = self.retry.delays();
        loop {
            let Some(admitted) = self.breaker.admit(&self.counters) else {
                self.rejected();
                return Err(Error::unavailable(CircuitOpen {
                    target: self.target,
                }));
            };
            let started = Instant::now();
            let result = match tokio::time::timeout(after, op()).await {
                Ok(result) => result,
                Err(_) => Err(Error::unavailable(TimedOut {
                    target: self.target,
                    after,
                })),
            };
            let outcome = match &result {
                Err(Error::Unavailable(_)) => Outcome::Failed,
                _ => Outcome::Answered,
            };
            self.breaker
                .record(admitted, outcome, started.elapsed(), &self.counters);
            match result {
                Err(e) if e.is_retryable() => match delays.next() {
                    Some(delay) if self.budget.withdraw() => {
                        self.counters.incr(Counter::retries);
                        tokio::time::sleep(delay).await;
                    }
                    _ => return Err(e),
                },
                other => return other,
            }
        }
    }

    fn rejected(&self) {
        self.counters.incr(Counter::calls_rejected);
    }
}
