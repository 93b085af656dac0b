//! Whether the URL's user may run what Strata runs on a namespace: each command tried once,
//! harmlessly, on probe keys of the namespace (`NS:strata-doctor-…`, `NS#strata-doctor-…`,
//! created with a one-minute TTL and removed at the end). A `NOPERM` reply is a missing
//! permission; any other reply means the ACL let the command through.
//!
//! Trying beats reading the rules: `ACL GETUSER` needs admin rights an application user
//! should not have, and the rules' meaning (selectors, key patterns per command) is the
//! server's to compute.

use redis::{Cmd, Pipeline};
use strata_redis::RedisConnection;

use super::{Check, Verdict};

/// A group of commands and what goes missing without it.
struct Group {
    /// Empty for the ones every cache needs.
    loses: &'static str,
    probes: Vec<(&'static str, Probe)>,
}

enum Probe {
    Cmd(Cmd),
    /// `MULTI`/`EXEC` can only be tried as a transaction.
    Transaction(Pipeline),
}

fn cmd(name: &str) -> Cmd {
    let mut c = Cmd::new();
    for part in name.split(' ') {
        c.arg(part);
    }
    c
}

/// What Strata runs (`strata_redis`'s crate docs, "Permissions"), with probe arguments.
fn groups(ns: &str, suffix: &str) -> Vec<Group> {
    let data = format!("{ns}:strata-doctor-{suffix}");
    let counter = format!("{ns}#strata-doctor-{suffix}:n");
    let set = format!("{ns}#strata-doctor-{suffix}:tag");
    let stream = format!("{ns}#strata-doctor-{suffix}:log");
    let hash = format!("{ns}#strata-doctor-{suffix}:h");
    let zset = format!("{ns}#strata-doctor-{suffix}:z");
    let channel = format!("{ns}#strata-doctor-{suffix}");
    let a = |c: &str, args: &[&str]| {
        let mut c = cmd(c);
        for x in args {
            c.arg(*x);
        }
        Probe::Cmd(c)
    };
    let ttl = "60000";
    vec![
        Group {
            loses: "",
            probes: vec![
                ("ping", a("PING", &[])),
                ("set", a("SET", &[&data, "1", "PX", ttl])),
                ("get", a("GET", &[&data])),
                ("mget", a("MGET", &[&data])),
                ("pttl", a("PTTL", &[&data])),
                ("pexpire", a("PEXPIRE", &[&data, ttl])),
                ("incr", a("INCR", &[&counter])),
                ("sadd", a("SADD", &[&set, &data])),
                ("smembers", a("SMEMBERS", &[&set])),
                (
                    "scan",
                    a("SCAN", &["0", "MATCH", &format!("{ns}:*"), "COUNT", "1"]),
                ),
                ("eval", a("EVAL", &["return 1", "1", &data])),
                // No such script: NOSCRIPT if allowed, NOPERM if not.
                (
                    "evalsha",
                    a(
                        "EVALSHA",
                        &["0000000000000000000000000000000000000000", "1", &data],
                    ),
                ),
                ("script|load", a("SCRIPT LOAD", &["return 1"])),
                (
                    "xadd",
                    a("XADD", &[&stream, "MAXLEN", "~", "10", "*", "d", "doctor"]),
                ),
                (
                    "xread",
                    a("XREAD", &["COUNT", "1", "STREAMS", &stream, "0"]),
                ),
                ("xrange", a("XRANGE", &[&stream, "-", "+", "COUNT", "1"])),
                (
                    "xrevrange",
                    a("XREVRANGE", &[&stream, "+", "-", "COUNT", "1"]),
                ),
                // A channel nobody listens on.
                ("publish", a("PUBLISH", &[&channel, "doctor"])),
                ("client|setname", a("CLIENT SETNAME", &["strata-doctor"])),
                ("info", a("INFO", &["server"])),
                ("unlink", a("UNLINK", &[&data])),
            ],
        },
        Group {
            loses: "pushed invalidations (followers read the log with a blocking XREAD instead, which costs the server more)",
            probes: vec![("spublish", a("SPUBLISH", &[&channel, "doctor"]))],
        },
        Group {
            loses: "acknowledged writes",
            probes: vec![
                ("hset", a("HSET", &[&hash, "f", "1"])),
                ("hgetall", a("HGETALL", &[&hash])),
                ("hdel", a("HDEL", &[&hash, "f"])),
            ],
        },
        Group {
            loses: "the stats strata stats and strata top read (StatsReporter)",
            probes: vec![
                ("hincrby", a("HINCRBY", &[&hash, "n", "1"])),
                ("zincrby", a("ZINCRBY", &[&zset, "1", "k"])),
                ("zremrangebyrank", a("ZREMRANGEBYRANK", &[&zset, "0", "-2"])),
                ("zrevrange", a("ZREVRANGE", &[&zset, "0", "0"])),
            ],
        },
        Group {
            loses: "track_foreign_writes",
            probes: vec![
                ("client|id", a("CLIENT ID", &[])),
                // Off is what this connection already is.
                ("client|tracking", a("CLIENT TRACKING", &["off"])),
            ],
        },
        Group {
            loses: "write-behind",
            probes: vec![
                (
                    "xgroup|create",
                    a("XGROUP CREATE", &[&stream, "doctor", "$", "MKSTREAM"]),
                ),
                (
                    "xreadgroup",
                    a(
                        "XREADGROUP",
                        &[
                            "GROUP", "doctor", "c", "COUNT", "1", "STREAMS", &stream, ">",
                        ],
                    ),
                ),
                (
                    "xautoclaim",
                    a(
                        "XAUTOCLAIM",
                        &[&stream, "doctor", "c", "0", "0-0", "COUNT", "1"],
                    ),
                ),
                ("xack", a("XACK", &[&stream, "doctor", "0-1"])),
                ("xdel", a("XDEL", &[&stream, "0-1"])),
                (
                    "multi/exec",
                    Probe::Transaction({
                        let mut p = redis::pipe();
                        p.atomic().cmd("PING");
                        p
                    }),
                ),
            ],
        },
        Group {
            loses: "a cluster deployment (slot map, replicated acknowledgements)",
            probes: vec![
                // On a server without cluster mode: an error after the ACL check.
                ("cluster|slots", a("CLUSTER SLOTS", &[])),
                ("cluster|nodes", a("CLUSTER NODES", &[])),
                ("srem", a("SREM", &[&set, &data])),
                ("exists", a("EXISTS", &[&data])),
                ("wait", a("WAIT", &["0", "0"])),
            ],
        },
    ]
}

/// What a refused probe was refused for, from the `NOPERM` message.
fn refusal(message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    if m.contains("key") {
        "key"
    } else if m.contains("channel") {
        "channel"
    } else {
        "command"
    }
}

pub(super) async fn check(conn: &RedisConnection, namespaces: &[String]) -> Check {
    if namespaces.is_empty() {
        return Check::new(
            "permissions",
            Verdict::Warn,
            "not checked: the ACL is per namespace",
        )
        .fix("give --namespace NS for each namespace the services use");
    }
    let mut c = conn.clone();
    let user: String = redis::cmd("ACL")
        .arg("WHOAMI")
        .query_async(&mut c)
        .await
        .unwrap_or_else(|_| "<user>".into());
    let suffix = format!("{:016x}", probe_suffix());
    let mut findings = vec![];
    let mut fixes = vec![];
    let mut verdict = Verdict::Ok;
    for ns in namespaces {
        let mut missing_core: Vec<String> = vec![];
        let mut lost: Vec<String> = vec![];
        let mut grants: Vec<&str> = vec![];
        let mut patterns: Vec<&str> = vec![];
        for group in groups(ns, &suffix) {
            let mut denied = vec![];
            for (name, probe) in &group.probes {
                let reply: Result<redis::Value, redis::RedisError> = match probe {
                    Probe::Cmd(cmd) => cmd.query_async(&mut c).await,
                    Probe::Transaction(p) => p.query_async(&mut c).await,
                };
                if let Err(e) = reply
                    && e.code() == Some("NOPERM")
                {
                    let what = refusal(&e.to_string());
                    denied.push(format!("{name} ({what})"));
                    match what {
                        "key" => patterns.push("~NS:* ~NS#*"),
                        "channel" => patterns.push("&NS#*"),
                        _ => grants.push(name),
                    }
                }
            }
            if denied.is_empty() {
                continue;
            }
            if group.loses.is_empty() {
                missing_core.extend(denied);
            } else {
                lost.push(format!("{} — without {}", group.loses, denied.join(", ")));
            }
        }
        cleanup(&mut c, ns, &suffix).await;
        if !missing_core.is_empty() {
            verdict = Verdict::Fail;
            findings.push(format!("{ns}: refused {}", missing_core.join(", ")));
        }
        if !lost.is_empty() {
            verdict = verdict.max(Verdict::Warn);
            findings.push(format!("{ns}: no {}", lost.join("; ")));
        }
        if missing_core.is_empty() && lost.is_empty() {
            findings.push(format!("{ns}: every command Strata runs is allowed"));
        }
        patterns.dedup();
        if !grants.is_empty() || !patterns.is_empty() {
            let grants: Vec<String> = grants.iter().map(|g| format!("+{g}")).collect();
            let patterns: Vec<String> = patterns.iter().map(|p| p.replace("NS", ns)).collect();
            fixes.push(format!(
                "ACL SETUSER {user} {}",
                [patterns.join(" "), grants.join(" ")]
                    .iter()
                    .filter(|s| !s.is_empty())
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
    }
    let mut check = Check::new(
        "permissions",
        verdict,
        format!("user {user}: {}", findings.join("; ")),
    );
    if !fixes.is_empty() {
        check = check.fix(format!(
            "{} (the whole rule: strata_redis's docs, \"Permissions\")",
            fixes.join("; ")
        ));
    }
    check
}

/// Removes the probe keys (each has a one-minute TTL, should this be refused).
async fn cleanup(c: &mut RedisConnection, ns: &str, suffix: &str) {
    let keys: Vec<String> = ["n", "tag", "log", "h", "z"]
        .iter()
        .map(|k| format!("{ns}#strata-doctor-{suffix}:{k}"))
        .chain([format!("{ns}:strata-doctor-{suffix}")])
        .collect();
    for key in &keys {
        // One key per command: on a cluster each lives in its own slot.
        let _: Result<(), _> = redis::cmd("UNLINK").arg(key).query_async(c).await;
    }
}

/// A random probe suffix, so two doctors never share keys.
fn probe_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_what_was_refused() {
        assert_eq!(
            refusal("NOPERM: this user has no permissions to run the 'evalsha' command"),
            "command"
        );
        assert_eq!(
            refusal(
                "NOPERM: this user has no permissions to access one of the keys used as arguments"
            ),
            "key"
        );
        assert_eq!(
            refusal(
                "NOPERM: this user has no permissions to access one of the channels used as arguments"
            ),
            "channel"
        );
    }
}
