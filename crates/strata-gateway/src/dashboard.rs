//! The landscape's page at `/_strata/`: live hit ratios per namespace — over every instance,
//! from the counters each one keeps in Redis — and the invalidations this gateway saw lately.
//!
//! The page itself (`/_strata/`, its script and style) holds no data and is public; its data
//! comes from `GET /_strata/api/dashboard`, behind the admin token like the rest of the admin
//! API. The page takes the token from its URL's fragment (`/_strata/#token=…`), which
//! browsers never send to a server or put in a `Referer`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use strata::HybridCache;
use strata::invalidation::Target;
use strata_http::Purge;
use strata_redis::{NamespaceStats, StatsReader};

/// How many invalidations the page lists.
const RECENT: usize = 50;

/// How often the counters are sampled: the page's "last interval" is between two samples.
const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// What the page shows, gathered as the gateway runs.
pub(crate) struct Dashboard {
    own: HybridCache,
    /// Where every instance keeps its counters (`<namespace>#stats`), with Redis.
    redis: Option<StatsReader>,
    samples: Mutex<Samples>,
    recent: Mutex<VecDeque<Seen>>,
}

/// The last two samples of every namespace's counters. Sampled by one task, not per page
/// request: however many pages poll, Redis sees one read per namespace every 2 s.
#[derive(Default)]
struct Samples {
    previous: Option<(Instant, Vec<NamespaceStats>)>,
    latest: Option<(Instant, Vec<NamespaceStats>)>,
    error: Option<String>,
}

/// One invalidation seen.
struct Seen {
    at_ms: u64,
    namespace: String,
    kind: &'static str,
    name: String,
    via: &'static str,
}

impl Dashboard {
    /// Starts sampling `own`'s counters — every namespace's in Redis, when there is Redis.
    pub(crate) fn start(own: HybridCache, redis: Option<StatsReader>) -> Arc<Self> {
        let dashboard = Arc::new(Dashboard {
            own,
            redis,
            samples: Mutex::default(),
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
        });
        let weak = Arc::downgrade(&dashboard);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SAMPLE_EVERY);
            every.tick().await; // the first tick is now
            while let Some(dashboard) = weak.upgrade() {
                dashboard.sample().await;
                drop(dashboard);
                every.tick().await;
            }
        });
        dashboard
    }

    async fn sample(&self) {
        let read = match &self.redis {
            Some(redis) => redis
                .read()
                .await
                .map_err(|e| format!("reading the counters in Redis: {e}")),
            None => {
                let s = self.own.stats();
                Ok(vec![NamespaceStats {
                    namespace: self.own.namespace().to_owned(),
                    l1_hits: s.l1_hits,
                    l2_hits: s.l2_hits,
                    misses: s.misses,
                    waited: s.waited,
                    stale_served: s.stale_served,
                    loader_calls: s.loader_calls,
                    updated_ms: now_ms(),
                }])
            }
        };
        let mut samples = lock(&self.samples);
        match read {
            Ok(all) => {
                samples.previous = samples.latest.take();
                samples.latest = Some((Instant::now(), all));
                samples.error = None;
            }
            Err(e) => samples.error = Some(e),
        }
    }

    /// Notes an invalidation of `namespace` read from the invalidation log.
    pub(crate) fn saw(&self, namespace: &str, target: &Target) {
        let (kind, name) = match target {
            Target::Key(key) => ("key", key.clone()),
            Target::Tag(tag) => ("tag", tag.clone()),
            Target::Clear => ("clear", String::new()),
        };
        self.note(namespace, kind, name, "log");
    }

    /// Notes a purge through this gateway's admin API (without Redis there is no log to
    /// read it back from).
    pub(crate) fn saw_purge(&self, namespace: &str, purge: &Purge) {
        let kinds = [
            ("url", &purge.urls),
            ("tag", &purge.tags),
            ("prefix", &purge.prefixes),
        ];
        for (kind, names) in kinds {
            for name in names {
                self.note(
                    namespace,
                    kind,
                    name.clone(),
                    if purge.soft { "soft purge" } else { "purge" },
                );
            }
        }
    }

    fn note(&self, namespace: &str, kind: &'static str, name: String, via: &'static str) {
        let mut recent = lock(&self.recent);
        if recent.len() == RECENT {
            recent.pop_back();
        }
        recent.push_front(Seen {
            at_ms: now_ms(),
            namespace: namespace.to_owned(),
            kind,
            name,
            via,
        });
    }

    /// The page's data: every namespace's counters (all instances with Redis; this gateway's
    /// own without), with the hit ratio and reads per second between the last two samples,
    /// and the recent invalidations, newest first.
    pub(crate) fn snapshot(&self, backend: &str) -> Value {
        let samples = lock(&self.samples);
        let namespaces: Vec<Value> = samples
            .latest
            .iter()
            .flat_map(|(at, all)| all.iter().map(move |s| (at, s)))
            .map(|(at, s)| {
                let before = samples.previous.as_ref().and_then(|(then, all)| {
                    all.iter()
                        .find(|p| p.namespace == s.namespace)
                        .map(|p| (at.duration_since(*then), p))
                });
                let interval = before.map(|(took, p)| {
                    let reads = reads(s).saturating_sub(reads(p));
                    let hits = hits(s).saturating_sub(hits(p));
                    json!({
                        "reads_per_s": reads as f64 / took.as_secs_f64().max(0.001),
                        "hit_ratio": (reads > 0).then(|| hits as f64 / reads as f64),
                    })
                });
                json!({
                    "namespace": s.namespace,
                    "reads": reads(s),
                    "hit_ratio": s.hit_ratio(),
                    "l1_hits": s.l1_hits,
                    "l2_hits": s.l2_hits,
                    "misses": s.misses,
                    "stale_served": s.stale_served,
                    "loader_calls": s.loader_calls,
                    "updated_ms": s.updated_ms,
                    "interval": interval,
                })
            })
            .collect();
        let recent = lock(&self.recent);
        json!({
            "now_ms": now_ms(),
            "backend": backend,
            "error": samples.error,
            "namespaces": namespaces,
            "invalidations": recent.iter().map(|s| json!({
                "at_ms": s.at_ms,
                "namespace": s.namespace,
                "kind": s.kind,
                "name": s.name,
                "via": s.via,
            })).collect::<Vec<_>>(),
        })
    }
}

