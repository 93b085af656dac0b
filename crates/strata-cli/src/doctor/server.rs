//! The server's own checks, from `INFO` (every master of a cluster), `CLUSTER INFO`,
//! `LATENCY DOCTOR` and a round-trip sample.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use redis::Value;
use strata_redis::{RedisConnection, ServerFeatures};

use super::{Check, Verdict};

/// One server's `INFO` fields.
struct Node {
    /// `host:port` on a cluster; `server` alone.
    name: String,
    info: HashMap<String, String>,
    /// The text the fields came from.
    text: String,
}

impl Node {
    fn get(&self, field: &str) -> &str {
        self.info.get(field).map_or("", String::as_str)
    }

    fn number(&self, field: &str) -> Option<u64> {
        self.get(field).parse().ok()
    }
}

pub(super) async fn checks(conn: &RedisConnection, cluster: bool) -> Vec<Check> {
    let nodes = match info(conn).await {
        Ok(nodes) if !nodes.is_empty() => nodes,
        Ok(_) => return vec![Check::new("server", Verdict::Fail, "INFO answered nothing")],
        Err(e) => {
            return vec![
                Check::new("server", Verdict::Fail, format!("INFO failed: {e}"))
                    .fix("Strata reads INFO once per connection: grant +info to the user (see `strata doctor --namespace NS`)"),
            ];
        }
    };
    let mut checks = vec![
        features(&nodes, cluster),
        memory(&nodes),
        persistence(&nodes),
        replication(&nodes),
    ];
    if cluster {
        checks.push(cluster_state(conn).await);
    }
    checks.push(latency(conn).await);
    checks
}

/// `INFO` of the server, or of every master of a cluster (the client asks each).
async fn info(conn: &RedisConnection) -> Result<Vec<Node>, String> {
    let reply: Value = redis::cmd("INFO")
        .query_async(&mut conn.clone())
        .await
        .map_err(|e| e.to_string())?;
    let text = |v: &Value| -> Option<String> {
        match v {
            Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::VerbatimString { text, .. } => Some(text.clone()),
            Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        }
    };
    let parse = |name: String, text: String| Node {
        name,
        info: text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect(),
        text,
    };
    match &reply {
        Value::Map(nodes) => Ok(nodes
            .iter()
            .filter_map(|(k, v)| Some(parse(text(k)?, text(v)?)))
            .collect()),
        other => Ok(text(other)
            .map(|body| vec![parse("server".into(), body)])
            .unwrap_or_default()),
    }
}

/// The server's version and what Strata does with what it has.
fn features(nodes: &[Node], cluster: bool) -> Check {
    let n = &nodes[0];
    // Valkey reports `valkey_version` beside a frozen `redis_version:7.2.4`.
    let (product, v) = match n.get("valkey_version") {
        "" => ("Redis", n.get("redis_version")),
        v => ("Valkey", v),
    };
    // What Strata's connections will use: the same reading of `INFO` as theirs.
    let f = ServerFeatures::of(&n.text);
    let major = f.redis_version.0;
    let mode = if cluster {
        format!("cluster, {} masters", nodes.len())
    } else {
        n.get("redis_mode").to_owned()
    };
    let mut has = vec![];
    let mut lacks = vec![];
    let mut feature = |ok: bool, what: &'static str| {
        if ok { has.push(what) } else { lacks.push(what) }
    };
    feature(major >= 6, "client tracking (track_foreign_writes)");
    feature(f.nx_get, "SET NX GET (an L2 read without a script)");
    feature(f.nx_get, "sharded pub/sub (pushed invalidations)");
    feature(f.ifeq, "SET IFEQ (a fill without a script)");
    let finding = format!(
        "{product} {v} ({mode}); has: {}{}",
        has.join(", "),
        if lacks.is_empty() {
            String::new()
        } else {
            format!("; lacks: {}", lacks.join(", "))
        }
    );
    if major < 6 {
        Check::new("version", Verdict::Fail, finding)
            .fix("Strata needs Redis 6.2 or later (streams with XAUTOCLAIM, RESP3); upgrade to 7.x")
    } else if major < 7 {
        Check::new("version", Verdict::Warn, finding).fix(
            "on 6.x every L2 read goes through a script and followers poll the log: upgrade to Redis 7 for both",
        )
    } else {
        Check::new("version", Verdict::Ok, finding)
    }
}

