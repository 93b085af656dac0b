//! `strata top`: the keys each service reads most, over all its instances — what a stampede or
//! a thundering herd hits. Read from what the instances publish with their stats
//! (`strata_redis::StatsReporter`: sampled reads, `<namespace>#hot`); rates are over the
//! refresh interval, shares of the namespace's reads over the same interval.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use strata_redis::{NamespaceHotKeys, NamespaceStats, RedisConfig, StatsReader};

use crate::BoxError;

/// `strata top`.
#[derive(Args, Debug)]
pub(crate) struct TopArgs {
    /// Redis (default: REDIS_URL).
    #[arg(long)]
    redis: Option<String>,
    /// One namespace (default: every namespace that reports hot keys).
    #[arg(long)]
    namespace: Option<String>,
    /// Keys shown per namespace.
    #[arg(long, default_value_t = 10)]
    count: usize,
    /// Seconds between refreshes; rates are over this interval.
    #[arg(long, default_value_t = 2)]
    every: u64,
    /// One table, of rates over one interval, then exit (no screen refresh).
    #[arg(long)]
    once: bool,
    /// One JSON object, of rates over one interval, then exit.
    #[arg(long)]
    json: bool,
}

/// How many keys are read per namespace to find the fastest-growing: more than are shown, so
/// a key cold in total but hot now is not missed.
const WINDOW: usize = 200;

/// A snapshot: each namespace's hot keys (total reads) and counters.
struct Sample {
    at: Instant,
    hot: Vec<NamespaceHotKeys>,
    stats: HashMap<String, NamespaceStats>,
}

/// One namespace's view over an interval.
#[derive(Debug, Serialize)]
struct Namespace {
    namespace: String,
    /// Reads per second of the whole namespace (every instance's counters).
    reads_per_s: f64,
    keys: Vec<Key>,
}

#[derive(Debug, Serialize)]
struct Key {
    key: String,
    /// Reads per second over the interval (estimated from sampled reads).
    reads_per_s: f64,
    /// Of the namespace's reads over the interval (0–1).
    share: f64,
    /// Reads since the namespace's set was made (estimated).
    reads: u64,
}

pub(crate) async fn run(args: TopArgs) -> Result<ExitCode, BoxError> {
    let url = args
        .redis
        .clone()
        .or_else(|| std::env::var("REDIS_URL").ok())
        .ok_or("give --redis URL (or set REDIS_URL): hot keys are kept in Redis")?;
    let reader = StatsReader::connect(&RedisConfig::from_url(&url)?).await?;
    let every = Duration::from_secs(args.every.max(1));
    let one_shot = args.once || args.json;
    let mut previous = sample(&reader, args.namespace.as_deref()).await?;
    if !one_shot {
        print!(
            "\x1b[2J\x1b[H{}",
            render(&view(&previous, None, args.count))
        );
    }
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
        let now = sample(&reader, args.namespace.as_deref()).await?;
        let namespaces = view(&now, Some(&previous), args.count);
        if args.json {
            let interval = now.at.duration_since(previous.at).as_secs_f64();
            let out = serde_json::json!({ "interval_s": interval, "namespaces": namespaces });
            println!("{out}");
            return Ok(ExitCode::SUCCESS);
        }
        let table = render(&namespaces);
        if args.once {
            print!("{table}");
            return Ok(ExitCode::SUCCESS);
        }
        print!("\x1b[2J\x1b[H{table}");
        previous = now;
    }
}

async fn sample(reader: &StatsReader, namespace: Option<&str>) -> Result<Sample, BoxError> {
    let hot = reader.hot_keys(namespace, WINDOW).await?;
    let stats = reader
        .read()
        .await?
        .into_iter()
        .map(|s| (s.namespace.clone(), s))
        .collect();
    Ok(Sample {
        at: Instant::now(),
        hot,
        stats,
    })
}

fn reads(s: &NamespaceStats) -> u64 {
    s.l1_hits + s.l2_hits + s.misses
}

