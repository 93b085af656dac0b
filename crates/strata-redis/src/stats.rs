//! Hit rates across instances: each instance adds its counters' increments to one Redis hash
//! per namespace (`<namespace>#stats`), in one round trip every few seconds — never per
//! request — so `strata stats` can show a service's hit ratio over all its instances. The
//! same round trip adds the instance's hot keys (sampled reads,
//! [`HybridCache::take_hot_keys`]) to a sorted set (`<namespace>#hot`, the most read
//! [`HOT_KEPT`] kept), which `strata top` reads.

use std::sync::Arc;
use std::time::Duration;

use strata::{HybridCache, Stats};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::config::RedisConfig;
use crate::connection::{Connection, RedisConnection};
use crate::error::classify;

/// The counters kept, in the order `strata stats` shows them.
const FIELDS: [&str; 6] = [
    "l1_hits",
    "l2_hits",
    "misses",
    "waited",
    "stale_served",
    "loader_calls",
];

fn values(s: &Stats) -> [u64; 6] {
    [
        s.l1_hits,
        s.l2_hits,
        s.misses,
        s.waited,
        s.stale_served,
        s.loader_calls,
    ]
}

/// The hash of `namespace`'s counters.
pub fn stats_key(namespace: &str) -> String {
    format!("{namespace}#stats")
}

/// The sorted set of `namespace`'s hot keys: each key scored by its reads (estimated) over
/// every instance since the set was made.
pub fn hot_key(namespace: &str) -> String {
    format!("{namespace}#hot")
}

/// How many of a namespace's hottest keys the sorted set keeps (its memory bound).
pub const HOT_KEPT: usize = 1024;

/// A namespace's hot-key set goes after this long without a report (its services stopped).
const HOT_FOR: Duration = Duration::from_secs(600);

/// Adds a cache's counter increments to its namespace's hash: every `every` in the
/// background (a pipeline of `HINCRBY`s and the time, only when something changed), and on
/// [`flush`](Self::flush) — call it at shutdown so the last interval is not lost. Dropping
/// the reporter stops the background task.
pub struct StatsReporter {
    inner: Arc<Reporter>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for StatsReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsReporter")
            .field("namespace", &self.inner.cache.namespace())
            .finish_non_exhaustive()
    }
}

struct Reporter {
    cache: HybridCache,
    redis: RedisConnection,
    key: String,
    hot: String,
    sent: Mutex<[u64; 6]>,
}

impl Reporter {
    async fn flush(&self) -> Result<(), strata::Error> {
        // One flush at a time, so increments are never sent twice.
        let mut sent = self.sent.lock().await;
        let now = values(&self.cache.stats());
        if now == *sent {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (i, field) in FIELDS.iter().enumerate() {
            let delta = now[i].saturating_sub(sent[i]);
            if delta > 0 {
                pipe.hincr(&self.key, *field, delta).ignore();
            }
        }
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        pipe.hset(&self.key, "updated_ms", millis).ignore();
        let mut conn = self.redis.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(classify)?;
        *sent = now;
        // A pipeline of its own: on a cluster the set is in another slot than the hash.
        let hot = self.cache.take_hot_keys();
        if !hot.is_empty() {
            let mut pipe = redis::pipe();
            for h in &hot {
                pipe.zincr(&self.hot, &h.key, h.reads).ignore();
            }
            // The coldest go: the set stays bounded however many keys the fleet reads.
            pipe.zremrangebyrank(&self.hot, 0, -(HOT_KEPT as isize) - 1)
                .ignore();
            pipe.pexpire(&self.hot, HOT_FOR.as_millis() as i64).ignore();
            pipe.query_async::<()>(&mut conn).await.map_err(classify)?;
        }
        Ok(())
    }
}

impl StatsReporter {
    /// Reports `cache`'s counters to `redis` (from [`RedisConfig::connect`]: a server or a
    /// cluster, where the hash is one key in one slot) every `every`.
    pub fn start(cache: HybridCache, redis: RedisConnection, every: Duration) -> StatsReporter {
        // Hot keys are sampled from the first take on: from now.
        cache.take_hot_keys();
        let inner = Arc::new(Reporter {
            key: stats_key(cache.namespace()),
            hot: hot_key(cache.namespace()),
            cache,
            redis,
            sent: Mutex::new([0; 6]),
        });
        let background = inner.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(error) = background.flush().await {
                    tracing::debug!(%error, "stats flush failed; retried next time");
                }
            }
        });
        StatsReporter { inner, task }
    }

    /// Sends what changed since the last flush now.
    pub async fn flush(&self) -> Result<(), strata::Error> {
        self.inner.flush().await
    }
}

