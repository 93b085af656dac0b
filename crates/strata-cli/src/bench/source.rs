//! The source of truth ("the database") of the workloads, and the staleness check.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use strata::{L2Store, WriteMode};

use super::report::Latency;
use super::timer::LoadTimer;
use super::worker::{buckets, from_buckets, histogram};

/// The record of `WORKLOADS.md`; `body` pads its JSON encoding to about `VALUE_BYTES`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) id: u64,
    pub(crate) version: u64,
    pub(crate) name: String,
    pub(crate) price_cents: u64,
    pub(crate) tags: Vec<String>,
    pub(crate) body: String,
}

/// The source of truth: record versions, in this process or, for workloads whose instances
/// are separate processes, in Redis; loads are slow and counted.
#[derive(Debug)]
pub(crate) struct Source {
    versions: Versions,
    load: Duration,
    timer: LoadTimer,
    /// Length of each record's `body`, so that its JSON is about `VALUE_BYTES`.
    body_len: Vec<u16>,
    loads: AtomicU64,
    /// How long the loads' sleeps took, in µs, since the last [`take_sleeps`](Self::take_sleeps):
    /// a histogram, since the timer's lateness is in its tail as much as in its mean.
    sleeps: Mutex<Histogram<u64>>,
}

#[derive(Debug)]
enum Versions {
    /// In memory: this process's, or shared by a fleet's processes ([`SharedWords`]).
    ///
    /// [`SharedWords`]: super::shared::SharedWords
    Local(&'static [AtomicU64]),
    /// Shared by processes: versions under `<namespace>:<key index>` in an L2 store.
    Shared(Arc<dyn L2Store>),
}

/// Where shared versions live.
const SHARED_NS: &str = "bench-source";

impl Source {
    pub(crate) fn new(keys: u64, load: Duration, value_bytes: usize) -> Self {
        Self::in_memory(counters(keys), load, value_bytes)
    }

    /// A source whose versions are `versions` (one per key): memory several processes map.
    pub(crate) fn in_memory(
        versions: &'static [AtomicU64],
        load: Duration,
        value_bytes: usize,
    ) -> Self {
        let keys = versions.len() as u64;
        Self::with_versions(Versions::Local(versions), keys, load, value_bytes)
    }

    /// A source whose versions every process sees: in `store` (a Redis).
    pub(crate) fn shared(
        store: Arc<dyn L2Store>,
        keys: u64,
        load: Duration,
        value_bytes: usize,
    ) -> Self {
        Self::with_versions(Versions::Shared(store), keys, load, value_bytes)
    }

    fn with_versions(versions: Versions, keys: u64, load: Duration, value_bytes: usize) -> Self {
        let body_len = (0..keys)
            .map(|id| {
                let bare = serde_json::to_vec(&Self::bare(id, 0)).map_or(0, |v| v.len());
                u16::try_from(value_bytes.saturating_sub(bare)).unwrap_or(u16::MAX)
            })
            .collect();
        Source {
            versions,
            load,
            timer: LoadTimer::default(),
            body_len,
            loads: AtomicU64::new(0),
            sleeps: Mutex::new(histogram()),
        }
    }

    /// Loads wait on `timer` (the default: [`LoadTimer::Thread`]).
    pub(crate) fn with_timer(mut self, timer: LoadTimer) -> Self {
        self.timer = timer;
        self
    }

    /// Leaked so that loaders can borrow it for `'static` without a reference count per call.
    pub(crate) fn leak(self) -> &'static Source {
        Box::leak(Box::new(self))
    }

    fn bare(id: u64, version: u64) -> Record {
        Record {
            id,
            version,
            name: format!("product {id}"),
            price_cents: 100 + id % 10_000,
            tags: vec![format!("category:{}", id % 100)],
            body: String::new(),
        }
    }