/// `maxmemory` and `maxmemory-policy` against how Strata writes: every value, lease and tag
/// index has a TTL; the log, its sequence, the acknowledgements and the write-behind queue
/// have none.
fn memory(nodes: &[Node]) -> Check {
    let mut worst = Check::new("memory", Verdict::Ok, "");
    for n in nodes {
        let limit = n.number("maxmemory").unwrap_or(0);
        let policy = n.get("maxmemory_policy");
        let used = n.number("used_memory").unwrap_or(0);
        let at = if nodes.len() > 1 {
            format!("{}: ", n.name)
        } else {
            String::new()
        };
        let sizes = format!(
            "used {}, maxmemory {}",
            bytes(used),
            if limit == 0 {
                "none".into()
            } else {
                bytes(limit)
            }
        );
        let check = if limit == 0 {
            Check::new(
                "memory",
                Verdict::Warn,
                format!("{at}{sizes}, policy {policy}: Redis grows until the host runs out"),
            )
            .fix("set maxmemory to what the host can spare and maxmemory-policy volatile-lru (or volatile-lfu)")
        } else if policy == "noeviction" {
            Check::new(
                "memory",
                Verdict::Fail,
                format!("{at}{sizes}, policy noeviction: at the limit every write is refused (OOM) — fills fail, and invalidations and log appends are deferred, so other instances serve old values until they land"),
            )
            .fix("CONFIG SET maxmemory-policy volatile-lru (and in redis.conf): values carry TTLs, so Redis can make room")
        } else if policy.starts_with("allkeys-") {
            Check::new(
                "memory",
                Verdict::Warn,
                format!("{at}{sizes}, policy {policy}: under pressure Redis may evict keys without a TTL — the invalidation log or its sequence (every instance then drops its L1: safe, but a burst of misses) and the write-behind queue (queued writes lost)"),
            )
            .fix("prefer volatile-lru or volatile-lfu: every value, lease and tag index Strata writes has a TTL, its log and queues have none, so only cache entries are evicted")
        } else if policy.starts_with("volatile-") {
            let full = used as f64 / limit as f64;
            if full > 0.9 {
                Check::new(
                    "memory",
                    Verdict::Warn,
                    format!("{at}{sizes} ({:.0} % full), policy {policy}: evicting", full * 100.0),
                )
                .fix("evictions shorten what L2 holds (more loads): give it more memory or shorter TTLs")
            } else {
                Check::new(
                    "memory",
                    Verdict::Ok,
                    format!(
                        "{at}{sizes}, policy {policy}: only entries with a TTL (values, leases, tag indexes) are evicted"
                    ),
                )
            }
        } else {
            Check::new(
                "memory",
                Verdict::Warn,
                format!("{at}{sizes}, policy {policy:?} unknown to strata doctor"),
            )
        };
        if check.verdict > worst.verdict || worst.finding.is_empty() {
            worst = check;
        }
    }
    worst
}

fn persistence(nodes: &[Node]) -> Check {
    let n = &nodes[0];
    let aof = n.get("aof_enabled") == "1";
    let fork_ms = n.number("latest_fork_usec").unwrap_or(0) / 1000;
    if n.get("rdb_last_bgsave_status") == "err" || n.get("aof_last_write_status") == "err" {
        return Check::new(
            "persistence",
            Verdict::Fail,
            "the last RDB save or AOF write failed: with stop-writes-on-bgsave-error (the default) Redis refuses every write",
        )
        .fix("see the server's log (disk full? permissions?), or turn persistence off for a cache-only Redis");
    }
    let saves = n.get("rdb_saves");
    let how = match (aof, saves) {
        (true, _) => "AOF on".to_owned(),
        (false, "0" | "") => "no AOF, no RDB save since start".to_owned(),
        (false, s) => format!("RDB snapshots ({s} since start), no AOF"),
    };
    let fork = if fork_ms > 0 {
        format!("; the last fork took {fork_ms} ms")
    } else {
        String::new()
    };
    if fork_ms > 500 {
        return Check::new(
            "persistence",
            Verdict::Warn,
            format!(
                "{how}{fork}: Redis stops answering for that long at every snapshot or rewrite"
            ),
        )
        .fix("fewer or no snapshots on a cache-only Redis, or a smaller instance per host");
    }
    Check::new(
        "persistence",
        Verdict::Ok,
        format!(
            "{how}{fork}. Strata needs none for values (a restart empties L2 and every instance drops its L1 on the log's restart); write-behind's queue survives a restart only with AOF"
        ),
    )
}