impl Drop for StatsReporter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One namespace's counters over all its instances.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceStats {
    /// The namespace (a service).
    pub namespace: String,
    /// Hits in an L1.
    pub l1_hits: u64,
    /// Hits in L2.
    pub l2_hits: u64,
    /// Misses (loads, or waits on another's load).
    pub misses: u64,
    /// Misses answered by another caller's load.
    pub waited: u64,
    /// Stale values served (stale-while-revalidate, fail-safe).
    pub stale_served: u64,
    /// Loader calls (reads of the source).
    pub loader_calls: u64,
    /// When an instance last reported (unix ms).
    pub updated_ms: u64,
}

impl NamespaceStats {
    /// What was counted after `before` (an earlier reading of the same namespace): each
    /// counter's growth; `updated_ms` is this reading's.
    pub fn since(&self, before: &NamespaceStats) -> NamespaceStats {
        NamespaceStats {
            namespace: self.namespace.clone(),
            l1_hits: self.l1_hits.saturating_sub(before.l1_hits),
            l2_hits: self.l2_hits.saturating_sub(before.l2_hits),
            misses: self.misses.saturating_sub(before.misses),
            waited: self.waited.saturating_sub(before.waited),
            stale_served: self.stale_served.saturating_sub(before.stale_served),
            loader_calls: self.loader_calls.saturating_sub(before.loader_calls),
            updated_ms: self.updated_ms,
        }
    }

    /// Reads counted: hits in either level and misses.
    pub fn reads(&self) -> u64 {
        self.l1_hits + self.l2_hits + self.misses
    }

    /// Hits over reads (0 without reads).
    pub fn hit_ratio(&self) -> f64 {
        let hits = (self.l1_hits + self.l2_hits) as f64;
        let reads = hits + self.misses as f64;
        if reads == 0.0 { 0.0 } else { hits / reads }
    }
}

/// A namespace's hottest keys, over every instance that reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceHotKeys {
    /// The namespace (a service).
    pub namespace: String,
    /// Keys and their reads (estimated, since the set was made), most read first.
    pub keys: Vec<(String, u64)>,
}

/// Reads every namespace's counters: `SCAN`s the server, or every master of a cluster, for
/// `*#stats` hashes.
pub struct StatsReader {
    conn: Connection,
}

impl std::fmt::Debug for StatsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsReader").finish_non_exhaustive()
    }
}

impl StatsReader {
    /// Connects (a server, Sentinel's master, or a cluster).
    pub async fn connect(config: &RedisConfig) -> Result<StatsReader, strata::Error> {
        Ok(StatsReader {
            conn: Connection::open(config).await?,
        })
    }

    /// The keys matching `pattern` on the server or every master, sorted.
    async fn scan(&self, pattern: &str) -> Result<Vec<String>, strata::Error> {
        let mut keys: Vec<String> = Vec::new();
        let mut scan = self.conn.scan(pattern).await?;
        while let Some(batch) = scan.next_page().await? {
            keys.extend(batch.into_iter().filter_map(|k| String::from_utf8(k).ok()));
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// The `count` hottest keys of `namespace`, or of every namespace that reports them.
    pub async fn hot_keys(
        &self,
        namespace: Option<&str>,
        count: usize,
    ) -> Result<Vec<NamespaceHotKeys>, strata::Error> {
        let sets = match namespace {
            Some(ns) => vec![hot_key(ns)],
            None => self.scan("*#hot").await?,
        };
        let mut out = Vec::with_capacity(sets.len());
        for set in sets {
            if count == 0 {
                break;
            }
            let keys: Vec<(String, u64)> = redis::cmd("ZREVRANGE")
                .arg(&set)
                .arg(0)
                .arg(count - 1)
                .arg("WITHSCORES")
                .query_async(&mut self.conn.get())
                .await
                .map_err(classify)?;
            out.push(NamespaceHotKeys {
                namespace: set.trim_end_matches("#hot").to_owned(),
                keys,
            });
        }
        Ok(out)
    }

    /// Every namespace's counters kept in Redis, by name.
    pub async fn read(&self) -> Result<Vec<NamespaceStats>, strata::Error> {
        let keys = self.scan("*#stats").await?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let fields: Vec<(String, u64)> = redis::cmd("HGETALL")
                .arg(&key)
                .query_async(&mut self.conn.get())
                .await
                .unwrap_or_default();
            let mut s = NamespaceStats {
                namespace: key.trim_end_matches("#stats").to_owned(),
                ..NamespaceStats::default()
            };
            for (field, value) in fields {
                match field.as_str() {
                    "l1_hits" => s.l1_hits = value,
                    "l2_hits" => s.l2_hits = value,
                    "misses" => s.misses = value,
                    "waited" => s.waited = value,
                    "stale_served" => s.stale_served = value,
                    "loader_calls" => s.loader_calls = value,
                    "updated_ms" => s.updated_ms = value,
                    _ => {}
                }
            }
            out.push(s);
        }
        Ok(out)
    }
}
