//! `--redis URL`: the hit ratio as the services counted it — the counters every Strata
//! instance publishes (`strata stats`), per namespace, over the measured phase.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use strata_redis::{NamespaceStats, RedisConfig, StatsReader};

use crate::BoxError;

/// Reads the counters at the phase's edges.
pub(crate) struct Counter {
    reader: StatsReader,
    namespaces: Vec<String>,
    every: Duration,
}

/// The counters' change over the phase.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Counted {
    pub(crate) namespaces: Vec<CountedNamespace>,
    /// Over the namespaces listed.
    pub(crate) reads: u64,
    pub(crate) hits: u64,
    pub(crate) hit_ratio: Option<f64>,
    pub(crate) loader_calls: u64,
}

/// One namespace's change.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CountedNamespace {
    pub(crate) namespace: String,
    pub(crate) reads: u64,
    pub(crate) l1_hits: u64,
    pub(crate) l2_hits: u64,
    pub(crate) misses: u64,
    pub(crate) hit_ratio: Option<f64>,
    pub(crate) loader_calls: u64,
    pub(crate) stale_served: u64,
}

/// Counters as read: namespace → counters.
pub(crate) type Reading = HashMap<String, NamespaceStats>;

impl Counter {
    /// `namespaces` empty: every namespace that reports. `every`: how often the services
    /// publish (a `StatsReporter`'s period; 2 s unless they chose another).
    pub(crate) async fn connect(
        url: &str,
        namespaces: Vec<String>,
        every: Duration,
    ) -> Result<Counter, BoxError> {
        let reader = StatsReader::connect(&RedisConfig::from_url(url)?)
            .await
            .map_err(|e| format!("--redis: {e}"))?;
        Ok(Counter {
            reader,
            namespaces,
            every,
        })
    }

    async fn read(&self) -> Result<Reading, BoxError> {
        Ok(self
            .reader
            .read()
            .await?
            .into_iter()
            .filter(|s| self.namespaces.is_empty() || self.namespaces.contains(&s.namespace))
            .map(|s| (s.namespace.clone(), s))
            .collect())
    }

    /// The counters once every instance has published what it counted so far: two readings
    /// a reporting period apart that agree (at most five periods, for services that other
    /// traffic keeps busy).
    pub(crate) async fn settled(&self) -> Result<Reading, BoxError> {
        let mut last = self.read().await?;
        for _ in 0..5 {
            tokio::time::sleep(self.every + Duration::from_millis(200)).await;
            let now = self.read().await?;
            let same = now.len() == last.len()
                && now.iter().all(|(ns, s)| {
                    last.get(ns).is_some_and(|l| {
                        (l.l1_hits, l.l2_hits, l.misses) == (s.l1_hits, s.l2_hits, s.misses)
                    })
                });
            last = now;
            if same {
                break;
            }
        }
        Ok(last)
    }
}

impl Counted {
    /// The change from `before` to `after`.
    pub(crate) fn between(before: &Reading, after: &Reading) -> Counted {
        let mut namespaces: Vec<CountedNamespace> = after
            .values()
            .map(|after| {
                let d = after.since(&before.get(&after.namespace).cloned().unwrap_or_default());
                CountedNamespace {
                    reads: d.reads(),
                    hit_ratio: (d.reads() > 0).then(|| d.hit_ratio()),
                    namespace: d.namespace,
                    l1_hits: d.l1_hits,
                    l2_hits: d.l2_hits,
                    misses: d.misses,
                    loader_calls: d.loader_calls,
                    stale_served: d.stale_served,
                }
            })
            .collect();
        namespaces.sort_by(|a, b| a.namespace.cmp(&b.namespace));
        let reads = namespaces.iter().map(|n| n.reads).sum();
        let hits = namespaces.iter().map(|n| n.l1_hits + n.l2_hits).sum();
        Counted {
            reads,
            hits,
            hit_ratio: (reads > 0).then(|| hits as f64 / reads as f64),
            loader_calls: namespaces.iter().map(|n| n.loader_calls).sum(),
            namespaces,
        }
    }

    /// The human table's part.
    pub(crate) fn table(&self) -> String {
        let mut out = String::from("cache, as the services counted it (--redis):\n");
        out.push_str(&format!(
            "  {:<14} {:>10} {:>10} {:>8} {:>8} {:>10}\n",
            "namespace", "reads", "hit ratio", "L1", "L2", "loads"
        ));
        let pct = |r: Option<f64>| r.map_or_else(|| "-".into(), |r| format!("{:.1}%", r * 100.0));
        for n in &self.namespaces {
            out.push_str(&format!(
                "  {:<14} {:>10} {:>10} {:>8} {:>8} {:>10}\n",
                n.namespace,
                n.reads,
                pct(n.hit_ratio),
                n.l1_hits,
                n.l2_hits,
                n.loader_calls
            ));
        }
        out.push_str(&format!(
            "  {:<14} {:>10} {:>10} {:>8} {:>8} {:>10}\n",
            "all",
            self.reads,
            pct(self.hit_ratio),
            "",
            "",
            self.loader_calls
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(ns: &str, l1: u64, l2: u64, misses: u64, loads: u64) -> (String, NamespaceStats) {
        (
            ns.to_owned(),
            NamespaceStats {
                namespace: ns.to_owned(),
                l1_hits: l1,
                l2_hits: l2,
                misses,
                loader_calls: loads,
                ..NamespaceStats::default()
            },
        )
    }

    #[test]
    fn the_change_over_the_phase_is_counted() {
        let before: Reading = [stats("product", 10, 5, 5, 5)].into_iter().collect();
        let after: Reading = [stats("product", 80, 15, 25, 24), stats("user", 3, 0, 1, 1)]
            .into_iter()
            .collect();
        let c = Counted::between(&before, &after);
        assert_eq!(c.namespaces.len(), 2);
        let p = &c.namespaces[0];
        assert_eq!((p.reads, p.l1_hits, p.l2_hits, p.misses), (100, 70, 10, 20));
        assert_eq!(p.hit_ratio, Some(0.8));
        assert_eq!(p.loader_calls, 19);
        assert_eq!((c.reads, c.hits), (104, 83));
        assert!(c.table().contains("product"));
    }
}
