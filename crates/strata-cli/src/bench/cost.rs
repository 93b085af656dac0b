//! What a run cost the machine (`WORKLOADS.md`, "Cost"): CPU seconds of the bench's processes
//! and of `redis-server` over the measured phase, and the Redis commands it served.
//!
//! The bench's CPU comes from `/proc/self/stat` (user + system time of every thread, in clock
//! ticks); Redis's from `INFO cpu` and `INFO commandstats`, read before and after the phase.
//! Commands a script runs are counted under their own names, as Redis counts them, beside
//! the `evalsha` that ran them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strata_redis::RedisConnection;

use super::BoxError;

/// Clock ticks per second of `/proc/<pid>/stat`'s times (`USER_HZ`: 100 on every Linux ABI).
const TICKS_PER_S: f64 = 100.0;

/// Commands the bench itself sends to read these figures: not part of the run's cost.
const OWN_COMMANDS: &[&str] = &["info", "config|resetstat", "client|setname", "hello"];

/// CPU seconds (user + system) this process has used so far; `None` where `/proc` cannot
/// tell (not Linux).
pub(crate) fn process_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_S)
}

/// The server a run measured against, from `INFO server`: the server's figures depend on
/// it — above all whether a miss's fill is a plain command or a Lua script there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Server {
    /// `redis` or `valkey`.
    pub(crate) name: &'static str,
    /// Its version, as `INFO server` gives it.
    pub(crate) version: String,
    /// Whether it has `SET … IFEQ` (Valkey 8.1, Redis 8.4 on): Strata's fills are then plain
    /// `SET`s; without it each is a Lua script, which costs the server ~3.7 µs more
    /// (BENCHMARKS.md, "What a fill's script costs").
    pub(crate) set_ifeq: bool,
    /// The server process's `run_id`: a new one each time a server starts, so two runs
    /// that name the same one measured the same process.
    pub(crate) run_id: String,
}

impl Server {
    /// Reads `INFO server`'s text; `None` when it names no version.
    fn of(info: &str) -> Option<Server> {
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .map(|v| v.trim().to_owned())
        };
        let (name, version) = match field("valkey_version:") {
            Some(v) => ("valkey", v),
            None => ("redis", field("redis_version:")?),
        };
        Some(Server {
            name,
            version,
            set_ifeq: strata_redis::ServerFeatures::of(info).ifeq,
            run_id: field("run_id:").unwrap_or_default(),
        })
    }
}

/// The Redis server's CPU seconds and per-command call counts at one moment.
#[derive(Debug, Clone, Default)]
struct RedisSnapshot {
    cpu_s: f64,
    calls: BTreeMap<String, u64>,
    server: Option<Server>,
}

impl RedisSnapshot {
    /// Reads the figures, and the server's identity when `identify` (once, before a phase).
    async fn read(conn: &RedisConnection, identify: bool) -> Result<RedisSnapshot, BoxError> {
        let mut info = redis::cmd("INFO");
        if identify {
            info.arg("server");
        }
        let info: String = info
            .arg("cpu")
            .arg("commandstats")
            .query_async(&mut conn.clone())
            .await?;
        Ok(Self::parse(&info))
    }

    /// Parses `INFO server cpu commandstats`: `redis_version:7.0.15`, `used_cpu_sys:1.5`,
    /// `cmdstat_get:calls=3,usec=…`.
    fn parse(info: &str) -> RedisSnapshot {
        let mut snapshot = RedisSnapshot {
            server: Server::of(info),
            ..RedisSnapshot::default()
        };
        for line in info.lines() {
            let Some((name, value)) = line.trim().split_once(':') else {
                continue;
            };
            if name == "used_cpu_sys" || name == "used_cpu_user" {
                snapshot.cpu_s += value.parse::<f64>().unwrap_or(0.0);
            } else if let Some(command) = name.strip_prefix("cmdstat_") {
                let calls = value
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("calls="))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                snapshot.calls.insert(command.to_owned(), calls);
            }
        }
        snapshot
    }
}

/// CPU used over the measured phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Cpu {
    /// The bench's processes (and workers'), user + system.
    pub(crate) bench_s: f64,
    /// `redis-server`, user + system (`null` without a Redis it can ask).
    pub(crate) redis_s: Option<f64>,
    /// (bench + Redis) CPU µs per measured operation.
    pub(crate) us_per_op: f64,
    /// Redis CPU µs per measured operation.
    pub(crate) redis_us_per_op: Option<f64>,
}

/// Redis commands per measured operation.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct Commands {
    /// Every command, those run by scripts included.
    pub(crate) total: f64,
    /// By command name, as `INFO commandstats` names them.
    pub(crate) by_command: BTreeMap<String, f64>,
}

/// The cost figures of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct Cost {
    pub(crate) cpu: Cpu,
    /// `null` without a Redis it can ask.
    pub(crate) redis_commands_per_op: Option<Commands>,
    /// The server asked (`null` without one).
    pub(crate) l2_server: Option<Server>,
}

/// Measures one phase: started before it, finished after.
pub(crate) struct Meter {
    redis: Option<(RedisConnection, RedisSnapshot)>,
    bench_cpu: Option<f64>,
}

