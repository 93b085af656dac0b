//! One flight's work: L2, then the loader under its timeouts, then the fill — or a stale value
//! when the loader cannot deliver. It runs in the leading caller's task, and moves the load
//! to a task of its own when the load must outlive the answer — as a miss's fill always
//! does: the answer does not wait on it (see [`Load::store`]).

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use tracing::Instrument;

use crate::engine::Engine;
use crate::error::{Error, Result, box_error};
use crate::in_flight::Ticket;
use crate::l1::L1Entry;
use crate::lease::{Held, Kind};
use crate::options::{EntryOptions, Loaded};
use crate::single_flight::{Leader, Source};
use crate::stats::Counter;
use crate::store::{Fence, WriteMode, Written};
use crate::value::{CacheValue, Found, Value};

pub(crate) mod turn;

/// The most fills a cache has out after answering their misses (see [`Load::store`]).
const MAX_FILLS_IN_FLIGHT: usize = 64;

/// A fill on its way to L2.
type Sending = std::pin::Pin<Box<dyn Future<Output = Result<Written>> + Send>>;

/// A fill sent behind the answer ([`Load::send_fill`]): its reply already in, or to come.
enum Sent {
    Landed(Result<Written>),
    Sending(Sending),
}

/// What a read of L2 means for the flight.
pub(crate) enum Step {
    /// A fresh value: the answer (read at the given time).
    Hit(Found, u64),
    /// Load now (holding whatever lease the read took).
    Load,
    /// Another instance is loading: wait for its fill — announced already when `waited_on`
    /// (its lease record is marked), else once this flight marks the record.
    Wait {
        /// Whether the holder's lease record is marked waited on.
        waited_on: bool,
    },
    /// L2 holds an entry to replace (stale, or unreadable): take its refresh lease first.
    Refresh(Fence),
}

/// What [`Load::take_turn`] decided.
pub(crate) enum Turn {
    /// Load now.
    Load,
    /// Another instance filled L2 meanwhile (read at the given time).
    Filled(Found, u64),
}

/// A flight in progress for one key.
pub(crate) struct Load {
    pub(crate) inner: Arc<Engine>,
    pub(crate) options: EntryOptions,
    /// The best stale value known: the caller's expired L1 copy, or an expired L2 entry.
    pub(crate) stale: Option<L1Entry>,
    pub(crate) leader: Leader,
    /// What the fill must find in L2 (taken before the loader reads the source, so any
    /// change after it refuses the fill); `None`: the fill leaves L2 alone.
    pub(crate) fence: Option<Fence>,
    /// The flight's token: the key's lease is taken under it.
    pub(crate) token: u64,
    /// The key's lease, while this flight holds it.
    pub(crate) lease: Option<Held>,
    /// An early refresh: the caller's copy is still fresh, so an L2 copy no newer than it
    /// is no answer.
    pub(crate) early: bool,
    /// Where the record of tag invalidations stood when the flight began.
    pub(crate) since: u64,
}

impl Load {
    /// A flight for `leader`'s key, with `stale` as the fallback if there is one.
    pub(crate) fn new(
        inner: &Arc<Engine>,
        options: &EntryOptions,
        stale: Option<L1Entry>,
        leader: Leader,
    ) -> Self {
        Load {
            inner: inner.clone(),
            options: options.clone(),
            stale,
            leader,
            fence: None,
            token: fastrand::u64(..),
            lease: None,
            early: false,
            since: inner.tag_drops.now(),
        }
    }

    /// Whether an invalidation applied here since the flight began overtook a value tagged
    /// `tags`: of its key (the flight is poisoned), of one of the tags, or of everything.
    fn overtaken(&self, tags: &[String]) -> bool {
        self.leader.poisoned() || self.inner.tag_drops.overtakes(self.since, tags)
    }