fn reads(s: &NamespaceStats) -> u64 {
    hits(s) + s.misses
}

fn hits(s: &NamespaceStats) -> u64 {
    s.l1_hits + s.l2_hits
}

/// A poisoned lock holds only counters and notes: keep going.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The page's static parts, by path.
pub(crate) fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/_strata/" | "/_strata" => Some((
            include_str!("assets/dashboard.html"),
            "text/html; charset=utf-8",
        )),
        "/_strata/dashboard.js" => Some((
            include_str!("assets/dashboard.js"),
            "text/javascript; charset=utf-8",
        )),
        "/_strata/dashboard.css" => Some((
            include_str!("assets/dashboard.css"),
            "text/css; charset=utf-8",
        )),
        _ => None,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_the_latest_invalidations_newest_first() {
        let cache = HybridCache::builder("gateway").build().await.unwrap();
        let d = Dashboard {
            own: cache,
            redis: None,
            samples: Mutex::default(),
            recent: Mutex::new(VecDeque::new()),
        };
        for i in 0..RECENT + 5 {
            d.saw("product", &Target::Tag(format!("product:{i}")));
        }
        d.saw_purge(
            "gateway",
            &Purge {
                urls: vec!["/a".into()],
                soft: true,
                ..Purge::default()
            },
        );
        let recent = lock(&d.recent);
        assert_eq!(recent.len(), RECENT);
        assert_eq!(
            (recent[0].kind, recent[0].name.as_str(), recent[0].via),
            ("url", "/a", "soft purge")
        );
        assert_eq!(recent[1].name, format!("product:{}", RECENT + 4));
        assert_eq!(recent[RECENT - 1].name, "product:6", "the oldest dropped");
    }
}
