//! The circuit breaker: stop calling a target that keeps failing, probe it now and then,
//! resume when a probe succeeds.
//!
//! Our own (≈150 lines) rather than a crate: its states feed our metrics and health, its
//! outcomes come from our own error classification, and the admit check on every L2 call must
//! be one atomic load while closed.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use crate::stats::{Counter, Counters};

/// When a circuit breaker opens and how it probes its way back.
///
/// It opens after `consecutive_failures` failed or slow calls in a row, or when at least
/// `minimum_calls` calls in the current `window` failed or were slow at `failure_rate` or
/// more. Open, it refuses calls for `open_for`; then it lets `probes` calls through
/// (half-open): one success closes it, one failure opens it again.
#[derive(Clone, Debug)]
pub struct BreakerConfig {
    pub(crate) consecutive_failures: u32,
    pub(crate) failure_rate: f64,
    pub(crate) minimum_calls: u32,
    pub(crate) window: Duration,
    pub(crate) slow_call: Duration,
    pub(crate) open_for: Duration,
    pub(crate) probes: u32,
}

impl Default for BreakerConfig {
    /// 5 failures in a row, or half of at least 20 calls in 10 s; calls over 300 ms count as
    /// failures; open for 1 s; one probe at a time.
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            failure_rate: 0.5,
            minimum_calls: 20,
            window: Duration::from_secs(10),
            slow_call: Duration::from_millis(300),
            open_for: Duration::from_secs(1),
            probes: 1,
        }
    }
}

impl BreakerConfig {
    /// Opens after this many failed or slow calls in a row (default 5; at least 1).
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive_failures = n.max(1);
        self
    }

    /// Opens when this fraction of the window's calls failed or were slow (default 0.5), once
    /// the window holds at least `minimum_calls` (default 20).
    pub fn failure_rate(mut self, rate: f64, minimum_calls: u32) -> Self {
        self.failure_rate = rate.clamp(0.0, 1.0);
        self.minimum_calls = minimum_calls.max(1);
        self
    }

    /// The span over which the failure rate is counted (default 10 s).
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// A call that succeeds but takes longer than this counts as a failure (default 300 ms).
    pub fn slow_call(mut self, threshold: Duration) -> Self {
        self.slow_call = threshold;
        self
    }

    /// How long the breaker stays open before it probes (default 1 s).
    pub fn open_for(mut self, wait: Duration) -> Self {
        self.open_for = wait;
        self
    }

    /// How many calls may probe at once while half-open (default 1; at least 1).
    pub fn probes(mut self, n: u32) -> Self {
        self.probes = n.max(1);
        self
    }
}

/// The state of a circuit breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls go through.
    Closed = 0,
    /// A few probe calls go through; the next outcome decides.
    HalfOpen = 1,
    /// Calls are refused without reaching the target.
    Open = 2,
}

impl BreakerState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => BreakerState::Closed,
            1 => BreakerState::HalfOpen,
            _ => BreakerState::Open,
        }
    }

    fn label(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }
}

/// What the breaker needs to know of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The target answered (even with an error of the caller's making).
    Answered,
    /// The target could not be reached or did not answer in time.
    Failed,
}

/// Leave to make one call; a probe's slot is given back when it is dropped.
pub(crate) struct Admitted<'a> {
    breaker: &'a Breaker,
    probe: bool,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if self.probe {
            let mut w = self.breaker.lock();
            w.probes_in_flight = w.probes_in_flight.saturating_sub(1);
        }
    }
}

#[derive(Default)]
struct Window {
    started: Option<Instant>,
    calls: u32,
    failures: u32,
    consecutive: u32,
    opened_at: Option<Instant>,
    probes_in_flight: u32,
}

/// One circuit breaker, for one target (the L2 store, the invalidation log).
pub(crate) struct Breaker {
    target: String,
    namespace: String,
    config: BreakerConfig,
    state: AtomicU8,
    window: Mutex<Window>,
    gauge: metrics::Gauge,
    /// Woken when the breaker opens: calls still waiting on the target give up at once
    /// instead of each waiting out its timeout.
    opened: Notify,
}

impl Breaker {
    pub(crate) fn new(namespace: &str, target: &str, config: BreakerConfig) -> Self {
        let gauge = metrics::gauge!("strata_breaker_state", "namespace" => namespace.to_owned(), "target" => target.to_owned());
        gauge.set(0.0);
        Breaker {
            target: target.to_owned(),
            namespace: namespace.to_owned(),
            config,
            state: AtomicU8::new(0),
            window: Mutex::new(Window::default()),
            gauge,
            opened: Notify::new(),
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        BreakerState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Completes when the breaker next opens (counted from this call on).
    pub(crate) fn opened(&self) -> Notified<'_> {
        self.opened.notified()
    }

    /// Leave to call the target, or `None` while the breaker refuses calls. `counters`: the
    /// cache's, when the breaker guards one of its tiers.
    pub(crate) fn admit(&self, counters: Option<&Counters>) -> Option<Admitted<'_>> {
        if self.state() == BreakerState::Closed {
            return Some(Admitted {
                breaker: self,
                probe: false,
            });
        }
        let mut w = self.lock();
        let state = self.state();
        if state == BreakerState::Open
            && w.opened_at
                .is_some_and(|at| at.elapsed() >= self.config.open_for)
        {
            self.set(&mut w, BreakerState::HalfOpen, counters);
        }
        match self.state() {
            BreakerState::Closed => Some(Admitted {
                breaker: self,
                probe: false,
            }),
            BreakerState::HalfOpen if w.probes_in_flight < self.config.probes => {
                w.probes_in_flight += 1;
                Some(Admitted {
                    breaker: self,
                    probe: true,
                })
            }
            _ => None,
        }
    }

