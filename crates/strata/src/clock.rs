//! Time, behind a trait so that expiry can be tested without sleeping.
//!
//! Strata reasons in wall-clock milliseconds since the Unix epoch because entry timestamps travel
//! between instances inside the L2 envelope; a monotonic `Instant` means nothing on another host.

use std::fmt::Debug;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system's wall clock, read cheaply.
///
/// Every L1 hit reads the clock, and `clock_gettime` costs tens of nanoseconds on many virtual
/// machines (measured: about 13 % of an L1 hit here). So this clock counts with the CPU's
/// timestamp counter (`quanta`, a few nanoseconds) from a wall-clock anchor, and
/// [`SystemClock::resync`] moves the anchor to the wall clock again; each cache's housekeeper
/// does so every second, so NTP adjustments reach it within a second.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

struct Anchor {
    /// Read directly (`raw`), not through `quanta::Instant::now`: that one looks up a global
    /// clock and a thread-local test override on every call, a third of an L1 hit's clock read.
    clock: quanta::Clock,
    /// The counter's reading at the anchor.
    start: u64,
    /// Milliseconds per tick of the counter, as a fraction of 2^64: a tick count becomes
    /// milliseconds with one widening multiply, inlined into the hit, where `quanta`'s own
    /// scaling (`delta_as_nanos`, a call into another crate, then a division) cost ~1 ns more
    /// of a ~35 ns L1 hit (BENCHMARKS.md).
    ms_per_tick: u64,
    /// Wall-clock milliseconds at `start`, corrected by every resync.
    wall_ms_at_start: AtomicU64,
}

/// Ticks over which `ms_per_tick` is measured from `quanta`'s calibration: 2^40 (about six
/// minutes of a 3 GHz counter), enough for its nanoseconds to carry 39 significant bits.
const SCALE_TICKS_LOG2: u32 = 40;

impl Anchor {
    #[inline]
    fn elapsed_ms(&self) -> u64 {
        let ticks = self.clock.raw().saturating_sub(self.start);
        ((u128::from(ticks) * u128::from(self.ms_per_tick)) >> 64) as u64
    }
}

/// `quanta`'s scale as milliseconds per tick, in 64.64 fixed point (see `Anchor::ms_per_tick`).
/// A counter of at least one tick per millisecond (every clock `quanta` uses) fits in 64 bits.
/// Rounded up, so that a whole number of milliseconds reads as itself, not one less; what that
/// adds to a reading is below `ticks / 2^64` ms — under a millisecond for any reading, and far
/// below the calibration's own error.
fn ms_per_tick(clock: &quanta::Clock) -> u64 {
    let ns = clock.delta_as_nanos(0, 1 << SCALE_TICKS_LOG2);
    let scaled = (u128::from(ns) << (64 - SCALE_TICKS_LOG2)).div_ceil(1_000_000);
    u64::try_from(scaled).unwrap_or(u64::MAX)
}

static ANCHOR: OnceLock<Anchor> = OnceLock::new();

fn anchor() -> &'static Anchor {
    ANCHOR.get_or_init(new_anchor)
}

fn new_anchor() -> Anchor {
    let clock = quanta::Clock::new();
    let anchor = Anchor {
        start: clock.raw(),
        ms_per_tick: ms_per_tick(&clock),
        clock,
        wall_ms_at_start: AtomicU64::new(0),
    };
    anchor.wall_ms_at_start.store(wall_ms(), Ordering::Relaxed);
    anchor
}

/// Sets the anchor up on a blocking thread, not on the async worker that builds a cache:
/// `quanta` calibrates the CPU's counter against the OS clock on first use, spinning until
/// the two agree — 0.6 ms on a quiet machine, up to its limit of 200 ms on a loaded one —
/// and every task queued on that worker would wait as long.
pub(crate) async fn calibrate() {
    init_blocking(&ANCHOR, new_anchor).await;
}

/// Fills `cell` with `init()` on a blocking thread, unless it is filled already.
async fn init_blocking<T: Send + Sync>(cell: &'static OnceLock<T>, init: fn() -> T) {
    if cell.get().is_none() {
        // Fails only with a runtime shutting down: the first use fills it then.
        let _ = tokio::task::spawn_blocking(move || cell.get_or_init(init)).await;
    }
}

fn wall_ms() -> u64 {
    // A clock set before 1970 reads as 0: every entry then looks fresh for its TTL, which is
    // the least surprising failure of a broken host clock.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl SystemClock {
    /// Re-reads the wall clock, so that later readings follow any adjustment of it.
    pub fn resync() {
        let a = anchor();
        a.wall_ms_at_start
            .store(wall_ms().saturating_sub(a.elapsed_ms()), Ordering::Relaxed);
    }
}

impl Clock for SystemClock {
    #[inline]
    fn now_ms(&self) -> u64 {
        let a = anchor();
        a.wall_ms_at_start.load(Ordering::Relaxed) + a.elapsed_ms()
    }
}

/// A clock that moves only when told to: for tests of expiry, soft TTLs and fail-safe windows.
///
/// ```
/// use std::time::Duration;
/// use strata::{Clock, ManualClock};
///
/// let clock = ManualClock::new(1_000);
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(clock.now_ms(), 3_000);
/// ```
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock reading `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        ManualClock(AtomicU64::new(start_ms))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calibration runs off the async worker (here, the test's own thread), and is done
    /// when `calibrate` returns. Shown on a cell of its own: the clock's is shared with the
    /// other tests, which may have filled it first.
    #[tokio::test(flavor = "current_thread")]
    async fn calibration_runs_on_a_blocking_thread() {
        static CELL: OnceLock<std::thread::ThreadId> = OnceLock::new();
        init_blocking(&CELL, || std::thread::current().id()).await;
        assert_ne!(CELL.get(), None, "filled when it returns");
        assert_ne!(CELL.get(), Some(&std::thread::current().id()));
    }

    #[test]
    fn the_system_clock_follows_the_wall_clock() {
        SystemClock::resync();
        let ours = SystemClock.now_ms();
        let wall = wall_ms();
        assert!(ours.abs_diff(wall) <= 5, "{ours} vs {wall}");
        std::thread::sleep(Duration::from_millis(20));
        assert!(SystemClock.now_ms() >= ours + 20);
    }

    /// The inlined scaling counts milliseconds as `quanta` scales ticks: exactly over hours,
    /// within a millisecond over ten years. Shown on `quanta`'s mock clock, whose ticks are
    /// nanoseconds.
    #[test]
    fn ticks_become_milliseconds_as_quanta_scales_them() {
        let (clock, mock) = quanta::Clock::mock();
        let anchor = Anchor {
            start: clock.raw(),
            ms_per_tick: ms_per_tick(&clock),
            clock,
            wall_ms_at_start: AtomicU64::new(0),
        };
        assert_eq!(anchor.elapsed_ms(), 0);
        let at = |ns: u64| {
            mock.increment(ns - (anchor.clock.raw() - anchor.start));
            anchor.elapsed_ms()
        };
        // Either side of whole milliseconds, up to an hour: exact.
        for ns in [
            999_999,
            1_000_000,
            1_234_567_890,
            3_599_999_999_999,
            3_600_000_000_000,
        ] {
            assert_eq!(at(ns), ns / 1_000_000, "after {ns} ns");
        }
        // Ten years: the rounding up may show through, by at most a millisecond.
        let ten_years: u64 = 315_360_000_000_000_000;
        assert!(at(ten_years - 1).abs_diff((ten_years - 1) / 1_000_000) <= 1);
        assert_eq!(at(ten_years), ten_years / 1_000_000);
    }
}
