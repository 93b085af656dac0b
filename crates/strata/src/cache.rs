//! `HybridCache`: the public face of the library.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;

use tracing::Instrument;

use crate::engine::Engine;
use crate::engine::l1::Serve;
use crate::engine::load::Load;
use crate::error::{Error, Result};
use crate::hot_keys::HotKey;
use crate::invalidation::{Position, Target};
use crate::l1::L1Entry;
use crate::options::{EntryOptions, Loaded};
use crate::resilience::Health;
use crate::single_flight::{Join, Source};
use crate::stats::{Counter, Stats};
use crate::store::{ReplicaWait, WriteMode};
use crate::value::{CacheValue, Found, Value, typed};
/// A typed, async hybrid cache: L1 in memory, L2 shared, kept coherent by an invalidation log.
///
/// Cheap to clone (an `Arc`); clones share everything. Build one per service namespace with
/// [`HybridCache::builder`]. See the [crate documentation](crate) for a tour.
#[derive(Clone)]
pub struct HybridCache {
    inner: Arc<Engine>,
}

impl std::fmt::Debug for HybridCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HybridCache")
            .field("namespace", &self.inner.namespace)
            .field("l2", &self.inner.l2)
            .field("log", &self.inner.log)
            .field("codec", &self.inner.codec)
            .field("raw", &self.inner.raw)
            .finish_non_exhaustive()
    }
}

impl HybridCache {
    pub(crate) fn from_inner(inner: Arc<Engine>) -> Self {
        HybridCache { inner }
    }

    pub(crate) fn inner(&self) -> &Arc<Engine> {
        &self.inner
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// The options used when a call passes none.
    pub fn default_entry_options(&self) -> &EntryOptions {
        &self.inner.defaults
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.inner.counters.snapshot()
    }

    /// The value of `key`: from L1, else L2, else from `loader` (then stored in both), with the
    /// default entry options.
    ///
    /// Concurrent calls for one key share one L2 read and one load. The load may outlive the
    /// call (a background refresh, a load that goes on after a soft timeout), so the loader must
    /// be `'static`: move clones of what it needs into it. If the caller leading a load is
    /// cancelled, a caller waiting on it takes over.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), strata::Error> {
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Product { id: u64, name: String }
    ///
    /// let cache = strata::HybridCache::builder("product-service")
    ///     .default_entry(strata::EntryOptions::ttl(Duration::from_secs(60)))
    ///     .build()
    ///     .await?;
    ///
    /// let p: Arc<Product> = cache
    ///     .get_or_load("product:42", || async {
    ///         Ok::<_, std::io::Error>(Product { id: 42, name: "Teapot".into() })
    ///     })
    ///     .await?;
    /// assert_eq!(p.name, "Teapot");
    ///
    /// // A second read is an L1 hit: the same `Arc`, nothing decoded, the loader not called.
    /// let again: Arc<Product> = cache
    ///     .get_or_load("product:42", || async { Err::<Product, _>(std::io::Error::other("unused")) })
    ///     .await?;
    /// assert!(Arc::ptr_eq(&p, &again));
    /// assert_eq!(cache.stats().l1_hits, 1);
    /// # Ok(()) }
    /// ```
    // Not `async fn`s: each async layer would wrap and move the read's future once more;
    // these return `fetch`'s future itself.
    pub fn get_or_load<T, F, Fut, E>(
        &self,
        key: &str,
        loader: F,
    ) -> impl Future<Output = Result<Arc<T>>> + Send
    where
        T: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<T, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        self.get_or_load_with(key, &self.inner.defaults, loader)
    }