    /// Records how an admitted call went.
    pub(crate) fn record(
        &self,
        admitted: Admitted<'_>,
        outcome: Outcome,
        took: Duration,
        counters: Option<&Counters>,
    ) {
        let failed = outcome == Outcome::Failed || took > self.config.slow_call;
        let mut w = self.lock();
        if admitted.probe {
            let to = if failed {
                BreakerState::Open
            } else {
                BreakerState::Closed
            };
            self.set(&mut w, to, counters);
            return;
        }
        if self.state() != BreakerState::Closed {
            return; // started before the breaker opened; the probes decide now
        }
        let now = Instant::now();
        if w.started
            .is_none_or(|at| now.duration_since(at) >= self.config.window)
        {
            w.started = Some(now);
            w.calls = 0;
            w.failures = 0;
        }
        w.calls += 1;
        if failed {
            w.failures += 1;
            w.consecutive += 1;
        } else {
            w.consecutive = 0;
        }
        let rate_tripped = w.calls >= self.config.minimum_calls
            && f64::from(w.failures) >= self.config.failure_rate * f64::from(w.calls);
        if w.consecutive >= self.config.consecutive_failures || rate_tripped {
            self.set(&mut w, BreakerState::Open, counters);
        }
    }

    fn set(&self, w: &mut Window, to: BreakerState, counters: Option<&Counters>) {
        let from = self.state();
        if from == to && to != BreakerState::Open {
            return;
        }
        match to {
            BreakerState::Open => {
                w.opened_at = Some(Instant::now());
                if let Some(counters) = counters {
                    counters.incr(Counter::breaker_opened);
                }
                self.opened.notify_waiters();
            }
            BreakerState::Closed => *w = Window::default(),
            BreakerState::HalfOpen => {}
        }
        self.state.store(to as u8, Ordering::Release);
        self.gauge.set(f64::from(to as u8));
        metrics::counter!("strata_breaker_transitions_total", "namespace" => self.namespace.clone(), "target" => self.target.clone(), "to" => to.label()).increment(1);
        if from != to {
            tracing::warn!(namespace = %self.namespace, target = %self.target, from = from.label(), to = to.label(), "circuit breaker");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        // A panic while holding this lock leaves only counts behind: keep going.
        self.window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Duration = Duration::from_millis(1);

    fn call(b: &Breaker, c: &Counters, outcome: Outcome) -> bool {
        match b.admit(Some(c)) {
            Some(admitted) => {
                b.record(admitted, outcome, FAST, Some(c));
                true
            }
            None => false,
        }
    }

    #[test]
    fn opens_after_consecutive_failures_and_probes_its_way_back() {
        let c = Counters::new("t");
        let config = BreakerConfig::default()
            .consecutive_failures(3)
            .open_for(Duration::from_secs(3600));
        let b = Breaker::new("t", "l2", config);
        for _ in 0..2 {
            assert!(call(&b, &c, Outcome::Failed));
        }
        assert!(call(&b, &c, Outcome::Answered), "a success resets the run");
        for _ in 0..3 {
            assert!(call(&b, &c, Outcome::Failed));
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!call(&b, &c, Outcome::Answered), "refused while open");

        // With no wait, the next call is the probe; a failed probe reopens, a good one closes.
        let b = Breaker::new(
            "t",
            "l2",
            BreakerConfig::default()
                .consecutive_failures(1)
                .open_for(Duration::ZERO),
        );
        assert!(call(&b, &c, Outcome::Failed));
        assert_eq!(b.state(), BreakerState::Open);
        let probe = b.admit(Some(&c)).expect("a probe");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.admit(Some(&c)).is_none(), "one probe at a time");
        b.record(probe, Outcome::Failed, FAST, Some(&c));
        assert_eq!(b.state(), BreakerState::Open);
        assert!(call(&b, &c, Outcome::Answered));
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(c.snapshot().breaker_opened, 3, "once, then twice");
    }

    #[test]
    fn opens_on_the_failure_rate_and_on_slow_calls() {
        let c = Counters::new("t");
        let config = BreakerConfig::default()
            .consecutive_failures(100)
            .failure_rate(0.5, 10);
        let b = Breaker::new("t", "l2", config);
        for i in 0..9 {
            let outcome = if i % 2 == 0 {
                Outcome::Failed
            } else {
                Outcome::Answered
            };
            call(&b, &c, outcome);
        }
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "below the minimum of calls"
        );
        call(&b, &c, Outcome::Answered);
        assert_eq!(b.state(), BreakerState::Open, "5 of 10 failed");

        let b = Breaker::new("t", "l2", BreakerConfig::default().consecutive_failures(2));
        for _ in 0..2 {
            let admitted = b.admit(Some(&c)).unwrap();
            b.record(
                admitted,
                Outcome::Answered,
                Duration::from_secs(1),
                Some(&c),
            );
        }
        assert_eq!(
            b.state(),
            BreakerState::Open,
            "slow answers count as failures"
        );
    }

    #[test]
    fn a_cancelled_probe_gives_its_slot_back() {
        let c = Counters::new("t");
        let b = Breaker::new(
            "t",
            "l2",
            BreakerConfig::default()
                .consecutive_failures(1)
                .open_for(Duration::ZERO),
        );
        call(&b, &c, Outcome::Failed);
        drop(b.admit(Some(&c)).expect("a probe"));
        assert!(b.admit(Some(&c)).is_some(), "the slot is free again");
    }
}