/// Each namespace's `count` hottest keys: by rate over the interval since `previous`, or by
/// total reads without one.
fn view(now: &Sample, previous: Option<&Sample>, count: usize) -> Vec<Namespace> {
    let secs = previous.map_or(0.0, |p| now.at.duration_since(p.at).as_secs_f64());
    let rate = |delta: u64| if secs > 0.0 { delta as f64 / secs } else { 0.0 };
    let mut out = Vec::new();
    for ns in &now.hot {
        let last = previous.and_then(|p| p.hot.iter().find(|h| h.namespace == ns.namespace));
        let before: HashMap<&str, u64> = last
            .map(|h| h.keys.iter().map(|(k, n)| (k.as_str(), *n)).collect())
            .unwrap_or_default();
        // A key outside the last sample's window had at most its smallest count then (or
        // nothing, if the window held every key): counting all its reads as new would rank a
        // key that merely climbed into the window above the ones read now.
        let floor = last
            .filter(|h| h.keys.len() >= WINDOW)
            .and_then(|h| h.keys.last())
            .map_or(0, |(_, n)| *n);
        let total = now.stats.get(&ns.namespace).map_or(0, reads);
        let total_before = previous
            .and_then(|p| p.stats.get(&ns.namespace))
            .map_or(0, reads);
        let ns_rate = rate(total.saturating_sub(total_before));
        let mut keys: Vec<Key> = ns
            .keys
            .iter()
            .map(|(key, reads)| {
                let then = before.get(key.as_str()).copied().unwrap_or(floor);
                let delta = reads.saturating_sub(then);
                let r = rate(delta);
                Key {
                    key: key.clone(),
                    reads_per_s: r,
                    share: if ns_rate > 0.0 {
                        (r / ns_rate).min(1.0)
                    } else {
                        0.0
                    },
                    reads: *reads,
                }
            })
            .collect();
        if previous.is_some() {
            keys.sort_by(|a, b| {
                b.reads_per_s
                    .total_cmp(&a.reads_per_s)
                    .then_with(|| a.key.cmp(&b.key))
            });
            keys.retain(|k| k.reads_per_s > 0.0);
        }
        keys.truncate(count);
        out.push(Namespace {
            namespace: ns.namespace.clone(),
            reads_per_s: ns_rate,
            keys,
        });
    }
    out
}

/// The table: per namespace, its keys with their rates and shares (totals alone before the
/// first interval).
fn render(namespaces: &[Namespace]) -> String {
    let mut out = String::new();
    if namespaces.is_empty() {
        out.push_str(
            "no hot keys in Redis yet (services publish them with their stats, every 2 s, \
             through strata_redis::StatsReporter)\n",
        );
        return out;
    }
    for ns in namespaces {
        out.push_str(&format!(
            "{}  {:.1} reads/s over all instances\n",
            ns.namespace, ns.reads_per_s
        ));
        out.push_str(&format!(
            "{:>4}  {:<40} {:>10} {:>7} {:>14}\n",
            "#", "key", "reads/s", "share", "reads (total)"
        ));
        if ns.keys.is_empty() {
            out.push_str("      (no reads over the interval)\n");
        }
        for (i, k) in ns.keys.iter().enumerate() {
            out.push_str(&format!(
                "{:>4}  {:<40} {:>10.1} {:>6.1}% {:>14}\n",
                i + 1,
                shorten(&k.key, 40),
                k.reads_per_s,
                k.share * 100.0,
                k.reads
            ));
        }
        out.push('\n');
    }
    out.push_str("reads are sampled (1 in 16) by each instance: estimates\n");
    out
}

/// `key` on one line (control characters escaped: the gateway's keys hold newlines), cut to
/// `width` characters with an ellipsis.
fn shorten(key: &str, width: usize) -> String {
    let shown: String = key
        .chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect();
    if shown.chars().count() <= width {
        shown
    } else {
        let mut s: String = shown.chars().take(width - 1).collect();
        s.push('…');
        s
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use strata_redis::NamespaceHotKeys;

    use super::{Sample, WINDOW, shorten, view};

    fn sample(at: Instant, keys: Vec<(String, u64)>) -> Sample {
        Sample {
            at,
            hot: vec![NamespaceHotKeys {
                namespace: "svc".into(),
                keys,
            }],
            stats: Default::default(),
        }
    }

    /// A full window of 1,000 reads each; then `climber` (not in the first window: it had
    /// at most 1,000) shows 1,100, and `k0` gained 500. `k0` is read most now.
    #[test]
    fn a_key_climbing_into_the_window_is_not_counted_from_zero() {
        let t = Instant::now();
        let keys = |k0: u64| -> Vec<(String, u64)> {
            let mut v: Vec<(String, u64)> = (0..WINDOW).map(|i| (format!("k{i}"), 1_000)).collect();
            v[0].1 = k0;
            v
        };
        let before = sample(t, keys(1_000));
        let mut now_keys = keys(1_500);
        now_keys.insert(1, ("climber".into(), 1_100));
        let now = sample(t + Duration::from_secs(1), now_keys);
        let ranked = view(&now, Some(&before), 2);
        let names: Vec<&str> = ranked[0].keys.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(names, ["k0", "climber"]);
        assert!((ranked[0].keys[1].reads_per_s - 100.0).abs() < 1.0);
    }

    #[test]
    fn keys_show_on_one_line_and_fit() {
        assert_eq!(
            shorten("http:products\n/products/1", 40),
            "http:products\\n/products/1"
        );
        assert_eq!(shorten("a\tb", 40), "a\\tb");
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(shorten("", 4), "");
    }
}
