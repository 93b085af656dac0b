//! `strata stats`: hit rates per service over all instances, as kept in Redis.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use strata_redis::{NamespaceStats, RedisConfig, StatsReader};

use crate::BoxError;

/// `strata stats`.
#[derive(Args, Debug)]
pub(crate) struct StatsArgs {
    /// Redis (default: REDIS_URL).
    #[arg(long)]
    redis: Option<String>,
    /// Refresh the table until Ctrl-C, with rates over each interval.
    #[arg(long)]
    watch: bool,
    /// Seconds between refreshes with --watch.
    #[arg(long, default_value_t = 2)]
    every: u64,
}

pub(crate) async fn run(args: StatsArgs) -> Result<ExitCode, BoxError> {
    let url = args
        .redis
        .or_else(|| std::env::var("REDIS_URL").ok())
        .ok_or("give --redis URL (or set REDIS_URL): the counters are kept in Redis")?;
    let reader = StatsReader::connect(&RedisConfig::from_url(&url)?).await?;
    let mut previous: HashMap<String, NamespaceStats> = HashMap::new();
    loop {
        let now = reader.read().await?;
        let table = render(&now, args.watch.then_some((&previous, args.every)));
        if args.watch {
            // Clear the screen and go home, then the table.
            print!("\x1b[2J\x1b[H{table}");
        } else {
            print!("{table}");
        }
        if !args.watch {
            return Ok(ExitCode::SUCCESS);
        }
        previous = now.into_iter().map(|s| (s.namespace.clone(), s)).collect();
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(args.every.max(1))) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// The table; with a previous sample, read rates and the hit ratio over the interval too.
pub(crate) fn render(
    now: &[NamespaceStats],
    previous: Option<(&HashMap<String, NamespaceStats>, u64)>,
) -> String {
    let mut out = String::new();
    if now.is_empty() {
        out.push_str("no stats in Redis yet (services report every 2 s while they run)\n");
        return out;
    }
    out.push_str(&format!(
        "{:<12} {:>10} {:>9} {:>9} {:>9} {:>10} {:>8}",
        "namespace", "reads", "hit ratio", "L1", "L2", "loads", "stale"
    ));
    if previous.is_some() {
        out.push_str(&format!(" {:>9} {:>10}", "reads/s", "ratio now"));
    }
    out.push('\n');
    for s in now {
        let reads = s.reads();
        let share = |n: u64| {
            if reads == 0 {
                0.0
            } else {
                n as f64 * 100.0 / reads as f64
            }
        };
        out.push_str(&format!(
            "{:<12} {:>10} {:>8.1}% {:>8.1}% {:>8.1}% {:>10} {:>8}",
            s.namespace,
            reads,
            s.hit_ratio() * 100.0,
            share(s.l1_hits),
            share(s.l2_hits),
            s.loader_calls,
            s.stale_served
        ));
        if let Some((prev, every)) = previous {
            let delta = s.since(&prev.get(&s.namespace).cloned().unwrap_or_default());
            let reads_now = delta.reads();
            out.push_str(&format!(
                " {:>9.1} {:>9.1}%",
                reads_now as f64 / every.max(1) as f64,
                delta.hit_ratio() * 100.0
            ));
        }
        out.push('\n');
    }
    out
}