    /// [`get_or_load`](Self::get_or_load) with explicit entry options.
    ///
    /// Fails with [`Error::NotFound`] if the key is cached as "not found" by
    /// [`get_or_load_optional`](Self::get_or_load_optional).
    pub fn get_or_load_with<T, F, Fut, E>(
        &self,
        key: &str,
        options: &EntryOptions,
        loader: F,
    ) -> impl Future<Output = Result<Arc<T>>> + Send
    where
        T: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<T, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let loader = move || async move { loader().await.map(Loaded::value) };
        self.fetch::<T, _, _, E, _>(key, options, loader, |key: &str, value| {
            typed(key, value)?.ok_or_else(|| Error::NotFound(key.to_owned()))
        })
    }

    /// Like [`get_or_load_with`](Self::get_or_load_with) for a loader that may find nothing:
    /// `Ok(None)` is cached too, for the options' [`negative_ttl`](EntryOptions::negative_ttl),
    /// so repeated lookups of a missing key do not reach the source.
    pub fn get_or_load_optional<T, F, Fut, E>(
        &self,
        key: &str,
        options: &EntryOptions,
        loader: F,
    ) -> impl Future<Output = Result<Option<Arc<T>>>> + Send
    where
        T: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Option<T>, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let loader = move || async move { loader().await.map(Loaded::from) };
        self.get_or_load_adaptive(key, options, loader)
    }

    /// Adaptive caching: like [`get_or_load_optional`](Self::get_or_load_optional), but the
    /// loader decides how its value is cached, from the value itself — an HTTP response's
    /// freshness, a record's own expiry — by returning [`Loaded`] with entry options (which
    /// replace `options` for the store; `options` still govern the read). With
    /// [`skip_l1`](EntryOptions::skip_l1) and [`skip_l2`](EntryOptions::skip_l2) the value goes
    /// to this caller and the ones waiting on the same load, and is stored nowhere: the next
    /// request loads again instead of queueing behind a value that could never be cached.
    ///
    /// ```
    /// # async fn demo(cache: strata::HybridCache) -> strata::Result<()> {
    /// use std::time::Duration;
    /// use strata::{EntryOptions, Loaded};
    /// let price: Option<std::sync::Arc<u64>> = cache
    ///     .get_or_load_adaptive("price:7", &EntryOptions::default(), || async {
    ///         let (price, valid_for) = (1_999u64, Duration::from_secs(30)); // from the source
    ///         Ok::<_, std::io::Error>(Loaded::value(price).with_options(EntryOptions::ttl(valid_for)))
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn get_or_load_adaptive<T, F, Fut, E>(
        &self,
        key: &str,
        options: &EntryOptions,
        loader: F,
    ) -> impl Future<Output = Result<Option<Arc<T>>>> + Send
    where
        T: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Loaded<T>, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        self.fetch::<T, F, Fut, E, _>(key, options, loader, typed)
    }

    /// The value of `key` if L1 or L2 holds a live one; never loads. Values past their hard
    /// expiry (kept only as fail-safe fallbacks) count as absent; so do negative entries. A
    /// value past its soft expiry is returned as it is (counted in
    /// [`stale_served`](crate::Stats::stale_served), as `get_or_load` counts it): nothing
    /// refreshes it here.
    pub async fn get<T: CacheValue>(&self, key: &str) -> Result<Option<Arc<T>>> {
        let inner = &*self.inner;
        inner.check_key(key)?;
        inner.hot_keys.record(key);
        // One clock read serves both levels: L2 is asked only a moment later.
        let now = inner.clock.now_ms();
        if let Some(l1) = &inner.l1
            && let Some(e) = l1.get(key)
        {
            // A fail-safe copy is not a live value: L2 may hold one.
            match inner.l1_serves(&e, now) {
                Serve::Fresh => {
                    inner.counters.incr(Counter::l1_hits);
                    return typed(key, e.value);
                }
                Serve::Stale => {
                    inner.counters.incr(Counter::stale_served);
                    return typed(key, e.value);
                }
                Serve::FailSafe | Serve::Untrusted | Serve::Expired => {}
            }
        }
        // Noted before L2 is read: an invalidation applied after this must keep the value we
        // read out of L1.
        let seen = inner.fence.read(key);
        match inner.read_l2::<T>(key, now).await {
            Some(found) if now < found.times.expires => {
                inner.counters.incr(if now < found.times.fresh_until {
                    Counter::l2_hits
                } else {
                    Counter::stale_served
                });
                let entry = inner.l1_entry(&inner.defaults, &found, now);
                inner.insert_l1_unless(key, entry, || inner.fence.read(key) != seen);
                typed(key, found.value)
            }
            _ => Ok(None),
        }
    }

    /// Stores `value` under `key` in L2 and L1 (write-through), and tells other instances to
    /// drop their L1 copy.
    ///
    /// Fails without writing anything if the key or the encoded value is over its limit. If
    /// L2 or the log cannot be reached, this instance's L1 takes the value and the shared half
    /// is deferred: replayed as an invalidation of the key once they are back (see
    /// [`health`](Self::health)), and the call succeeds — or, with
    /// [`max_staleness`](crate::HybridCacheBuilder::max_staleness) or
    /// [acknowledged writes](crate::HybridCacheBuilder::acknowledged_writes), returns
    /// [`Error::Unavailable`].
    /// Any other L2 failure drops this instance's L1 copy too (so
    /// it does not diverge from the others) and is returned.
    pub async fn set<T: CacheValue>(
        &self,
        key: &str,
        value: T,
        options: &EntryOptions,
    ) -> Result<()> {
        let inner = &*self.inner;
        inner.check_key(key)?;
        let now = inner.clock.now_ms();
        let value: Value = Some(Arc::new(value));
        let times = options.times(now, false);
        // Loads in flight and plain reads read the key before this write: none may fill L1
        // after it.
        inner.overtake(key);
        let target = Target::Key(key.to_owned());
        let mut written = Ok(None);
        let mut replica = None;
        let mut size = 0;
        if !options.skip_l2 {
            let bytes = inner.encode::<T>(key, &value, &times, &options.tags, 0, options.codec)?;
            size = crate::engine::l2::encoded_size(&bytes);
            // One round trip: the value, and its invalidation in the log beside it.
            let mode = WriteMode::Replace {
                log: inner.log_append(&target).await,
            };
            let (result, wait) = inner
                .write_l2_apart(key, bytes, &times, &options.tags, mode)
                .await;
            (written, replica) = (result.map(|w| w.logged), wait);
            if let Err(e) = &written
                && !e.is_retryable()
            {
                inner.drop_l1(key);
                return written.map(drop);
            }
        }
        let found = Found {
            value,
            times,
            tags: options.tags.clone(),
            load_ms: 0,
            size,
            stamp: None,
        };
        if !options.skip_l1 {
            // Marked again now that L2 has the value: a read that began after the first mark
            // took the old value from L2 meanwhile, and must not put it in L1 after this one.
            inner.overtake(key);
            inner.insert_l1(key, inner.l1_entry(options, &found, now));
        }
        if options.skip_l2 {
            return Ok(());
        }
        let written = match written {
            // On a cluster the value's replica wait runs beside the log's append.
            Ok(logged) => {
                let (replicated, published) =
                    inner.announce_beside(replica, target.clone(), logged).await;
                replicated.and(published)
            }
            Err(e) => Err(e),
        };
        inner.settle(target, written)
    }

    /// Write-behind: queues `value` for the source of truth in the durable
    /// [`write_queue`](crate::HybridCacheBuilder::write_queue), then stores it like [`set`](Self::set).
    /// Returns once the queue holds it: a [`Flusher`](crate::Flusher) applies it to the source
    /// later, and nothing acknowledged here is lost if a process dies (see
    /// [`write_behind`](crate::write_behind)).
    ///
    /// Fails, writing nothing, if the key or value is over its limit, no queue is configured
    /// ([`Error::Config`]) or the queue cannot take the write.
    pub async fn write_behind<T: CacheValue>(
        &self,
        key: &str,
        value: T,
        options: &EntryOptions,
    ) -> Result<()> {
        let inner = &*self.inner;
        inner.check_key(key)?;
        let Some(queue) = &inner.write_queue else {
            return Err(Error::Config(
                "write_behind needs a write queue (HybridCacheBuilder::write_queue)".into(),
            ));
        };
        let bytes = inner.encode_for_queue(key, &value)?;
        // Durable first: once queued the write reaches the source even if the cache step
        // below is deferred or this process dies.
        queue.append(&inner.namespace, key, bytes).await?;
        self.set(key, value, options).await
    }

    /// Removes `key` from L2, from this instance's L1 and from every other instance's L1.
    ///
    /// Every step is attempted. If L2 or the log cannot be reached, the shared half is
    /// deferred and replayed once they are back (see [`health`](Self::health)), and the call
    /// succeeds — or, with [`max_staleness`](crate::HybridCacheBuilder::max_staleness) or
    /// [acknowledged writes](crate::HybridCacheBuilder::acknowledged_writes), returns
    /// [`Error::Unavailable`]. Any other failure is returned.
    pub async fn invalidate(&self, key: &str) -> Result<()> {
        let inner = &*self.inner;
        inner.check_key(key)?;
        // L2 first: an instance told to drop its copy must not find the old one in L2. The
        // log entry goes in the same step when the log lives beside the data.
        let target = Target::Key(key.to_owned());
        let log = inner.log_append(&target).await;
        // On a cluster the removal's replica wait runs beside the log's append (the append
        // needs the removal done, not replicated): three round trips one after another.
        let l2 = (inner.l2)
            .delete_apart(&inner.namespace, key, log.as_ref())
            .await;
        inner.drop_l1(key);
        self.finish_invalidation(target, l2).await
    }

    /// Removes every entry tagged `tag`, everywhere. Deferred like
    /// [`invalidate`](Self::invalidate) while the shared tier is unreachable.
    pub async fn invalidate_tag(&self, tag: &str) -> Result<()> {
        let inner = &*self.inner;
        inner.check_key(tag)?;
        // Marked before L2 too: a load of this instance whose fill would land after the tag's
        // entries are deleted there sees the drop and stores nothing. L1 is cleared once,
        // after: of what a read put there from L2 meanwhile too.
        inner.overtake_tag(tag);
        let l2 = inner.l2.delete_by_tag(&inner.namespace, tag).await;
        inner.drop_tag(tag);
        self.finish_invalidation(Target::Tag(tag.to_owned()), l2.map(|_| (None, None)))
            .await
    }

    /// Removes every entry of the namespace, everywhere. Deferred like
    /// [`invalidate`](Self::invalidate) while the shared tier is unreachable.
    pub async fn clear(&self) -> Result<()> {
        let inner = &*self.inner;
        let l2 = inner.l2.clear(&inner.namespace).await;
        inner.drop_all();
        self.finish_invalidation(Target::Clear, l2.map(|_| (None, None)))
            .await
    }

    /// Publishes an invalidation whose L2 step gave `l2` (where the store logged it, if it
    /// did, and the step's replica wait, run meanwhile), and settles the outcome.
    async fn finish_invalidation(
        &self,
        target: Target,
        l2: Result<(Option<Position>, Option<ReplicaWait>)>,
    ) -> Result<()> {
        let inner = &*self.inner;
        let (l2, replica) = match inner.note_l2(l2) {
            Ok((logged, replica)) => (Ok(logged), replica),
            Err(e) => (Err(e), None),
        };
        let logged = l2.as_ref().ok().copied().flatten();
        let (replicated, published) = inner.announce_beside(replica, target.clone(), logged).await;
        inner.settle(target, l2.map(drop).and(replicated).and(published))
    }

    /// The state of the shared tier as this cache sees it: its circuit breakers and the
    /// writes waiting to be replayed. For readiness probes and dashboards.
    pub fn health(&self) -> Health {
        let inner = &*self.inner;
        Health {
            l2: inner.l2_guard.state(),
            log: inner.log_guard.state(),
            deferred_writes: inner.deferred.len(),
            log_silent_for: inner.log.heartbeat().map(|_| {
                let since = inner.caught_up.load(std::sync::atomic::Ordering::Relaxed);
                std::time::Duration::from_millis(inner.clock.now_ms().saturating_sub(since))
            }),
        }
    }

    /// The keys read since the last call, most read first: an estimate (reads are sampled,
    /// one in 16, into a list of the 256 most read — see [`HotKey`]), for an operator to see
    /// what a stampede hits. Sampling starts with the first call, so a cache nobody asks
    /// pays nothing for it. `strata_redis::StatsReporter` takes them with the counters and
    /// publishes them, so `strata top` shows every instance's; a second taker would split the
    /// counts with it.
    pub fn take_hot_keys(&self) -> Vec<HotKey> {
        self.inner.hot_keys.take()
    }

    /// Waits for the fills of L2 still in flight (a caller alone on a missed key is answered
    /// once its fill is sent, not when it lands), sweeps L1 of the entries that can no longer
    /// serve (expired past their fail-safe window) and exports the counters. Nothing depends
    /// on it: another instance reading a key whose fill is in flight waits for it, reads skip
    /// expired entries and evictions reach them. Call it before a shutdown, to free memory at
    /// once, or before reading L2 or exact counts in a test. (A process that exits with a fill
    /// still out leaves the key's lease record to expire: other instances wait for it until
    /// then.)
    pub async fn run_pending_tasks(&self) {
        self.inner.fills.idle().await;
        self.inner.sweep_l1();
        self.inner.counters.export();
    }

    /// Leaves the fleet in order, before the process exits: waits for the fills still in
    /// flight and, with [acknowledged writes](crate::HybridCacheBuilder::acknowledged_writes),
    /// withdraws this instance from the acknowledgements, waiting (bounded) until that is
    /// done. Without it, a process that exits leaves its last sign of life behind, and every
    /// write of the other instances waits for it (up to the write's bound each) until that
    /// expires — three heartbeats. Dropping the cache withdraws it too, but in the background,
    /// which an exiting process does not wait for.
    ///
    /// The cache still serves afterwards, but the others' writes no longer wait for it: call
    /// this once the instance has stopped taking requests.
    pub async fn shutdown(&self) {
        self.run_pending_tasks().await;
        if let Some(ack) = &self.inner.acknowledged {
            ack.leave().await;
        }
    }

    /// The read path shared by the `get_or_load*` methods.
    /// `finish` turns the cached value into what the public method returns.
    ///
    /// A small hand-written future rather than an `async fn`: an L1 hit is answered on the
    /// first poll by [`look_in_l1`](Self::look_in_l1), a plain function, and only a miss
    /// builds (and boxes) the future of the miss path. The caller's future is then a few
    /// words, not a state machine sized for the miss path, which every call would otherwise
    /// set up and move (−4 ns of a 40 ns hit, BENCHMARKS.md). Still lazy: nothing is read
    /// before the first poll.
    fn fetch<T, F, Fut, E, R>(
        &self,
        key: &str,
        options: &EntryOptions,
        loader: F,
        // Generic, not a `fn` pointer: the hit's last step is then inlined, not an indirect call.
        finish: impl Fn(&str, Value) -> Result<R> + Send,
    ) -> impl Future<Output = Result<R>> + Send
    where
        T: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Loaded<T>, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let mut start = Some((loader, finish));
        let mut miss = None;
        std::future::poll_fn(move |cx| {
            if let Some((loader, finish)) = start.take() {
                match self.look_in_l1(key, options, loader) {
                    Err(e) => return Poll::Ready(Err(e)),
                    Ok(Lookup::Hit(value)) => return Poll::Ready(finish(key, value)),
                    Ok(Lookup::Miss(loader, stale)) => {
                        miss = Some(Box::pin(async move {
                            let value = self
                                .load_through::<T, F, Fut, E>(key, options, stale, loader)
                                .await?;
                            finish(key, value)
                        }));
                    }
                }
            }
            match miss.as_mut() {
                Some(miss) => miss.as_mut().poll(cx),
                None => panic!("a read's future polled after it completed"),
            }
        })
    }

    /// The L1 step of a read: the value if L1 may serve it, else the loader back with the L1
    /// copy that may still serve as a fail-safe fallback.
    #[inline]
    fn look_in_l1<T, F, Fut, E>(
        &self,
        key: &str,
        options: &EntryOptions,
        loader: F,
    ) -> Result<Lookup<F>>
    where
        T: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Loaded<T>, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let inner = &self.inner;
        inner.check_key(key)?;
        if options.counted {
            inner.hot_keys.record(key);
        }
        let (false, Some(l1)) = (options.skip_l1, &inner.l1) else {
            return Ok(Lookup::Miss(loader, None));
        };
        let Some(e) = l1.get(key) else {
            return Ok(Lookup::Miss(loader, None));
        };
        let now = inner.clock.now_ms();
        match inner.l1_serves(&e, now) {
            // Ask L2, keeping this copy as the fail-safe fallback.
            Serve::Expired | Serve::Untrusted => return Ok(Lookup::Miss(loader, Some(e))),
            Serve::FailSafe => inner.count(options, Counter::stale_served),
            Serve::Fresh => {
                inner.count(options, Counter::l1_hits);
                if options.refreshes_early(e.load_ms, e.times.fresh_until, now) {
                    self.refresh(key, options, &e, loader, Refresh::Early);
                }
            }
            // Soft-expired: serve it now, refresh once in the background.
            Serve::Stale => {
                inner.count(options, Counter::stale_served);
                self.refresh(key, options, &e, loader, Refresh::Stale);
            }
        }
        Ok(Lookup::Hit(e.value))
    }

    /// The miss path: lead the key's flight, or wait for the one in progress.
    async fn load_through<T, F, Fut, E>(
        &self,
        key: &str,
        options: &EntryOptions,
        stale: Option<L1Entry>,
        loader: F,
    ) -> Result<Value>
    where
        T: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Loaded<T>, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let inner = &self.inner;
        let mut takeovers = 0;
        loop {
            match self.inner.flights.join(key) {
                Join::Lead(leader) => {
                    let waiter = leader.waiter();
                    // The flight runs in this task (no hop to another thread on the common
                    // path); it moves to a task of its own only when it must outlive our
                    // answer (stale-while-revalidate, soft timeout).
                    self.load(leader, options, stale, loader, false).await;
                    let (value, source) = waiter.wait(key).await?;
                    inner.count(
                        options,
                        match source {
                            Source::Stale => Counter::stale_served,
                            Source::L2 => Counter::l2_hits,
                            Source::Loaded => Counter::misses,
                            Source::Waited => Counter::waited,
                        },
                    );
                    return Ok(value);
                }
                Join::Follow(waiter) => match waiter.wait(key).await {
                    Ok((value, source)) => {
                        inner.count(
                            options,
                            match source {
                                Source::Stale => Counter::stale_served,
                                _ => Counter::waited,
                            },
                        );
                        return Ok(value);
                    }
                    // The leading caller was cancelled mid-load: take over its flight.
                    Err(Error::Abandoned(_)) if takeovers < 3 => takeovers += 1,
                    Err(e) => return Err(e),
                },
            }
        }
    }

    /// Starts one background load of `key` (unless one is in flight) while `current` serves.
    fn refresh<T, F, Fut, E>(
        &self,
        key: &str,
        options: &EntryOptions,
        current: &L1Entry,
        loader: F,
        why: Refresh,
    ) where
        T: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Loaded<T>, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        if let Join::Lead(leader) = self.inner.flights.join(key) {
            self.inner.counters.incr(why.counter());
            let early = why == Refresh::Early;
            tokio::spawn(self.load(leader, options, Some(current.clone()), loader, early));
        }
    }

    /// Runs a flight as `leader`, in a `strata.load` span.
    fn load<T, F, Fut, E>(
        &self,
        leader: crate::single_flight::Leader,
        options: &EntryOptions,
        stale: Option<L1Entry>,
        loader: F,
        early: bool,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        T: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Loaded<T>, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let span = tracing::debug_span!("strata.load", namespace = %self.inner.namespace, key = %leader.key());
        let mut load = Load::new(&self.inner, options, stale, leader);
        load.early = early;
        load.run::<T, F, Fut, E>(loader).instrument(span)
    }
}