    /// A load: sleeps `LOAD_MS`, then returns the current record.
    pub(crate) async fn load(&self, key: u32) -> Result<Record, strata::Error> {
        self.loads.fetch_add(1, Ordering::Relaxed);
        // The read that called it waited on this load (when it runs in the reader's task).
        let _ = LOADED.try_with(|loaded| loaded.set(true));
        if !self.load.is_zero() {
            // Timed: the report says what the wait took (`load_sleep_us`), so a reader sees
            // how close to `LOAD_MS` the timer kept it (`bench::timer`).
            let start = std::time::Instant::now();
            self.timer.sleep(self.load).await;
            let us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.sleeps
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .saturating_record(us);
        }
        let mut record = Self::bare(u64::from(key), self.version(key).await?);
        record.body = "x".repeat(usize::from(self.body_len[key as usize]));
        Ok(record)
    }

    pub(crate) async fn version(&self, key: u32) -> Result<u64, strata::Error> {
        match &self.versions {
            Versions::Local(v) => Ok(v[key as usize].load(Ordering::Acquire)),
            Versions::Shared(store) => {
                let bytes = store.get(SHARED_NS, &key.to_string()).await?;
                Ok(bytes
                    .and_then(|b| std::str::from_utf8(&b).ok()?.parse().ok())
                    .unwrap_or(0))
            }
        }
    }

    /// A write: version + 1; returns the new version. (Shared versions have one writer.)
    pub(crate) async fn write(&self, key: u32) -> Result<u64, strata::Error> {
        match &self.versions {
            Versions::Local(v) => Ok(v[key as usize].fetch_add(1, Ordering::AcqRel) + 1),
            Versions::Shared(store) => {
                let next = self.version(key).await? + 1;
                let ttl = Duration::from_secs(3600);
                store
                    .set(
                        SHARED_NS,
                        &key.to_string(),
                        next.to_string().into_bytes().into(),
                        ttl,
                        &[],
                        WriteMode::REPLACE,
                    )
                    .await?;
                Ok(next)
            }
        }
    }

    pub(crate) fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// The loads' sleeps since the last call.
    pub(crate) fn take_sleeps(&self) -> Sleeps {
        let taken = std::mem::replace(
            &mut *self.sleeps.lock().unwrap_or_else(PoisonError::into_inner),
            histogram(),
        );
        Sleeps {
            us: buckets(&taken),
        }
    }
}

/// How long the loads' sleeps took (see [`Source::load`]).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct Sleeps {
    /// (µs, count) pairs, as a worker process hands its histograms over.
    us: Vec<(u64, u64)>,
}

impl Sleeps {
    /// The sum of several processes' sleeps.
    pub(crate) fn add(mut self, other: &Sleeps) -> Sleeps {
        self.us.extend_from_slice(&other.us);
        self
    }

    /// As a report shows it: the mean and percentiles in µs, and how many.
    pub(crate) fn json(&self) -> serde_json::Value {
        let h = from_buckets(&self.us);
        let mut json = serde_json::json!(Latency::of(&h));
        json["mean"] = serde_json::json!(h.mean().round() as u64);
        // The shortest: a timer that ended a wait early would show here.
        json["min"] = serde_json::json!(h.min());
        json
    }
}

tokio::task_local! {
    /// Set while a read runs: whether it ran a load itself (see [`Source::load`]), so its
    /// latency is also measured with the loads' (`read_us_loaded`).
    pub(crate) static LOADED: std::cell::Cell<bool>;
}

/// `keys` zeroed counters for the life of the process (a run's source and staleness
/// bookkeeping: leaked so that loaders borrow them for `'static`).
fn counters(keys: u64) -> &'static [AtomicU64] {
    (0..keys)
        .map(|_| AtomicU64::new(0))
        .collect::<Vec<_>>()
        .leak()
}

/// The staleness check: a read is stale when it returns a version older than the newest
/// version whose invalidation had already returned before the read started — on any
/// instance, when the bookkeeping is memory the fleet's processes share.
#[derive(Debug)]
pub(crate) struct Staleness {
    committed: &'static [AtomicU64],
}

