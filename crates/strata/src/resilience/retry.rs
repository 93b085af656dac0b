//! Retries: capped exponential backoff with full jitter, under a budget.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};

/// How failed calls to the shared tier are tried again.
///
/// Only retryable failures ([`Error::is_retryable`](crate::Error::is_retryable): connection
/// lost, `LOADING`, `TRYAGAIN`, failover) are retried, within the call's timeout (see
/// [`Resilience`](crate::Resilience)) and while its breaker stays closed, at most `max_retries` times,
/// after a delay drawn uniformly from `[0, min(max_delay, min_delay · 2ⁿ)]` ("full jitter":
/// instances that failed together do not retry together).
///
/// A **budget** keeps retries from multiplying load during an outage: each call earns
/// `budget_ratio` of a retry, and `budget_floor` retries per second are free; a retry with no
/// budget left is not made. With the defaults, retries add at most 10 % to the calls, plus
/// 10 per second.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub(crate) max_retries: usize,
    pub(crate) min_delay: Duration,
    pub(crate) max_delay: Duration,
    pub(crate) budget_ratio: f64,
    pub(crate) budget_floor: f64,
}

impl Default for RetryPolicy {
    /// Up to 2 retries, 10 ms doubling to at most 100 ms, budget 10 % + 10/s.
    fn default() -> Self {
        RetryPolicy {
            max_retries: 2,
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
            budget_ratio: 0.1,
            budget_floor: 10.0,
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        }
    }

    /// At most this many retries per call (default 2).
    pub fn max_retries(mut self, n: usize) -> Self {
        self.max_retries = n;
        self
    }

    /// The backoff before the first retry, doubling up to `max` (default 10 ms to 100 ms).
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_delay = min;
        self.max_delay = max.max(min);
        self
    }

    /// Retries may add at most `ratio` of the calls made (default 0.1), plus `per_second`
    /// (default 10).
    pub fn budget(mut self, ratio: f64, per_second: f64) -> Self {
        self.budget_ratio = ratio.max(0.0);
        self.budget_floor = per_second.max(0.0);
        self
    }

    /// The delays before each retry of one call.
    pub(crate) fn delays(&self) -> impl Iterator<Item = Duration> + use<> {
        full_jitter(self.min_delay, self.max_delay).take(self.max_retries)
    }
}

/// Capped exponential backoff with full jitter: the n-th delay is drawn uniformly from
/// `[0, min(max, min · 2ⁿ)]`, without end (callers `take` what they need).
pub(crate) fn full_jitter(min: Duration, max: Duration) -> impl Iterator<Item = Duration> + use<> {
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .without_max_times()
        .build()
        .map(|cap| cap.mul_f64(fastrand::f64()))
}

/// The retry budget: a token bucket filled by calls and by time, drained by retries. Lock-free:
/// every call deposits, so this sits on every L2 call's path.
pub(crate) struct RetryBudget {
    /// Millionths of a retry earned per call.
    ratio: i64,
    /// Millionths of a retry earned per millisecond.
    floor_per_ms: i64,
    /// The most that can be saved up (millionths): one second's floor plus the ratio of 100
    /// calls, so that a quiet spell does not bank a burst of retries for the next outage.
    cap: i64,
    /// Millionths of a retry available.
    tokens: AtomicI64,
    /// When time last paid in (ms since `epoch`).
    paid_at: AtomicU64,
    epoch: Instant,
}

const UNIT: f64 = 1_000_000.0;

impl RetryBudget {
    pub(crate) fn new(policy: &RetryPolicy) -> Self {
        let cap = ((policy.budget_floor + policy.budget_ratio * 100.0) * UNIT) as i64;
        RetryBudget {
            ratio: (policy.budget_ratio * UNIT) as i64,
            floor_per_ms: (policy.budget_floor * UNIT / 1000.0) as i64,
            cap,
            tokens: AtomicI64::new(cap),
            paid_at: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn add(&self, amount: i64) {
        let cap = self.cap;
        let _ = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t < cap).then(|| (t + amount).min(cap))
            });
    }

    /// A call was made: it earns a fraction of a retry.
    pub(crate) fn deposit(&self) {
        self.add(self.ratio);
    }

    /// Takes one retry from the budget, if there is one.
    pub(crate) fn withdraw(&self) -> bool {
        // Time pays in first: whoever moves `paid_at` forward adds what it covers.
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let then = self.paid_at.swap(now, Ordering::AcqRel);
        let elapsed = i64::try_from(now.saturating_sub(then)).unwrap_or(i64::MAX);
        self.add(elapsed.saturating_mul(self.floor_per_ms));
        self.tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t >= UNIT as i64).then(|| t - UNIT as i64)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_capped_and_jittered_below_the_cap() {
        let policy = RetryPolicy::default()
            .max_retries(6)
            .backoff(Duration::from_millis(10), Duration::from_millis(40));
        let delays: Vec<_> = policy.delays().collect();
        assert_eq!(delays.len(), 6);
        let caps = [10, 20, 40, 40, 40, 40];
        for (d, cap) in delays.iter().zip(caps) {
            assert!(*d <= Duration::from_millis(cap), "{d:?} over {cap} ms");
        }
    }

    #[test]
    fn the_budget_allows_the_ratio_of_calls_and_no_more() {
        let budget = RetryBudget::new(&RetryPolicy::default().budget(0.25, 0.0));
        // The starting allowance (the cap) is a quarter of 100 calls.
        let mut granted = (0..100).filter(|_| budget.withdraw()).count();
        assert_eq!(granted, 25);
        for _ in 0..20 {
            budget.deposit();
        }
        granted = (0..100).filter(|_| budget.withdraw()).count();
        assert_eq!(granted, 5, "20 calls at 25 % earn 5 retries");
    }
}
