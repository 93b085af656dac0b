//! A count of background work in flight (the fills a miss answered before), and a wait for
//! it to reach zero: what [`HybridCache::run_pending_tasks`](crate::HybridCache::run_pending_tasks)
//! waits on, so a test or a shutdown can see L2 as the answers left it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Work in flight, counted.
#[derive(Default)]
pub(crate) struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

/// One piece of work in flight; dropping it (done, failed or cancelled) counts it out.
pub(crate) struct Ticket(Arc<InFlight>);

impl InFlight {
    /// Counts a piece of work in until the ticket drops, unless `max` are in flight already.
    pub(crate) fn try_start(self: &Arc<Self>, max: usize) -> Option<Ticket> {
        let mut count = self.count.load(Ordering::SeqCst);
        loop {
            if count >= max {
                return None;
            }
            match self.count.compare_exchange_weak(
                count,
                count + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return Some(Ticket(self.clone())),
                Err(now) => count = now,
            }
        }
    }

    /// Waits until nothing is in flight.
    pub(crate) async fn idle(&self) {
        loop {
            // Armed before the check: a count reaching zero after it still wakes us.
            let idle = self.idle.notified();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_waits_for_every_ticket() {
        let work = Arc::new(InFlight::default());
        work.idle().await; // nothing in flight: at once
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let w = work.clone();
        let task = tokio::spawn(async move {
            let _a = w.try_start(2).unwrap();
            let _b = w.try_start(2).unwrap();
            assert!(w.try_start(2).is_none(), "two at most");
            let _ = rx.await;
        });
        tokio::task::yield_now().await;
        let waiting = tokio::spawn({
            let w = work.clone();
            async move { w.idle().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "two tickets still out");
        tx.send(()).unwrap();
        task.await.unwrap();
        waiting.await.unwrap();
        assert_eq!(work.count.load(Ordering::SeqCst), 0);
    }
}