    pub(crate) async fn run<T, F, Fut, E>(mut self, loader: F)
    where
        T: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Loaded<T>, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let inner = self.inner.clone();
        // The flight's own copy, shared: `self` moves into the load below.
        let key = self.leader.shared_key();
        // One round trip: a hit answers as a `GET` would; a miss takes the key's load lease.
        let step = if self.options.skip_l2 {
            Step::Load
        } else {
            let read = inner.begin_read::<T>(&key, self.token, false).await;
            match self.judge(read) {
                Step::Hit(found, now) => return self.hit(&key, found, now, Source::L2),
                step => step,
            }
        };
        let now = inner.clock.now_ms();
        self.stale = self.stale.take().filter(|s| now < s.times.stale_until);
        let mut in_background = false;
        if let Some(s) = &self.stale {
            // Stale-while-revalidate: a soft-expired value answers at once; the load goes on.
            if s.times.fresh_until <= now && now < s.times.expires {
                self.leader.answer(Ok((s.value.clone(), Source::Stale)));
                in_background = true;
            }
            // With a soft timeout, the caller may get the stale value before the load ends;
            // when another instance holds the lease, while it loads.
            in_background |= self.options.soft_timeout.is_some() || !matches!(step, Step::Load);
        }
        if in_background {
            tokio::spawn(
                self.load_and_store::<T, F, Fut, E>(key, step, loader)
                    .in_current_span(),
            );
        } else {
            // Boxed: the load's state (loader, encoding, fill: ~4 KB) is allocated by the
            // misses that reach it, instead of being carried, and copied, by every flight's
            // future, an L2 hit's included (BENCHMARKS.md, "A flight's slot, one timer per
            // connection, a smaller miss future").
            Box::pin(self.load_and_store::<T, F, Fut, E>(key, step, loader)).await;
        }
    }

    async fn load_and_store<T, F, Fut, E>(mut self, key: Arc<str>, step: Step, loader: F)
    where
        T: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Loaded<T>, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        if let Turn::Filled(found, now) = self.take_turn::<T>(&key, step).await {
            return self.hit(&key, found, now, Source::Waited);
        }
        let inner = self.inner.clone();
        let slot = match inner.loaders.enter().await {
            Ok(slot) => slot,
            Err(e) => {
                inner.counters.incr(Counter::loader_rejected);
                return self.fail(&key, e).await;
            }
        };
        inner.count(&self.options, Counter::loader_calls);
        let started = Instant::now();
        let result = self.call(&key, loader).await;
        drop(slot);
        match result {
            Ok(loaded) => {
                let load_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
                // Adaptive caching: the loader may decide how its value is stored.
                if let Some(options) = loaded.options {
                    self.options = options;
                }
                self.store::<T>(loaded.value.map(|v| Arc::new(v) as _), load_ms)
                    .await;
            }
            Err(error) => self.fail(&key, error).await,
        }
    }

    /// A fresh value found in L2 (`source` says how): fill L1 and answer.
    pub(crate) fn hit(mut self, key: &str, found: Found, now: u64, source: Source) {
        self.fill_l1(key, &found, now);
        self.leader.finish(Ok((found.value, source)));
    }

    /// Runs the loader under the hard timeout; at the soft timeout, answers with the stale value
    /// (if any) and keeps waiting.
    async fn call<T, F, Fut, E>(&self, key: &str, loader: F) -> Result<Loaded<T>, Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Loaded<T>, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let counters = &self.inner.counters;
        let load = async {
            let result = match self.options.hard_timeout {
                Some(after) => match tokio::time::timeout(after, loader()).await {
                    Ok(result) => result,
                    Err(_) => {
                        counters.incr(Counter::loader_timeouts);
                        return Err(Error::LoaderTimeout {
                            key: key.to_owned(),
                            after,
                        });
                    }
                },
                None => loader().await,
            };
            result.map_err(|e| {
                counters.incr(Counter::loader_errors);
                Error::Loader {
                    key: key.to_owned(),
                    source: box_error(e),
                }
            })
        };
        let mut load = std::pin::pin!(load);
        if let (Some(soft), Some(stale)) = (self.options.soft_timeout, &self.stale)
            && !self.leader.answered()
        {
            tokio::select! {
                result = &mut load => return result,
                () = tokio::time::sleep(soft) => {
                    self.leader.answer(Ok((stale.value.clone(), Source::Stale)));
                }
            }
        }
        load.await
    }

    /// Stores a loaded value in L2 and L1 and answers with it.
    ///
    /// A miss whose flight holds the key's lease record answers once its value is in L1 and
    /// its fill is sent: the reply is awaited in a task of its own, so the
    /// caller does not wait on the fill's round trip. Nobody reads around it: another
    /// instance reading the key meanwhile finds the lease record and waits for the fill, as
    /// it waits for the load; an invalidation meanwhile (here or anywhere) refuses the fill,
    /// and a refused fill takes the value back out of L1 — where a caller of this instance
    /// arriving before the refusal would have joined the flight and got the same value.
    /// Other fills (a refresh of an entry L2 still holds, and any while many are out) land
    /// before the answer.
    pub(crate) async fn store<T: CacheValue>(mut self, value: Value, load_ms: u32) {
        let key = &self.leader.shared_key();
        let inner = &self.inner;
        let options = &self.options;
        let now = inner.clock.now_ms();
        let mut found = Found {
            times: options.times(now, value.is_none()),
            value,
            tags: options.tags.clone(),
            load_ms,
            size: 0,
            stamp: None,
        };
        let mut bytes = None;
        if !options.skip_l2 {
            match inner.encode::<T>(
                key,
                &found.value,
                &found.times,
                &found.tags,
                load_ms,
                options.codec,
            ) {
                Ok(b) => {
                    found.size = crate::engine::l2::encoded_size(&b);
                    bytes = Some(b);
                }
                Err(e) => {
                    // The caller still gets the value; it is just not cached anywhere.
                    if matches!(e, Error::ValueTooLarge { .. }) {
                        inner.counters.incr(Counter::oversized);
                    }
                    tracing::warn!(namespace = %inner.namespace, key = &**key, error = %e, "loaded value not cached");
                    self.leader.finish(Ok((found.value, Source::Loaded)));
                    return;
                }
            }
        }
        // An invalidation applied here while it loaded overtook the value: it goes nowhere.
        // L2's own fence cannot see every such one — a tag invalidated meanwhile found the key
        // in none of its indexes (the fill is what writes it there). The lease left in the key
        // is released when `self` drops, so readers elsewhere load instead of waiting.
        if self.overtaken(&found.tags) {
            self.leader
                .finish(Ok((found.value.clone(), Source::Loaded)));
            self.fill_l2_only(key, bytes, found);
            return;
        }
        let Some(fill) = bytes.zip(self.fence.take()) else {
            self.fill_l1(key, &found, now);
            self.leader.finish(Ok((found.value, Source::Loaded)));
            return;
        };
        // Only where L1 takes the value: without it, this instance's next read would find the
        // lease record too and wait on the fill rather than hit. A crowd on one key is
        // answered early too: the fill is queued before anyone of it wakes, so it is not held
        // back behind their wake-ups (it used to wait for the fill's reply — a round trip
        // added to every waiter of a hot key after each of its writes: W1's waiters averaged
        // longer than the loads they waited on). And only while few fills are out: when L2 is
        // slower than the misses come, the callers wait on their fills again (back-pressure)
        // instead of piling up fills that time out.
        let early = (matches!(fill.1, Fence::Lease(_))
            && !self.leader.answered()
            && !options.skip_l1
            && inner.l1.is_some())
        .then(|| inner.fills.try_start(MAX_FILLS_IN_FLIGHT))
        .flatten();
        if let Some(ticket) = early {
            // As `fill_l2` does: a value known overtaken goes to neither level.
            let (bytes, fence) = fill;
            let Some(mode) = self.fill_mode(fence, &found) else {
                self.leader.finish(Ok((found.value, Source::Loaded)));
                return;
            };
            let in_l1 = self.fill_l1(key, &found, now);
            // The fill is queued before the caller is answered (see `send_fill`).
            let fill = self.send_fill(key, bytes, &found, mode);
            self.leader
                .finish(Ok((found.value.clone(), Source::Loaded)));
            self.land_fill(key, fill, ticket, found, move |inner, key, found, kept| {
                if !kept && in_l1 {
                    inner.unfill_l1(key, found);
                }
            });
            return;
        }
        // A fill L2 refuses (the key changed while it loaded) must not reach L1 either: the
        // invalidation may come from another instance and not have been applied here yet.
        if self.fill_l2(key, fill, &found).await {
            self.fill_l1(key, &found, now);
        }
        self.leader.finish(Ok((found.value, Source::Loaded)));
    }

    /// A value a key invalidation applied here overtook still fills L2 — in the background,
    /// L1 left alone — when the lease record its read took fences it: that invalidation
    /// deleted the key in L2 before it was applied here, so if it came after the read, the
    /// record is gone and L2 refuses the fill; if before, the load began after it and read
    /// what it left. Without this, the instance's next flight on the key, which found the
    /// record (an invalidation here races with the reads it overtakes), waited for a fill
    /// that never came and then loaded again: W1's hot keys, written often, paid two loads
    /// where one does. Other overtaken values (a tag's drop, no record to fence with) go
    /// nowhere, and the dropped lease is released. Counted once in `fills_fenced` either way
    /// (kept out of L1, or out of both levels).
    fn fill_l2_only(mut self, key: &Arc<str>, bytes: Option<Bytes>, found: Found) {
        let fenced_by_record = matches!(self.fence, Some(Fence::Lease(_)))
            && !self.inner.tag_drops.overtakes(self.since, &found.tags);
        let ticket = fenced_by_record
            .then(|| self.inner.fills.try_start(MAX_FILLS_IN_FLIGHT))
            .flatten();
        let (Some(ticket), Some(bytes), Some(fence)) = (ticket, bytes, self.fence.take()) else {
            self.inner.counters.incr(Counter::fills_fenced);
            return;
        };
        let fill = self.send_fill(key, bytes, &found, self.write_mode(fence));
        self.land_fill(key, fill, ticket, found, |inner, _, _, kept| {
            // Not kept: counted where it was refused (L2, or a tag's drop); kept: it was kept
            // out of L1.
            if kept {
                inner.counters.incr(Counter::fills_fenced);
            }
        });
    }

    /// Sends a fill that lands behind the answer. Polled once here, it is in the connection's
    /// next write, ahead of anything the caller sends next, and the connection's writer is
    /// woken to send it; only its reply is left (to [`land_fill`](Self::land_fill)). (This
    /// used to yield here too, so that the writer ran before the caller went on: a whole pass
    /// of the run queue added to every such miss — W1's read p99 was 100–230 µs longer with
    /// it, BENCHMARKS.md, fourteenth session.)
    fn send_fill(&self, key: &Arc<str>, bytes: Bytes, found: &Found, mode: WriteMode) -> Sent {
        let inner = self.inner.clone();
        let (key, times, tags) = (key.clone(), found.times, found.tags.clone());
        let mut write: Sending =
            Box::pin(async move { inner.write_l2(&key, bytes, &times, &tags, mode).await });
        match write.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(written) => Sent::Landed(written),
            Poll::Pending => Sent::Sending(write),
        }
    }

    /// Awaits a fill's reply in a task of its own, holding `ticket` (one of the fills out),
    /// then tells `then` whether the value may stay where it went ([`filled`](Self::filled)).
    fn land_fill(
        mut self,
        key: &Arc<str>,
        fill: Sent,
        ticket: Ticket,
        found: Found,
        then: impl FnOnce(&Engine, &str, &Found, bool) + Send + 'static,
    ) {
        let key = key.clone();
        tokio::spawn(
            async move {
                let _ticket = ticket;
                let written = match fill {
                    Sent::Landed(written) => written,
                    Sent::Sending(write) => write.await,
                };
                let kept = self.filled(&key, written, &found).await;
                then(&self.inner, &key, &found, kept);
            }
            .in_current_span(),
        );
    }

    /// Writes `bytes` to L2 if `fence` still holds there. Whether the value may stay in L1:
    /// false when it was overtaken or L2 refused it (an L2 error leaves L1 to its TTL, as a
    /// read would).
    async fn fill_l2(&mut self, key: &str, (bytes, fence): (Bytes, Fence), found: &Found) -> bool {
        let Some(mode) = self.fill_mode(fence, found) else {
            return false;
        };
        let written = self
            .inner
            .write_l2(key, bytes, &found.times, &found.tags, mode)
            .await;
        self.filled(key, written, found).await
    }

    /// How a fill fenced by `fence` writes; `None` (counted) when an invalidation applied
    /// here overtook the value.
    fn fill_mode(&self, fence: Fence, found: &Found) -> Option<WriteMode> {
        if self.overtaken(&found.tags) {
            self.inner.counters.incr(Counter::fills_fenced);
            return None;
        }
        Some(self.write_mode(fence))
    }

    /// How a fill fenced by `fence` writes: it replaces the lease record, or releases the
    /// refresh lease it names.
    fn write_mode(&self, fence: Fence) -> WriteMode {
        let refresh = self
            .lease
            .as_ref()
            .filter(|held| matches!(held.kind, Kind::Refresh(_)))
            .map(|held| held.token);
        WriteMode::Fill {
            fence,
            lease: refresh,
            lease_ttl: self.inner.lease_ttl,
        }
    }

    /// What a fill's reply means for the value: whether it may stay in L1.
    async fn filled(&mut self, key: &str, written: Result<Written>, found: &Found) -> bool {
        match written {
            Ok(written) => {
                if let Some(held) = &mut self.lease {
                    held.released = true;
                }
                let inner = &self.inner;
                // Tags only: an invalidation of the key itself is L2's fence's to refuse (and
                // a report of this very fill, with tracking, poisons the flight too).
                if written.stored && inner.tag_drops.overtakes(self.since, &found.tags) {
                    // A tag invalidated here while the fill was on its way: its L2 step may
                    // have run before the fill landed, and missed the key (the fill is what
                    // puts it in the tag's index). The drop was recorded before that step,
                    // so it shows now: take the value back out.
                    inner.counters.incr(Counter::fills_fenced);
                    if let Err(e) =
                        inner.note_l2(inner.l2.delete(&inner.namespace, key, None).await)
                    {
                        tracing::debug!(namespace = %inner.namespace, key, error = %e, "L2 delete failed");
                    }
                    return false;
                }
                written.stored
            }
            Err(e) => {
                tracing::debug!(namespace = %self.inner.namespace, key, error = %e, "L2 write failed");
                true
            }
        }
    }

    /// Fills L1 unless the value is known to be overtaken by an invalidation applied here
    /// since the flight began. Whether it went in.
    fn fill_l1(&self, key: &str, found: &Found, now: u64) -> bool {
        if self.options.skip_l1 {
            return false;
        }
        let entry = self.inner.l1_entry(&self.options, found, now);
        self.inner
            .insert_l1_unless(key, entry, || self.overtaken(&found.tags))
    }

    /// The loader failed: serve the stale value if there is one (and keep serving it for a
    /// throttle period), else hand the error to the waiters.
    pub(crate) async fn fail(mut self, key: &str, error: Error) {
        match self.stale.take() {
            Some(stale) => {
                tracing::debug!(key, %error, "loader failed; serving stale value");
                let value = stale.value.clone();
                // An invalidation applied meanwhile withdrew the stale value too.
                if !self.options.skip_l1 {
                    let tags = stale.tags.as_deref().unwrap_or_default().to_vec();
                    let entry = self.inner.fail_safe_entry(&self.options, stale);
                    self.inner
                        .insert_l1_unless(key, entry, || self.overtaken(&tags));
                }
                if !self.leader.answered() {
                    self.leader.finish(Ok((value, Source::Stale)));
                }
            }
            None if !self.leader.answered() => self.leader.finish(Err(error)),
            None => {}
        }
    }
}
