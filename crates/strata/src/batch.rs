//! `get_many_or_load`: many keys, one L2 read, one loader call.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use crate::cache::{HybridCache, Refresh};
use crate::engine::l1::Serve;
use crate::engine::load::{Load, Step};
use crate::error::{BoxError, Error, Result, box_error};
use crate::l1::L1Entry;
use crate::options::EntryOptions;
use crate::single_flight::{Join, Source, Waiter};
use crate::stats::Counter;
use crate::value::{CacheValue, typed};

impl HybridCache {
    /// The values of `keys`, in order — `None` where the loader found nothing — from L1, then
    /// **one** L2 read (`MGET`) for the keys L1 lacks, then **one** loader call for the keys
    /// still missing.
    ///
    /// Each key is single-flighted as with [`get_or_load`](Self::get_or_load): a key another
    /// call is already loading is waited for, not loaded again, and this call's loads are
    /// shared with concurrent callers of either method. Fills are fenced per key. The loader
    /// gets the keys to load and returns the values it found; keys it leaves out are cached as
    /// "not found" for the options' [`negative_ttl`](EntryOptions::negative_ttl). Fresh L1
    /// entries answer from L1, and so do fail-safe copies within their
    /// [throttle](EntryOptions::fail_safe_throttle), as with `get_or_load`. Soft-expired
    /// entries are served as they are when L1 answers every key, and refreshed in the
    /// background by one loader call, as `get_or_load` refreshes them — with the fresh ones
    /// that [`early_refresh`](EntryOptions::early_refresh) picks; when some key has to be
    /// loaded anyway, the soft-expired ones are reloaded with it and answered fresh (the caller
    /// waits for that load regardless), serving as fail-safe fallbacks if the loader fails.
    /// The L2 read takes the load lease of each key it misses, so other instances wait for
    /// this batch's fills rather than load the same keys; a key another instance is loading
    /// already is loaded here too, not waited for, and not written to L2.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), strata::Error> {
    /// use std::collections::HashMap;
    /// let cache = strata::HybridCache::builder("names").build().await?;
    /// let options = cache.default_entry_options().clone();
    /// let names = cache
    ///     .get_many_or_load(&["1", "2", "404"], &options, |missing| async move {
    ///         // e.g. SELECT id, name FROM users WHERE id = ANY($1)
    ///         let found: HashMap<String, String> = missing
    ///             .into_iter()
    ///             .filter(|id| id != "404")
    ///             .map(|id| (id.clone(), format!("user {id}")))
    ///             .collect();
    ///         Ok::<_, std::io::Error>(found)
    ///     })
    ///     .await?;
    /// assert_eq!(names[0].as_deref().map(String::as_str), Some("user 1"));
    /// assert!(names[2].is_none());
    /// # Ok(()) }
    /// ```
    pub async fn get_many_or_load<T, F, Fut, E>(
        &self,
        keys: &[&str],
        options: &EntryOptions,
        loader: F,
    ) -> Result<Vec<Option<Arc<T>>>>
    where
        T: CacheValue,
        F: FnOnce(Vec<String>) -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<HashMap<String, T>, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let inner = self.inner();
        for key in keys {
            inner.check_key(key)?;
        }
        let now = inner.clock.now_ms();
        let mut answers: Vec<Option<crate::value::Value>> = vec![None; keys.len()];
        // Keys L1 has no answer for, with the copy it holds (a fail-safe fallback); and keys
        // to refresh: soft-expired ones (answered stale unless a load is due anyway) and
        // fresh ones early refresh picks (answered fresh).
        let mut needed: Vec<(usize, Option<L1Entry>)> = Vec::new();
        let mut refreshes: Vec<(usize, L1Entry, Refresh)> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let copy = match (options.skip_l1, &inner.l1) {
                (false, Some(l1)) => l1.get(*key),
                _ => None,
            };
            let Some(e) = copy else {
                needed.push((i, None));
                continue;
            };
            match inner.l1_serves(&e, now) {
                Serve::Untrusted | Serve::Expired => needed.push((i, Some(e))),
                Serve::Stale => refreshes.push((i, e, Refresh::Stale)),
                // A fail-safe copy answers within its throttle (a failing source is not
                // asked again on every call).
                Serve::FailSafe => {
                    inner.count(options, Counter::stale_served);
                    answers[i] = Some(e.value);
                }
                Serve::Fresh => {
                    inner.count(options, Counter::l1_hits);
                    if options.refreshes_early(e.load_ms, e.times.fresh_until, now) {
                        answers[i] = Some(e.value.clone());
                        refreshes.push((i, e, Refresh::Early));
                    } else {
                        answers[i] = Some(e.value);
                    }
                }
            }
        }
        if needed.is_empty() {
            for (i, e, why) in &refreshes {
                if *why == Refresh::Stale {
                    inner.count(options, Counter::stale_served);
                    answers[*i] = Some(e.value.clone());
                }
            }
            if !refreshes.is_empty() {
                self.refresh_many(keys, options, refreshes, erase(loader));
            }
        } else {
            // A load is due anyway: the soft-expired keys ride in it (the fresh ones are
            // answered already).
            needed.extend(
                refreshes
                    .into_iter()
                    .filter(|(_, _, why)| *why == Refresh::Stale)
                    .map(|(i, e, _)| (i, Some(e))),
            );
            needed.sort_unstable_by_key(|(i, _)| *i);
            self.load_many(keys, options, needed, erase(loader), &mut answers)
                .await?;
        }
        answers
            .into_iter()
            .zip(keys)
            .map(|(value, key)| typed(key, value.flatten()))
            .collect()
    }

    /// Answers the keys `needed` (indexes into `keys`, each with the L1 copy it may fall back
    /// on): joins each key's flight, leads the new ones as one batch, waits for all.
    async fn load_many<T: CacheValue>(
        &self,
        keys: &[&str],
        options: &EntryOptions,
        needed: Vec<(usize, Option<L1Entry>)>,
        loader: BatchLoader<T>,
        answers: &mut [Option<crate::value::Value>],
    ) -> Result<()> {
        let inner = self.inner();
        let mut waiters: Vec<(usize, Waiter, bool)> = Vec::new();
        let mut led: Vec<(usize, Load)> = Vec::new();
        for (i, stale) in needed {
            match inner.flights.join(keys[i]) {
                Join::Lead(leader) => {
                    waiters.push((i, leader.waiter(), true));
                    led.push((i, Load::new(inner, options, stale, leader)));
                }
                Join::Follow(waiter) => waiters.push((i, waiter, false)),
            }
        }
        if !led.is_empty() {
            self.lead_batch(keys, options, led, loader).await;
        }
        for (i, waiter, leading) in waiters {
            let (value, source) = waiter.wait(keys[i]).await?;
            inner.count(
                options,
                match (source, leading) {
                    (Source::Stale, _) => Counter::stale_served,
                    (Source::Waited, _) | (_, false) => Counter::waited,
                    (Source::L2, true) => Counter::l2_hits,
                    (Source::Loaded, true) => Counter::misses,
                },
            );
            answers[i] = Some(value);
        }
        Ok(())
    }

    /// Refreshes `refreshes` (indexes into `keys`, each with its L1 copy and why) in the
    /// background with one loader call; a key already in flight is left to its flight.
    fn refresh_many<T: CacheValue>(
        &self,
        keys: &[&str],
        options: &EntryOptions,
        refreshes: Vec<(usize, L1Entry, Refresh)>,
        loader: BatchLoader<T>,
    ) {
        let inner = self.inner();
        let mut names: Vec<String> = Vec::new();
        let mut led: Vec<(usize, Load)> = Vec::new();
        for (i, e, why) in refreshes {
            if let Join::Lead(leader) = inner.flights.join(keys[i]) {
                inner.counters.incr(why.counter());
                let mut load = Load::new(inner, options, Some(e), leader);
                load.early = why == Refresh::Early;
                led.push((names.len(), load));
                names.push(keys[i].to_owned());
            }
        }
        if led.is_empty() {
            return;
        }
        let (cache, options) = (self.clone(), options.clone());
        tokio::spawn(async move {
            let keys: Vec<&str> = names.iter().map(String::as_str).collect();
            cache.lead_batch(&keys, &options, led, loader).await;
        });
    }

    /// The flights this call leads: one L2 read, then one loader call for what L2 lacked.
    /// Every flight is answered (value, stale value or error) before this returns.
    async fn lead_batch<T: CacheValue>(
        &self,
        keys: &[&str],
        options: &EntryOptions,
        led: Vec<(usize, Load)>,
        loader: BatchLoader<T>,
    ) {
        let inner = self.inner();
        let names: Vec<&str> = led.iter().map(|(i, _)| keys[*i]).collect();
        let mut missing: Vec<(&str, Load)> = Vec::new();
        if options.skip_l2 {
            missing = names
                .into_iter()
                .zip(led.into_iter().map(|(_, l)| l))
                .collect();
        } else {
            // One round trip: the values there are, and the load lease of each key missing.
            let token = fastrand::u64(..);
            let lease = Some((token, inner.lease_ttl));
            let read = inner.l2.read_many(&inner.namespace, &names, lease).await;
            let read = match inner.note_l2(read) {
                Ok(read) => read.into_iter().map(Some).collect(),
                Err(_) => vec![None; names.len()],
            };
            for ((name, (_, mut load)), read) in names.iter().zip(led).zip(read) {
                load.token = token;
                let Some(read) = read else {
                    // L2 could not be read: load, and leave L2 alone.
                    missing.push((name, load));
                    continue;
                };
                match load.judge(inner.interpret::<T>(name, read)) {
                    Step::Hit(found, now) => load.hit(name, found, now, Source::L2),
                    // Refreshed with the batch, fenced by the entry it replaces; a key another
                    // instance is loading is loaded here too, and not written to L2.
                    Step::Refresh(fence) => {
                        load.fence = Some(fence);
                        missing.push((name, load));
                    }
                    Step::Load | Step::Wait { .. } => missing.push((name, load)),
                }
            }
        }
        if missing.is_empty() {
            return;
        }
        let to_load: Vec<&str> = missing.iter().map(|(k, _)| *k).collect();
        // One loader call, one bulkhead slot.
        let slot = match inner.loaders.enter().await {
            Ok(slot) => slot,
            Err(e) => {
                inner.counters.incr(Counter::loader_rejected);
                return fail_all(missing, &e).await;
            }
        };
        inner.count(options, Counter::loader_calls);
        let started = Instant::now();
        let call = loader(to_load.iter().map(|k| (*k).to_owned()).collect());
        let batch = to_load.join(",");
        let loader_error = |source: BoxError| {
            inner.counters.incr(Counter::loader_errors);
            Error::Loader {
                key: batch.clone(),
                source,
            }
        };
        let result = match options.hard_timeout {
            Some(after) => match tokio::time::timeout(after, call).await {
                Ok(r) => r.map_err(loader_error),
                Err(_) => {
                    inner.counters.incr(Counter::loader_timeouts);
                    Err(Error::LoaderTimeout {
                        key: batch.clone(),
                        after,
                    })
                }
            },
            None => call.await.map_err(loader_error),
        };
        drop(slot);
        let mut values = match result {
            Ok(values) => values,
            Err(e) => return fail_all(missing, &e).await,
        };
        let load_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
        for (key, load) in missing {
            let value = values.remove(key).map(|v| Arc::new(v) as _);
            // Each fill is its own fenced write; they run side by side.
            tokio::spawn(async move { load.store::<T>(value, load_ms).await });
        }
    }
}

/// A batch loader with its types erased, so that the steps below `get_many_or_load` are not
/// each generic over the loader, its future and its error (one box per batch that loads).
type BatchLoader<T> = Box<
    dyn FnOnce(
            Vec<String>,
        ) -> Pin<
            Box<dyn Future<Output = std::result::Result<HashMap<String, T>, BoxError>> + Send>,
        > + Send,
>;

fn erase<T, F, Fut, E>(loader: F) -> BatchLoader<T>
where
    T: CacheValue,
    F: FnOnce(Vec<String>) -> Fut + Send + 'static,
    Fut: Future<Output = std::result::Result<HashMap<String, T>, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    Box::new(move |keys| Box::pin(async move { loader(keys).await.map_err(box_error) }))
}

/// The loader failed for the whole batch: each key serves its stale value, or the error.
async fn fail_all(missing: Vec<(&str, Load)>, error: &Error) {
    for (key, load) in missing {
        load.fail(key, error.clone()).await;
    }
}
