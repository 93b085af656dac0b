//! Who waits on another instance's load of which key: the flights that found a key's lease
//! held, woken when the end of that load is announced ([`LogEvent::Filled`]) — only they, and
//! once per announcement, not every waiter at every announcement.
//!
//! [`LogEvent::Filled`]: crate::invalidation::LogEvent::Filled

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// The waiters, by key.
#[derive(Default)]
pub(crate) struct LoadEnds {
    waiting: Mutex<HashMap<String, Arc<Notify>>>,
}

impl LoadEnds {
    /// What a flight waiting on `key`'s load waits on (register with `Notified::enable`
    /// before looking at L2 again, so an announcement in between is not missed).
    pub(crate) fn waiter(&self, key: &str) -> Arc<Notify> {
        self.lock().entry(key.to_owned()).or_default().clone()
    }

    /// The flight is done waiting on `key` (the entry goes once nobody else holds it).
    pub(crate) fn leave(&self, key: &str, waiter: Arc<Notify>) {
        let mut waiting = self.lock();
        drop(waiter);
        if waiting.get(key).is_some_and(|n| Arc::strong_count(n) == 1) {
            waiting.remove(key);
        }
    }

    /// The load of `key` ended: wake its waiters, if any (the common case is none).
    pub(crate) fn announce(&self, key: &str) {
        if let Some(notify) = self.lock().get(key) {
            notify.notify_waiters();
        }
    }

    /// Every key's waiters: a change may have ended every load (a clear, a resync).
    pub(crate) fn announce_all(&self) {
        for notify in self.lock().values() {
            notify.notify_waiters();
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        // One insert or removal at a time: a panic elsewhere leaves the map valid.
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_key_s_waiters_wake_and_the_entry_goes_with_the_last() {
        let ends = LoadEnds::default();
        let a = ends.waiter("a");
        let b = ends.waiter("b");
        {
            let mut woken_a = std::pin::pin!(a.notified());
            woken_a.as_mut().enable();
            let mut woken_b = std::pin::pin!(b.notified());
            woken_b.as_mut().enable();
            ends.announce("a");
            woken_a.await;
            assert!(
                futures_poll_once(woken_b.as_mut()).is_pending(),
                "b was not told"
            );
        }
        ends.leave("a", a);
        assert!(!ends.lock().contains_key("a"));
        ends.leave("b", b);
        assert!(ends.lock().is_empty());
    }

    /// Polls `f` once, with a waker that does nothing.
    pub(crate) fn futures_poll_once<F: std::future::Future>(
        f: std::pin::Pin<&mut F>,
    ) -> std::task::Poll<F::Output> {
        let waker = std::task::Waker::noop();
        f.poll(&mut std::task::Context::from_waker(waker))
    }
}
