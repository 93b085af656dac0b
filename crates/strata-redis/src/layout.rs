//! Where Strata's keys live in Redis.
//!
//! On one server: [`strata::keys`]. On a Redis Cluster, a script may only touch keys of one
//! slot, so:
//! - data keys stay `<namespace>:<key>` (other stacks read them as on one server), and tag
//!   indexes `<namespace>#tag:<tag>` (each in its own slot; changed one command at a time);
//! - the key a script changes together with a data key — its refresh lease — carries a
//!   hash tag that puts it in the data key's slot:
//!   `<namespace>#lease:{<namespace>:<key>}`, or, when the key has braces of its own (which
//!   would change what Redis hashes), `<namespace>#lease:{<t>}<key>` with a short `t` that
//!   hashes to the data key's slot (the load lease lives in the data key itself);
//! - the namespace-wide keys that change together — the invalidation log and its sequence,
//!   the lease-release stream, the write-behind queue and its dead letters — share the slot
//!   of `{<namespace>}`: `<namespace>#log{<namespace>}`, ….
//!
//! Every name still starts with `<namespace>:` or `<namespace>#`, so ACL key patterns
//! (`~NS:* ~NS#*`) and namespace scans are the same on both.

use std::collections::HashMap;
use std::sync::LazyLock;

use redis::cluster_routing::Slot;
use strata::keys;

/// Which layout: one server's, or a cluster's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    Single,
    Cluster,
}

impl Layout {
    pub(crate) fn cluster(cluster: bool) -> Layout {
        if cluster {
            Layout::Cluster
        } else {
            Layout::Single
        }
    }

    pub(crate) fn data(self, namespace: &str, key: &str) -> String {
        keys::data_key(namespace, key)
    }

    pub(crate) fn tag(self, namespace: &str, tag: &str) -> String {
        keys::tag_key(namespace, tag)
    }

    pub(crate) fn lease(self, namespace: &str, key: &str) -> String {
        match self {
            Layout::Single => keys::lease_key(namespace, key),
            Layout::Cluster => beside(namespace, "lease", key),
        }
    }

    pub(crate) fn filled(self, namespace: &str) -> String {
        self.namespace_wide(keys::filled_key(namespace), namespace)
    }

    pub(crate) fn acks(self, namespace: &str) -> String {
        self.namespace_wide(keys::acks_key(namespace), namespace)
    }

    pub(crate) fn log(self, namespace: &str) -> String {
        self.namespace_wide(keys::log_key(namespace), namespace)
    }

    pub(crate) fn log_sequence(self, namespace: &str) -> String {
        self.namespace_wide(keys::log_sequence_key(namespace), namespace)
    }

    /// Part `shard` of a namespace's log split into `shards`: its stream and its sequence.
    /// Part 0 is the unsplit log. On a cluster, part `i` lives `i / shards` of the way round
    /// the slots from the namespace's own, so the parts land on different masters (a cluster
    /// made by `redis-cli --cluster create` gives each master one run of slots).
    pub(crate) fn log_shard(
        self,
        namespace: &str,
        shard: usize,
        shards: usize,
    ) -> (String, String) {
        if shard == 0 {
            return (self.log(namespace), self.log_sequence(namespace));
        }
        let (log, seq) = (
            format!("{namespace}#log.{shard}"),
            format!("{namespace}#log.{shard}:seq"),
        );
        match self {
            Layout::Single => (log, seq),
            Layout::Cluster => {
                let home = usize::from(slot_of(format!("{{{namespace}}}").as_bytes()));
                let slot = (home + shard * SLOTS / shards.max(1)) % SLOTS;
                let tag = u16::try_from(slot)
                    .ok()
                    .and_then(Slot::new)
                    .map_or("0", tag_for);
                (format!("{log}{{{tag}}}"), format!("{seq}{{{tag}}}"))
            }
        }
    }

    /// How many parts a namespace's log is split into (agreed by every instance).
    pub(crate) fn log_shards(self, namespace: &str) -> String {
        self.namespace_wide(format!("{namespace}#log:shards"), namespace)
    }