/// Why a value is refreshed in the background.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refresh {
    /// XFetch chose this hit to reload a fresh value shortly before it expires.
    Early,
    /// The value is past its soft TTL (stale-while-revalidate).
    Stale,
}

impl Refresh {
    /// The counter a refresh started for this reason goes to.
    pub(crate) fn counter(self) -> Counter {
        match self {
            Refresh::Early => Counter::early_refreshes,
            Refresh::Stale => Counter::background_refreshes,
        }
    }
}

/// What L1 answers a read.
enum Lookup<F> {
    /// L1 serves it.
    Hit(Value),
    /// L2 or the loader must: the loader back, with the L1 copy kept as a fallback.
    Miss(F, Option<L1Entry>),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An invalidation applied here ends the waits on the key's lease: it deleted the lease
    /// record with the key (in L2, first), so whoever waits on that record reads again at
    /// once rather than at its next poll. A clear ends every wait.
    #[tokio::test]
    async fn an_invalidation_wakes_the_waiters_on_the_key_s_lease() {
        use crate::ends::tests::futures_poll_once as poll_once;
        let cache = HybridCache::builder("wake").build().await.unwrap();
        let ends = &cache.inner.load_ends;
        let (k, other) = (ends.waiter("k"), ends.waiter("other"));
        let mut on_k = std::pin::pin!(k.notified());
        let mut on_other = std::pin::pin!(other.notified());
        on_k.as_mut().enable();
        on_other.as_mut().enable();
        cache.invalidate("k").await.unwrap();
        assert!(poll_once(on_k.as_mut()).is_ready(), "k's waiter woken");
        assert!(
            !poll_once(on_other.as_mut()).is_ready(),
            "another key's waiter left alone"
        );
        cache.clear().await.unwrap();
        assert!(
            poll_once(on_other.as_mut()).is_ready(),
            "a clear wakes every waiter"
        );
    }

    /// Every call moves its future, and a miss copies its flight's into a box: a state that
    /// grows (a large future awaited inline on the miss path, say) costs every read. A hit's
    /// future was 152 bytes and a flight's 1,408 (4,520 before the load's state was boxed)
    /// when this was written.
    #[tokio::test]
    async fn the_read_futures_stay_small() {
        let cache = HybridCache::builder("sizes").build().await.unwrap();
        let loader = || async { Ok::<_, std::io::Error>(String::from("v")) };
        let hit = cache.get_or_load("k", loader);
        assert!(
            std::mem::size_of_val(&hit) <= 256,
            "{}",
            std::mem::size_of_val(&hit)
        );
        let options = cache.inner.defaults.clone();
        let loader = || async { Ok::<_, std::io::Error>(Loaded::value(String::from("v"))) };
        let flight =
            cache.load_through::<String, _, _, std::io::Error>("k", &options, None, loader);
        assert!(
            std::mem::size_of_val(&flight) <= 2_048,
            "{}",
            std::mem::size_of_val(&flight)
        );
    }
}
