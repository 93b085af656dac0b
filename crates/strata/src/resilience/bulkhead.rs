//! Bulkheads: bounded concurrency, so one slow dependency cannot take every task with it.

use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::error::{Error, Result};

/// How many L2 operations and loader calls one cache runs at once.
///
/// A call over the limit waits up to `max_wait` for a slot, then fails fast: an L2 read
/// becomes a miss, a load serves the stale value if there is one, else
/// [`Error::Overloaded`]. Size `loaders` to what the source of truth can take (a database
/// pool, say).
#[derive(Clone, Debug)]
pub struct Bulkhead {
    pub(crate) l2: usize,
    pub(crate) loaders: usize,
    pub(crate) max_wait: Duration,
}

impl Default for Bulkhead {
    /// 1,024 L2 operations, 512 loader calls, 250 ms wait.
    fn default() -> Self {
        Bulkhead {
            l2: 1024,
            loaders: 512,
            max_wait: Duration::from_millis(250),
        }
    }
}

impl Bulkhead {
    /// At most `n` L2 operations at once (default 1,024; at least 1).
    pub fn l2_operations(mut self, n: usize) -> Self {
        self.l2 = n.max(1);
        self
    }

    /// At most `n` loader calls at once (default 512; at least 1).
    pub fn loader_calls(mut self, n: usize) -> Self {
        self.loaders = n.max(1);
        self
    }

    /// How long a call over the limit waits for a slot (default 250 ms).
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }
}

/// One bounded compartment.
pub(crate) struct Compartment {
    slots: Semaphore,
    limit: usize,
    max_wait: Duration,
    what: &'static str,
}

impl Compartment {
    pub(crate) fn new(limit: usize, max_wait: Duration, what: &'static str) -> Self {
        Compartment {
            slots: Semaphore::new(limit),
            limit,
            max_wait,
            what,
        }
    }

    /// A slot, waiting at most `max_wait` for one.
    pub(crate) async fn enter(&self) -> Result<SemaphorePermit<'_>> {
        // The fast path first: no timer when a slot is free.
        if let Ok(permit) = self.slots.try_acquire() {
            return Ok(permit);
        }
        match tokio::time::timeout(self.max_wait, self.slots.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Error::Overloaded {
                what: self.what,
                limit: self.limit,
            }),
        }
    }
}