fn replication(nodes: &[Node]) -> Check {
    let n = &nodes[0];
    if n.get("role") == "slave" {
        return Check::new(
            "replication",
            Verdict::Fail,
            format!(
                "{} is a replica (of {}:{}): every write is refused (READONLY)",
                n.name,
                n.get("master_host"),
                n.get("master_port")
            ),
        )
        .fix("point Strata at the master, or at Sentinel (redis+sentinel://) to follow failovers");
    }
    let mut without = vec![];
    let mut lagging = vec![];
    for n in nodes {
        let replicas = n.number("connected_slaves").unwrap_or(0);
        if replicas == 0 {
            without.push(n.name.clone());
        }
        for i in 0..replicas {
            let line = n.get(&format!("slave{i}"));
            let field = |k: &str| {
                line.split(',')
                    .find_map(|p| p.strip_prefix(&format!("{k}=")))
                    .unwrap_or("")
            };
            if field("state") != "online" || field("lag").parse::<u64>().unwrap_or(0) > 1 {
                lagging.push(format!("{} ({line})", n.name));
            }
        }
    }
    if !lagging.is_empty() {
        return Check::new(
            "replication",
            Verdict::Warn,
            format!("replicas behind or not online: {}", lagging.join("; ")),
        )
        .fix("a failover to a lagging replica loses the writes it had not received, invalidations included");
    }
    if !without.is_empty() {
        return Check::new(
            "replication",
            Verdict::Warn,
            format!("no replica{}: losing that server loses L2 and the log until it is back (instances serve L1 and stale values meanwhile)", if nodes.len() > 1 { format!(" on {}", without.join(", ")) } else { String::new() }),
        )
        .fix("one replica per master, with Sentinel or Cluster to promote it; on a cluster Strata waits for it (WAIT) before acknowledging a write");
    }
    Check::new(
        "replication",
        Verdict::Ok,
        "every master has an online replica",
    )
}

async fn cluster_state(conn: &RedisConnection) -> Check {
    let reply: Result<String, _> = redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async(&mut conn.clone())
        .await;
    let text = match reply {
        Ok(t) => t,
        Err(e) => {
            return Check::new(
                "cluster",
                Verdict::Fail,
                format!("CLUSTER INFO failed: {e}"),
            )
            .fix("grant +cluster|info (and +cluster|slots +cluster|nodes, which Strata needs)");
        }
    };
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}:")))
            .unwrap_or("")
            .trim()
            .to_owned()
    };
    let (state, assigned, failing) = (
        field("cluster_state"),
        field("cluster_slots_assigned"),
        field("cluster_slots_fail"),
    );
    let finding = format!(
        "state {state}, {assigned} of 16384 slots assigned, {failing} failing, {} nodes",
        field("cluster_known_nodes")
    );
    if state != "ok" || assigned != "16384" {
        Check::new("cluster", Verdict::Fail, finding)
            .fix("every slot needs a master that is up: redis-cli --cluster check / fix")
    } else if failing != "0" {
        Check::new("cluster", Verdict::Warn, finding)
    } else {
        Check::new("cluster", Verdict::Ok, finding)
    }
}