    /// The protocol version the namespace is written with (set by its first instance).
    pub(crate) fn protocol(self, namespace: &str) -> String {
        self.namespace_wide(format!("{namespace}#protocol"), namespace)
    }

    pub(crate) fn write_queue(self, namespace: &str) -> String {
        self.namespace_wide(keys::write_queue_key(namespace), namespace)
    }

    pub(crate) fn dead_letters(self, namespace: &str) -> String {
        self.namespace_wide(keys::dead_letter_key(namespace), namespace)
    }

    fn namespace_wide(self, name: String, namespace: &str) -> String {
        match self {
            Layout::Single => name,
            // Namespaces are `[A-Za-z0-9_.-]`: no braces, so this is the hash tag.
            Layout::Cluster => format!("{name}{{{namespace}}}"),
        }
    }
}

/// A key of `namespace` in the slot of `channel` (`<namespace>#probe{<t>}`), which a sharded
/// subscriber asks about to learn whether its node still serves the channel's slot: a node
/// that does not answers `MOVED`. In the namespace, so the namespace's ACL allows it.
pub(crate) fn channel_probe(namespace: &str, channel: &str) -> String {
    format!("{namespace}#probe{{{}}}", tag_for(Slot::for_key(channel)))
}

/// `<namespace>#<kind>:{…}` in the slot of `<namespace>:<key>`.
fn beside(namespace: &str, kind: &str, key: &str) -> String {
    if key.contains(['{', '}']) {
        let tag = tag_for(Slot::for_key(keys::data_key(namespace, key)));
        format!("{namespace}#{kind}:{{{tag}}}{key}")
    } else {
        format!("{namespace}#{kind}:{{{namespace}:{key}}}")
    }
}

/// Hash slots in a Redis Cluster.
const SLOTS: usize = 16_384;

/// The number of the slot `key` hashes to, as Redis computes it (the `redis` crate's `Slot`
/// keeps the number to itself): CRC16 of the hash tag — what lies between the first `{` and
/// the next `}`, if not empty — or of the whole key.
pub(crate) fn slot_of(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|b| *b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|b| *b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(key)) % SLOTS as u16
}

