//! Whose turn it is to load a key across instances: the flight takes the key's lease, or
//! waits for the instance holding it to fill L2 (woken by the release's announcement, or at
//! its next poll), bounded by the lease's TTL.

use std::time::{Duration, Instant};

use crate::cache::CacheValue;
use crate::error::Error;
use crate::inner::Found;
use crate::lease::Held;
use crate::loader::Load;
use crate::single_flight::Source;
use crate::stats::Counter;

/// First and longest pause between L2 reads while another instance holds the lease.
const LEASE_POLL_MIN: Duration = Duration::from_millis(1);
const LEASE_POLL_MAX: Duration = Duration::from_millis(10);

/// Returns when the release of `key`'s lease is announced (or announcements were lost).
async fn released(filled: &mut tokio::sync::broadcast::Receiver<String>, key: &str) {
    loop {
        match filled.recv().await {
            Ok(k) if k == key => return,
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
            // The cache is going away; the poll ends the wait.
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// What one attempt at the lease found.
enum Attempt {
    /// Whether the lease was taken.
    Lease(bool),
    /// A fresh value another instance filled since our read (read at the given time).
    Filled(Found, u64),
}

/// What [`Load::take_turn`] decided.
pub(crate) enum Turn {
    /// Load now, holding the lease (if there is one).
    Load(Option<Held>),
    /// Another instance filled L2 meanwhile (read at the given time).
    Filled(Found, u64),
}

impl Load {
    /// Reads the generation the fill will be fenced with, then waits for this instance's turn
    /// to load: it takes the key's lease, or waits for the instance holding it to fill L2 —
    /// serving the stale value meanwhile, if there is one. Waiting is bounded by the lease's
    /// TTL: by then the holder is done or its lease expired (a dead holder), and one waiter
    /// takes over.
    pub(crate) async fn take_turn<T: CacheValue>(&mut self, key: &str) -> Turn {
        let inner = self.inner.clone();
        let token = fastrand::u64(..);
        // Subscribed before the first attempt, so no release announced after it is missed.
        let mut filled = inner.filled.subscribe();
        let mut attempt = self.begin::<T>(key, token).await;
        let Some(lease) = inner.lease.clone() else {
            return Turn::Load(None);
        };
        let deadline = Instant::now() + inner.lease_ttl;
        let mut pause = LEASE_POLL_MIN;
        let mut waited = false;
        loop {
            match attempt {
                Ok(Attempt::Filled(found, now)) => return Turn::Filled(found, now),
                Ok(Attempt::Lease(true)) => {
                    return Turn::Load(Some(Held {
                        lease,
                        namespace: inner.namespace.clone(),
                        key: key.to_owned(),
                        token,
                        in_store: inner.lease_in_store,
                        released: false,
                    }));
                }
                Ok(Attempt::Lease(false)) => {}
                Err(e) => {
                    // Waiting blind on an L2 we cannot reach helps no one: load.
                    inner.counters.incr(Counter::l2_errors);
                    tracing::debug!(namespace = %inner.namespace, key, error = %e, "lease unavailable; loading without it");
                    return Turn::Load(None);
                }
            }
            if !waited {
                waited = true;
                inner.counters.incr(Counter::lease_waits);
                if let Some(stale) = self.stale.as_ref().filter(|_| !self.leader.answered()) {
                    self.leader.answer(Ok((stale.value.clone(), Source::Stale)));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Turn::Load(None);
            }
            // The holder's release is announced when the log can (a Redis stream log); polling
            // with backoff covers the rest, at a few reads per waiting instance and load.
            tokio::select! {
                () = tokio::time::sleep(pause.min(left)) => {}
                () = released(&mut filled, key) => {}
            }
            pause = (pause * 2).min(LEASE_POLL_MAX);
            let now = inner.clock.now_ms();
            let found;
            (found, self.l2_absent) = inner.read_l2_checked::<T>(key, now).await;
            if let Some(found) = found.filter(|f| now < f.times.fresh_until) {
                return Turn::Filled(found, now);
            }
            // The holder's fill was overtaken or failed: try again, fenced by the generation
            // as it stands now.
            attempt = self.begin::<T>(key, token).await;
        }
    }

    /// Reads the key's generation — before the loader reads the source, so any change after
    /// this point fences the fill — and tries to take the key's lease: in one round trip when
    /// the L2 store keeps the lease. If L2 had no value and one appeared meanwhile (a fill
    /// landed just before its holder released the lease), that value is the answer: taking the
    /// freed lease would load the key twice.
    async fn begin<T: CacheValue>(&mut self, key: &str, token: u64) -> Result<Attempt, Error> {
        let inner = self.inner.clone();
        let (namespace, ttl) = (&inner.namespace, inner.lease_ttl);
        let fresh = |found: Option<Found>, now: u64| {
            found
                .filter(|f| now < f.times.fresh_until)
                .map(|f| Attempt::Filled(f, now))
        };
        if inner.lease_in_store {
            let start = inner
                .l2
                .begin_load(namespace, key, Some((token, ttl)), self.l2_absent)
                .await?;
            self.generation = start.generation;
            if let Some(bytes) = start.filled {
                let now = inner.clock.now_ms();
                let found = inner.decode_found::<T>(key, bytes, now);
                if let Some(filled) = fresh(found, now) {
                    return Ok(filled);
                }
                // Something stale or undecodable appeared: the next attempt may take the lease.
                self.l2_absent = false;
            }
            return Ok(Attempt::Lease(start.lease_taken));
        }
        self.generation = inner.generation(key).await;
        let Some(lease) = &inner.lease else {
            return Ok(Attempt::Lease(false));
        };
        let taken = lease.try_acquire(namespace, key, token, ttl).await?;
        if taken && self.l2_absent {
            let now = inner.clock.now_ms();
            if let Some(filled) = fresh(inner.read_l2::<T>(key, now).await, now) {
                if let Err(e) = lease.release(namespace, key, token).await {
                    tracing::debug!(namespace = %namespace, key, error = %e, "lease release failed; it will expire");
                }
                return Ok(filled);
            }
        }
        Ok(Attempt::Lease(taken))
    }
}