impl Meter {
    /// Starts measuring; `redis` is the server to ask (none when L2 is embedded or a cluster,
    /// whose nodes it would have to ask one by one).
    pub(crate) async fn start(redis: Option<&RedisConnection>) -> Meter {
        let redis = match redis {
            Some(conn) => match RedisSnapshot::read(conn, true).await {
                Ok(s) => Some((conn.clone(), s)),
                Err(e) => {
                    eprintln!("cost: cannot read Redis' INFO ({e}); Redis figures left out");
                    None
                }
            },
            None => None,
        };
        Meter {
            redis,
            bench_cpu: process_cpu_s(),
        }
    }

    /// The cost of `ops` operations since the start; `other_cpu_s` is what other processes of
    /// the run (workers) report for the same phase.
    pub(crate) async fn finish(self, ops: u64, other_cpu_s: f64) -> Cost {
        let own = match (self.bench_cpu, process_cpu_s()) {
            (Some(a), Some(b)) => b - a,
            _ => 0.0,
        };
        let bench_s = own + other_cpu_s;
        let mut redis_s = None;
        let mut commands = None;
        let server = self.redis.as_ref().and_then(|(_, s)| s.server.clone());
        if let Some((conn, before)) = self.redis {
            match RedisSnapshot::read(&conn, false).await {
                Ok(after) => {
                    redis_s = Some((after.cpu_s - before.cpu_s).max(0.0));
                    commands = Some(per_op(&before, &after, ops));
                }
                Err(e) => eprintln!("cost: cannot read Redis' INFO ({e}); Redis figures left out"),
            }
        }
        let per = |s: f64| if ops == 0 { 0.0 } else { s * 1e6 / ops as f64 };
        Cost {
            cpu: Cpu {
                bench_s,
                redis_s,
                us_per_op: per(bench_s + redis_s.unwrap_or(0.0)),
                redis_us_per_op: redis_s.map(per),
            },
            redis_commands_per_op: commands,
            l2_server: server,
        }
    }
}

/// Commands between two snapshots, per operation, the bench's own left out.
fn per_op(before: &RedisSnapshot, after: &RedisSnapshot, ops: u64) -> Commands {
    let ops = ops.max(1) as f64;
    let mut out = Commands::default();
    for (name, calls) in &after.calls {
        if OWN_COMMANDS.contains(&name.as_str()) {
            continue;
        }
        let n = calls.saturating_sub(before.calls.get(name).copied().unwrap_or(0));
        if n > 0 {
            out.total += n as f64 / ops;
            out.by_command.insert(name.clone(), n as f64 / ops);
        }
    }
    out
}

/// CPU seconds this process used while `f` ran (for a worker's share of a phase).
pub(crate) async fn cpu_during<F: std::future::Future>(f: F) -> (F::Output, f64) {
    let before = process_cpu_s();
    let out = f.await;
    let used = match (before, process_cpu_s()) {
        (Some(a), Some(b)) => b - a,
        _ => 0.0,
    };
    (out, used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_is_read_and_the_bench_own_commands_left_out() {
        let before = RedisSnapshot::parse(
            "# CPU\r\nused_cpu_sys:1.50\r\nused_cpu_user:2.00\r\n# Commandstats\r\n\
             cmdstat_get:calls=10,usec=5,usec_per_call=0.5\r\ncmdstat_info:calls=3,usec=1\r\n",
        );
        let after = RedisSnapshot::parse(
            "used_cpu_sys:2.00\r\nused_cpu_user:3.00\r\n\
             cmdstat_get:calls=30,usec=5\r\ncmdstat_evalsha:calls=10,usec=1\r\n\
             cmdstat_info:calls=9,usec=1\r\n",
        );
        assert!((after.cpu_s - before.cpu_s - 1.5).abs() < 1e-9);
        let c = per_op(&before, &after, 10);
        assert_eq!(c.by_command.get("get"), Some(&2.0));
        assert_eq!(c.by_command.get("evalsha"), Some(&1.0));
        assert!(!c.by_command.contains_key("info"));
        assert!((c.total - 3.0).abs() < 1e-9);
    }

    #[test]
    fn the_server_is_named_with_its_version_and_whether_a_fill_needs_a_script() {
        let redis = Server::of(
            "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\nrun_id:4f3a\r\n",
        )
        .expect("redis");
        assert_eq!(
            (
                redis.name,
                redis.version.as_str(),
                redis.set_ifeq,
                redis.run_id.as_str()
            ),
            ("redis", "7.0.15", false, "4f3a")
        );
        let valkey = Server::of("redis_version:7.2.4\r\nvalkey_version:8.1.1\r\n").expect("valkey");
        assert_eq!(
            (valkey.name, valkey.version.as_str(), valkey.set_ifeq),
            ("valkey", "8.1.1", true)
        );
        assert!(Server::of("redis_version:8.4.0\r\n").expect("8.4").set_ifeq);
        assert_eq!(Server::of("# CPU\r\nused_cpu_sys:1.5\r\n"), None);
        // Read with the cost figures, in the same `INFO`.
        let snapshot = RedisSnapshot::parse("redis_version:7.0.15\r\nused_cpu_sys:1.5\r\n");
        assert_eq!(
            snapshot.server.map(|s| s.version),
            Some("7.0.15".to_owned())
        );
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        if cfg!(target_os = "linux") {
            let spent = process_cpu_s().expect("/proc/self/stat");
            assert!(spent >= 0.0);
        }
    }
}
