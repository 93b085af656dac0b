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

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("target", &self.target)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
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
        // One admission per call, retries inside it: a half-open probe gets its retries too
        // (the first attempt after an outage often only wakes the client's reconnect).
        let Some(admitted) = self.breaker.admit(Some(&self.counters)) else {
            self.rejected();
            return Err(Error::unavailable(CircuitOpen {
                target: self.target,
            }));
        };
        self.budget.deposit();
        // The timeout bounds the whole call, retries included: what a caller waits is what
        // was configured. A breaker that opens meanwhile ends the wait at once.
        let after = self.timeouts[kind as usize];
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started + after);
        let opened = self.breaker.opened();
        let mut opened = std::pin::pin!(opened);
        // Built at the first retry only: most calls never need it.
        let mut delays = None;
        let result = loop {
            let attempt = tokio::time::timeout_at(deadline, op());
            let result = tokio::select! {
                biased;
                result = attempt => match result {
                    Ok(result) => result,
                    Err(_) => break Err(self.timed_out(after)),
                },
                () = &mut opened => break Err(Error::unavailable(CircuitOpen {
                    target: self.target,
                })),
            };
            match result {
                Err(e) if e.is_retryable() => {
                    let next = delays.get_or_insert_with(|| self.retry.delays()).next();
                    let Some(delay) = next else {
                        break Err(e);
                    };
                    let in_time = tokio::time::Instant::now() + delay < deadline;
                    if !in_time || !self.budget.withdraw() {
                        break Err(e);
                    }
                    self.counters.incr(Counter::retries);
                    tokio::time::sleep(delay).await;
                }
                other => break other,
            }
        };
        let outcome = match &result {
            Err(Error::Unavailable(_)) => Outcome::Failed,
            _ => Outcome::Answered,
        };
        self.breaker
            .record(admitted, outcome, started.elapsed(), Some(&self.counters));
        result
    }

    /// Runs `op` once under the call's timeout, whatever the breaker says: for a call that
    /// gives back what this instance holds in the shared tier (a load's lease), which other
    /// instances wait on. A breaker opened by a stall here (this process starved of CPU, say)
    /// would otherwise leave them waiting out the lease's TTL; if the server is really down,
    /// this one command fails fast or times out, in the background. Its outcome is not the
    /// breaker's to count. Also for the replica wait a write hands back
    /// ([`ReplicaWait`](crate::ReplicaWait)): the rest of a call the breaker counted already,
    /// and not one to retry (a `WAIT` covers what its own connection wrote).
    pub(crate) async fn hand_back<T>(
        &self,
        kind: Call,
        op: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let after = self.timeouts[kind as usize];
        tokio::time::timeout(after, op)
            .await
            .unwrap_or_else(|_| Err(self.timed_out(after)))
    }

    fn timed_out(&self, after: Duration) -> Error {
        Error::unavailable(TimedOut {
            target: self.target,
            after,
        })
    }

    fn rejected(&self) {
        self.counters.incr(Counter::calls_rejected);
    }
}
