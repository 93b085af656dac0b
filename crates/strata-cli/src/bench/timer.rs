//! The loads' timer: how the source of truth waits `LOAD_MS` before it answers.
//!
//! By default a thread of its own ends each load's wait at its deadline, as a database that
//! answers in `LOAD_MS` would. Tokio's timer (`--load-timer tokio`) is precise to a
//! millisecond by design (tokio-rs/tokio#6866): it rounds a deadline up to its next
//! millisecond tick and, when every worker is idle, parks for whole milliseconds counted
//! from the truncated current tick, so a 1 ms sleep takes 1–3 ms, and the longer the idler
//! the runtime. A cache that answers most reads from memory leaves its runtime idle while its
//! loads sleep, and its loads took ~0.4 ms longer than naive cache-aside's at the median and
//! ~0.7 ms longer at p95 for the same `LOAD_MS`: the harness, not the cache. A database's
//! reply comes on a socket when it is ready, whatever the runtime was doing. The thread
//! sleeps on the kernel's high-resolution timer (a futex with a timeout, with no timer slack)
//! and wakes the loads that are due, so both caches' loads take `LOAD_MS` plus the wake-up,
//! and the report's `load_sleep_us` shows what they took.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::oneshot;

/// What times the loads (`--load-timer`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LoadTimer {
    /// A thread of the bench's own, on the kernel's high-resolution timer.
    #[default]
    Thread,
    /// `tokio::time::sleep`: millisecond ticks, late in an idle runtime.
    Tokio,
}

impl LoadTimer {
    /// The name `--load-timer` takes.
    pub(crate) fn name(self) -> &'static str {
        match self {
            LoadTimer::Thread => "thread",
            LoadTimer::Tokio => "tokio",
        }
    }

    /// Waits `duration`.
    pub(crate) async fn sleep(self, duration: Duration) {
        match self {
            LoadTimer::Thread if Timer::started() => {
                let (tx, rx) = oneshot::channel();
                TIMER.add(Instant::now() + duration, tx);
                // The thread sends before it drops the sender, and never exits.
                let _ = rx.await;
            }
            // Without the thread (it could not be started, and said so), Tokio's.
            LoadTimer::Thread | LoadTimer::Tokio => tokio::time::sleep(duration).await,
        }
    }
}

/// The timer thread's state: deadlines, earliest first.
struct Timer {
    due: Mutex<BinaryHeap<Due>>,
    /// Signalled when a deadline earlier than every other one is added.
    earlier: Condvar,
}

/// A wait: its deadline and whom to wake.
struct Due {
    at: Instant,
    wake: oneshot::Sender<()>,
}

// Ordered by deadline alone, the earliest the greatest (`BinaryHeap` is a max-heap).
impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.cmp(&self.at)
    }
}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Due {}

/// The process's timer; its thread is started by the first load that waits on it.
static TIMER: Timer = Timer {
    due: Mutex::new(BinaryHeap::new()),
    earlier: Condvar::new(),
};

impl Timer {
    /// Whether the thread runs: started on the first call.
    fn started() -> bool {
        static STARTED: OnceLock<bool> = OnceLock::new();
        *STARTED.get_or_init(|| {
            let started = std::thread::Builder::new()
                .name("load-timer".into())
                .spawn(|| {
                    // The kernel may defer a sleeping thread's wake-up by its timer slack
                    // (50 µs by default) to batch wake-ups; this thread's are the loads'.
                    #[cfg(target_os = "linux")]
                    let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1));
                    TIMER.run();
                });
            if let Err(e) = &started {
                eprintln!("the loads' timer thread did not start ({e}): Tokio's timer instead");
            }
            started.is_ok()
        })
    }

    fn add(&self, at: Instant, wake: oneshot::Sender<()>) {
        let mut due = self.due.lock().unwrap_or_else(PoisonError::into_inner);
        // Loads of one duration arrive in deadline order: the thread needs a nudge only
        // when it sleeps for longer than this one's wait (or has nothing to wait for).
        let earliest = due.peek().is_none_or(|first| at < first.at);
        due.push(Due { at, wake });
        drop(due);
        if earliest {
            self.earlier.notify_one();
        }
    }

    /// Wakes every wait that is due, sleeps until the next deadline, and again.
    fn run(&self) {
        let mut due = self.due.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let now = Instant::now();
            while due.peek().is_some_and(|first| first.at <= now) {
                if let Some(first) = due.pop() {
                    let _ = first.wake.send(());
                }
            }
            due = match due.peek().map(|first| first.at - now) {
                Some(wait) => {
                    self.earlier
                        .wait_timeout(due, wait)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self
                    .earlier
                    .wait(due)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_ends_at_its_deadline_not_before_and_in_deadline_order() {
        let start = Instant::now();
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        let waits: Vec<_> = [30u64, 10, 20]
            .into_iter()
            .map(|ms| {
                let order = order.clone();
                tokio::spawn(async move {
                    LoadTimer::Thread.sleep(Duration::from_millis(ms)).await;
                    let waited = start.elapsed();
                    order.lock().unwrap().push(ms);
                    waited >= Duration::from_millis(ms)
                })
            })
            .collect();
        for w in waits {
            assert!(w.await.unwrap(), "a wait ended before its deadline");
        }
        assert_eq!(*order.lock().unwrap(), vec![10, 20, 30]);
    }
}
