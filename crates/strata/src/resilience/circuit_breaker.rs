//! [`CircuitBreaker`]: the breaker that guards the shared tier, for a service's own calls to
//! other services.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use super::breaker::{Breaker, Outcome};
use super::{BreakerConfig, BreakerState};

/// A circuit breaker around calls to one target (another service, a database): after enough
/// failures it refuses calls at once — so a caller falls back (to a stale cached value, say)
/// without waiting out a timeout per call — then lets a probe through now and then, and
/// closes when one succeeds.
///
/// It is the breaker the cache puts around Redis, with the same metrics:
/// `strata_breaker_state{namespace, target}` (0 closed, 1 half-open, 2 open) and
/// `strata_breaker_transitions_total`. Clones share one breaker.
///
/// ```
/// # async fn doc() {
/// use std::time::Duration;
/// use strata::{BreakerConfig, BreakerError, CircuitBreaker};
///
/// let inventory = CircuitBreaker::new(
///     "order",
///     "inventory",
///     BreakerConfig::default().consecutive_failures(3).open_for(Duration::from_secs(2)),
/// );
/// let stock: Result<u32, BreakerError<std::io::Error>> = inventory.call(async { Ok(7) }).await;
/// assert_eq!(stock.unwrap(), 7);
/// # }
/// ```
#[derive(Clone)]
pub struct CircuitBreaker {
    breaker: Arc<Breaker>,
}

/// Why a call through a [`CircuitBreaker`] failed.
#[derive(Debug)]
pub enum BreakerError<E> {
    /// The breaker is open: the call was not made.
    Open,
    /// The call was made and failed.
    Failed(E),
}

impl<E: fmt::Display> fmt::Display for BreakerError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakerError::Open => f.write_str("circuit breaker open: call not made"),
            BreakerError::Failed(e) => e.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for BreakerError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BreakerError::Open => None,
            BreakerError::Failed(e) => Some(e),
        }
    }
}

impl CircuitBreaker {
    /// A breaker for `caller`'s calls to `target` (the two label its metrics).
    pub fn new(caller: &str, target: &str, config: BreakerConfig) -> Self {
        CircuitBreaker {
            breaker: Arc::new(Breaker::new(caller, target, config)),
        }
    }

    /// Its state now.
    pub fn state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// Runs `call` unless the breaker is open (then `call` is dropped unpolled). Every `Err`
    /// counts as a failure of the target, as does an `Ok` slower than the configured
    /// [`slow_call`](BreakerConfig::slow_call): answer `Ok` for outcomes that say nothing
    /// about the target's health (a "not found", a refused request). A call dropped before
    /// it finishes counts as nothing.
    pub async fn call<T, E>(
        &self,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, BreakerError<E>> {
        let admitted = self.breaker.admit(None).ok_or(BreakerError::Open)?;
        let started = Instant::now();
        let result = call.await;
        let outcome = match result {
            Ok(_) => Outcome::Answered,
            Err(_) => Outcome::Failed,
        };
        self.breaker
            .record(admitted, outcome, started.elapsed(), None);
        result.map_err(BreakerError::Failed)
    }
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("state", &self.state())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn refuses_calls_once_open_without_making_them_and_closes_after_a_good_probe() {
        let b = CircuitBreaker::new(
            "t",
            "svc",
            BreakerConfig::default()
                .consecutive_failures(2)
                .open_for(Duration::ZERO),
        );
        let mut made = 0;
        for _ in 0..2 {
            let r: Result<(), _> = b
                .call(async {
                    made += 1;
                    Err("down")
                })
                .await;
            assert!(matches!(r, Err(BreakerError::Failed("down"))));
        }
        assert_eq!(b.state(), BreakerState::Open);
        // open_for is zero: the next call is the probe; it fails, so the breaker reopens.
        let r: Result<(), _> = b
            .call(async {
                made += 1;
                Err("still down")
            })
            .await;
        assert!(matches!(r, Err(BreakerError::Failed(_))));
        assert_eq!(b.state(), BreakerState::Open);
        let r = b.call(async { Ok::<_, &str>(1) }).await;
        assert!(matches!(r, Ok(1)));
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(made, 3);

        let b = CircuitBreaker::new(
            "t",
            "svc",
            BreakerConfig::default()
                .consecutive_failures(1)
                .open_for(Duration::from_secs(3600)),
        );
        let _ = b.call(async { Err::<(), _>("down") }).await;
        let mut polled = false;
        let r = b
            .call(async {
                polled = true;
                Ok::<_, &str>(())
            })
            .await;
        assert!(matches!(r, Err(BreakerError::Open)));
        assert!(!polled, "an open breaker does not make the call");
    }
}