impl Staleness {
    pub(crate) fn new(keys: u64) -> Self {
        Self::in_memory(counters(keys))
    }

    /// The check over `committed` (one per key): memory several processes map.
    pub(crate) fn in_memory(committed: &'static [AtomicU64]) -> Self {
        Staleness { committed }
    }

    /// Taken just before a read starts.
    pub(crate) fn floor(&self, key: u32) -> u64 {
        self.committed[key as usize].load(Ordering::Acquire)
    }

    /// Called when the invalidation of `version` has returned.
    pub(crate) fn commit(&self, key: u32, version: u64) {
        self.committed[key as usize].fetch_max(version, Ordering::AcqRel);
    }

    /// Whether a read that started at `floor` and returned `version` was stale.
    pub(crate) fn is_stale(floor: u64, version: u64) -> bool {
        version < floor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_are_about_value_bytes_and_loads_are_counted() {
        let source = Source::new(100_000, Duration::ZERO, 1024);
        for key in [0, 7, 99_999] {
            let len = serde_json::to_vec(&source.load(key).await.unwrap())
                .unwrap()
                .len();
            assert_eq!(len, 1024, "key {key}");
        }
        assert_eq!(source.loads(), 3);
    }

    #[tokio::test]
    async fn the_loads_sleeps_are_reported_with_their_tail_and_summed_over_processes() {
        for timer in [LoadTimer::Tokio, LoadTimer::Thread] {
            let source = Source::new(10, Duration::from_millis(1), 100).with_timer(timer);
            for key in 0..3 {
                source.load(key).await.unwrap();
            }
            let json = source.take_sleeps().json();
            assert_eq!(json["count"], 3, "{timer:?}");
            for field in ["min", "mean", "p50", "p95", "p99", "max"] {
                let us = json[field].as_u64().unwrap();
                assert!(us >= 1_000, "{timer:?}, {field}: a 1 ms sleep took {us} µs");
            }
        }
        let source = Source::new(10, Duration::from_millis(1), 100);
        for key in 0..3 {
            source.load(key).await.unwrap();
        }
        let first = source.take_sleeps();
        assert_eq!(
            source.take_sleeps().json()["count"],
            0,
            "taking starts anew"
        );
        source.load(0).await.unwrap();
        let both = Sleeps::default().add(&first).add(&source.take_sleeps());
        assert_eq!(both.json()["count"], 4);
    }

    #[tokio::test]
    async fn shared_versions_are_seen_by_every_source_on_the_store() {
        let store: Arc<dyn L2Store> = Arc::new(strata::MemoryStore::default());
        let a = Source::shared(store.clone(), 2, Duration::ZERO, 200);
        let b = Source::shared(store, 2, Duration::ZERO, 200);
        assert_eq!(a.write(1).await.unwrap(), 1);
        assert_eq!(a.write(1).await.unwrap(), 2);
        assert_eq!(b.load(1).await.unwrap().version, 2);
        assert_eq!(b.version(0).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_read_is_stale_only_against_invalidations_that_returned_before_it() {
        let source = Source::new(10, Duration::ZERO, 100);
        let staleness = Staleness::new(10);
        let before_write = staleness.floor(3);
        let v1 = source.write(3).await.unwrap();
        // The invalidation has not returned: a read that started now may see version 0.
        assert!(!Staleness::is_stale(staleness.floor(3), 0));
        staleness.commit(3, v1);
        let after = staleness.floor(3);
        assert!(
            Staleness::is_stale(after, 0),
            "old version after the invalidation returned"
        );
        assert!(!Staleness::is_stale(after, v1));
        assert!(
            !Staleness::is_stale(before_write, 0),
            "a read that started before is not stale"
        );
        staleness.commit(3, 0);
        assert_eq!(staleness.floor(3), v1, "commits never go backwards");
        assert_eq!(staleness.floor(4), 0, "keys are independent");
    }
}