/// A round-trip sample (`PING` × 50, one after another) and what `LATENCY DOCTOR` says.
async fn latency(conn: &RedisConnection) -> Check {
    let mut samples = Vec::with_capacity(50);
    for _ in 0..50 {
        let t = Instant::now();
        let pong: Result<String, _> = redis::cmd("PING").query_async(&mut conn.clone()).await;
        if let Err(e) = pong {
            return Check::new("latency", Verdict::Fail, format!("PING failed: {e}"));
        }
        samples.push(t.elapsed());
    }
    samples.sort();
    let (p50, max) = (samples[25], samples[49]);
    let doctor: Result<String, _> = redis::cmd("LATENCY")
        .arg("DOCTOR")
        .query_async(&mut conn.clone())
        .await;
    let (said, spikes) = match doctor {
        Ok(text) => latency_doctor(&text),
        Err(e) if e.code() == Some("NOPERM") => (
            "LATENCY DOCTOR not permitted for this user".to_owned(),
            false,
        ),
        Err(e) => (format!("LATENCY DOCTOR: {e}"), false),
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let finding = format!(
        "round trip p50 {:.2} ms, max {:.2} ms of 50; {said}",
        ms(p50),
        ms(max)
    );
    if p50 > Duration::from_millis(5) {
        Check::new("latency", Verdict::Fail, finding)
            .fix("every L2 read and write pays this: put Redis in the services' zone, or check the network and the server's load")
    } else if p50 > Duration::from_millis(1) {
        Check::new("latency", Verdict::Warn, finding)
            .fix("above a millisecond an L2 hit costs more than many loads: same zone, or a larger L1 share")
    } else if spikes {
        Check::new("latency", Verdict::Warn, finding).fix(
            "see LATENCY DOCTOR's advice on the server (slow commands, forks, swapping, transparent huge pages)",
        )
    } else {
        Check::new("latency", Verdict::Ok, finding)
    }
}

/// What `LATENCY DOCTOR` said, shortly, and whether it saw spikes.
fn latency_doctor(text: &str) -> (String, bool) {
    if text.contains("monitoring is disabled") {
        return (
            "latency monitoring off (CONFIG SET latency-monitor-threshold 100 records spikes)"
                .into(),
            false,
        );
    }
    // Its findings are numbered: `1. command: 5 latency spikes (average 300ms, …)`.
    let events: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.split_once(". ")
                .is_some_and(|(n, _)| n.parse::<u32>().is_ok())
        })
        .collect();
    if events.is_empty() {
        ("LATENCY DOCTOR saw no spike".into(), false)
    } else {
        (format!("LATENCY DOCTOR: {}", events.join(" ")), true)
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(fields: &[(&str, &str)]) -> Node {
        Node {
            name: "server".into(),
            info: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            text: fields.iter().map(|(k, v)| format!("{k}:{v}\r\n")).collect(),
        }
    }

    #[test]
    fn each_policy_gets_its_verdict() {
        for (limit, policy, verdict) in [
            ("0", "noeviction", Verdict::Warn),
            ("104857600", "noeviction", Verdict::Fail),
            ("104857600", "allkeys-lru", Verdict::Warn),
            ("104857600", "volatile-lru", Verdict::Ok),
            ("104857600", "volatile-ttl", Verdict::Ok),
        ] {
            let n = node(&[
                ("maxmemory", limit),
                ("maxmemory_policy", policy),
                ("used_memory", "1048576"),
            ]);
            let check = memory(&[n]);
            assert_eq!(check.verdict, verdict, "{limit} {policy}: {check:?}");
            assert_eq!(check.fix.is_empty(), verdict == Verdict::Ok, "{check:?}");
        }
    }

    #[test]
    fn versions_say_what_strata_gets() {
        let redis6 = node(&[("redis_version", "6.2.14"), ("redis_mode", "standalone")]);
        let check = features(&[redis6], false);
        assert_eq!(check.verdict, Verdict::Warn);
        assert!(check.finding.contains("lacks: SET NX GET"), "{check:?}");
        let valkey = node(&[("redis_version", "7.2.4"), ("valkey_version", "8.1.1")]);
        let check = features(&[valkey], false);
        assert_eq!(check.verdict, Verdict::Ok);
        assert!(check.finding.starts_with("Valkey 8.1.1"), "{check:?}");
        assert!(!check.finding.contains("lacks"), "{check:?}");
        assert_eq!(
            features(&[node(&[("redis_version", "5.0.7")])], false).verdict,
            Verdict::Fail
        );
        // Redis compares in SET from 8.4, as the connections know.
        let redis84 = features(&[node(&[("redis_version", "8.4.0")])], false);
        assert!(!redis84.finding.contains("lacks"), "{redis84:?}");
    }

    #[test]
    fn a_replica_or_a_failing_save_fails() {
        let replica = node(&[
            ("role", "slave"),
            ("master_host", "10.0.0.1"),
            ("master_port", "6379"),
        ]);
        assert_eq!(replication(&[replica]).verdict, Verdict::Fail);
        let lagging = node(&[
            ("role", "master"),
            ("connected_slaves", "1"),
            (
                "slave0",
                "ip=10.0.0.2,port=6380,state=online,offset=100,lag=7",
            ),
        ]);
        assert_eq!(replication(&[lagging]).verdict, Verdict::Warn);
        let fine = node(&[
            ("role", "master"),
            ("connected_slaves", "1"),
            (
                "slave0",
                "ip=10.0.0.2,port=6380,state=online,offset=100,lag=0",
            ),
        ]);
        assert_eq!(replication(&[fine]).verdict, Verdict::Ok);
        assert_eq!(
            persistence(&[node(&[("rdb_last_bgsave_status", "err")])]).verdict,
            Verdict::Fail
        );
        assert_eq!(bytes(1536), "1.5 KiB");
    }

    #[test]
    fn latency_doctor_is_read_for_spikes() {
        let off = "I'm sorry, Dave, I can't do that. Latency monitoring is disabled in this Redis instance.";
        assert!(!latency_doctor(off).1);
        assert!(latency_doctor(off).0.contains("monitoring off"));
        let calm = "Dave, no latency spike was observed during the lifetime of this Redis instance, not in the slightest bit.";
        assert_eq!(
            latency_doctor(calm),
            ("LATENCY DOCTOR saw no spike".into(), false)
        );
        let spiky = "Dave, I have observed latency spikes in this Redis instance.\n\n1. command: 5 latency spikes (average 300ms, mean deviation 120ms, period 73.2 sec). Worst all time event 500ms.\n\nI have a few advices for you:";
        let (said, spikes) = latency_doctor(spiky);
        assert!(spikes);
        assert!(said.contains("1. command: 5 latency spikes"), "{said}");
    }
}