/// A short tag that hashes to `slot`: the first of `0`, `1`, …, `z`, `00`, … to do so.
/// Built once (16,384 slots, about 150,000 candidates: a few milliseconds).
fn tag_for(slot: Slot) -> &'static str {
    static TAGS: LazyLock<HashMap<Slot, String>> = LazyLock::new(|| {
        let mut tags = HashMap::with_capacity(16_384);
        let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut n: u64 = 0;
        while tags.len() < 16_384 {
            let mut tag = Vec::new();
            let mut m = n;
            loop {
                tag.push(digits[(m % 36) as usize]);
                m /= 36;
                if m == 0 {
                    break;
                }
            }
            let tag = String::from_utf8_lossy(&tag).into_owned();
            tags.entry(Slot::for_key(&tag)).or_insert(tag);
            n += 1;
        }
        tags
    });
    TAGS.get(&slot).map_or("0", String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_script_touches_shares_the_data_keys_slot() {
        let l = Layout::Cluster;
        for key in ["42", "a:b", "x{y}z", "}{", "{}", "odd}key", "ünï{cödé}"] {
            let slot = Slot::for_key(l.data("product", key));
            let lease = l.lease("product", key);
            assert_eq!(Slot::for_key(&lease), slot, "{lease} for key {key:?}");
            assert!(lease.starts_with("product#"), "{lease}");
        }
        let slot = Slot::for_key(l.log("product"));
        for other in [
            l.log_sequence("product"),
            l.filled("product"),
            l.acks("product"),
            l.write_queue("product"),
            l.dead_letters("product"),
        ] {
            assert_eq!(Slot::for_key(&other), slot, "{other}");
        }
        assert_eq!(l.lease("product", "42"), "product#lease:{product:42}");
        assert_eq!(l.log("product"), "product#log{product}");
        // Distinct keys get distinct companions, braces or not.
        assert_ne!(l.lease("p", "x{y}"), l.lease("p", "x{y}z"));
        // One server: the documented layout, unchanged.
        assert_eq!(Layout::Single.lease("product", "42"), "product#lease:42");
        assert_eq!(Layout::Single.log("product"), "product#log");
    }

    #[test]
    fn a_split_logs_parts_spread_round_the_slots() {
        let l = Layout::Cluster;
        assert_eq!(
            l.log_shard("product", 0, 3),
            (l.log("product"), l.log_sequence("product"))
        );
        let home = Slot::for_key("{product}");
        let mut slots = vec![home];
        for shard in 1..3 {
            let (log, seq) = l.log_shard("product", shard, 3);
            assert!(log.starts_with(&format!("product#log.{shard}{{")), "{log}");
            assert_eq!(Slot::for_key(&log), Slot::for_key(&seq));
            slots.push(Slot::for_key(&log));
        }
        // A third of the way round each: on three masters of even runs, one part each.
        let expected: Vec<Slot> = (0..3)
            .map(|i| {
                let home = usize::from(slot_of(b"{product}"));
                Slot::new(((home + i * SLOTS / 3) % SLOTS) as u16).unwrap()
            })
            .collect();
        assert_eq!(slots, expected);
        assert_eq!(Slot::for_key(l.log_shards("product")), home);
        let probe = channel_probe("product", "strata:invalidate:product");
        assert!(probe.starts_with("product#probe{"), "{probe}");
        assert_eq!(
            Slot::for_key(&probe),
            Slot::for_key("strata:invalidate:product")
        );
        assert_eq!(
            Layout::Single.log_shard("product", 2, 4),
            ("product#log.2".into(), "product#log.2:seq".into())
        );
    }

    #[test]
    fn the_documented_layout_is_what_is_used() {
        let ns = "catalog";
        let mut rows = 0;
        let table = strata_testkit::protocol::example("keys");
        for line in table.iter().filter(|l| !l.contains("---")) {
            let cells: Vec<&str> = line
                .split('|')
                .map(|c| c.trim().trim_matches('`'))
                .collect();
            let [_, what, arg, single, cluster, _] = cells[..] else {
                panic!("a row of four cells: {line}");
            };
            if what == "what" {
                continue;
            }
            let name = |l: Layout| match what {
                "data" => l.data(ns, arg),
                "tag" => l.tag(ns, arg),
                "lease" => l.lease(ns, arg),
                "log" => l.log(ns),
                "log sequence" => l.log_sequence(ns),
                "log part 1 of 3" => l.log_shard(ns, 1, 3).0,
                "log part 1 of 3, sequence" => l.log_shard(ns, 1, 3).1,
                "log parts" => l.log_shards(ns),
                "protocol version" => l.protocol(ns),
                "filled" => l.filled(ns),
                "acks" => l.acks(ns),
                "write-behind queue" => l.write_queue(ns),
                "dead letters" => l.dead_letters(ns),
                other => panic!("no such row: {other}"),
            };
            assert_eq!(name(Layout::Single), single, "{what} {arg}, one server");
            assert_eq!(name(Layout::Cluster), cluster, "{what} {arg}, cluster");
            rows += 1;
        }
        assert_eq!(rows, 14);
    }

    #[test]
    fn slots_are_numbered_as_redis_does() {
        for key in [
            "",
            "a",
            "{",
            "{}",
            "{}x",
            "a{b}c",
            "a{b",
            "x}{y}",
            "{{a}}",
            "product:42",
        ] {
            assert_eq!(
                Slot::new(slot_of(key.as_bytes())),
                Some(Slot::for_key(key)),
                "{key:?}"
            );
        }
        assert_eq!(slot_of(b"foo"), 12_182, "CLUSTER KEYSLOT foo");
    }

    #[test]
    fn every_slot_has_a_tag() {
        for slot in [0u16, 1, 8000, 16_383] {
            let slot = Slot::new(slot).unwrap();
            assert_eq!(Slot::for_key(tag_for(slot)), slot);
        }
    }
}
