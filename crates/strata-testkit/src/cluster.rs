//! [`RedisCluster`]: a real Redis Cluster on loopback — three masters, three replicas —
//! made of [`RedisServer`]s and joined with `redis-cli --cluster create`.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::{RedisOptions, RedisServer};

/// How long a cluster may take to agree on its state.
const CONVERGE: Duration = Duration::from_secs(30);

/// A running cluster of six nodes (3 masters, 1 replica each), killed when dropped.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

/// One node as `CLUSTER NODES` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// Its id.
    pub id: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Whether it is a master now.
    pub master: bool,
    /// For a replica, its master's id.
    pub master_id: Option<String>,
    /// How many slots it serves (masters).
    pub slots: usize,
    /// The runs of slots it serves, first and last (masters).
    pub ranges: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Starts six nodes and joins them: three masters sharing the 16,384 slots, one replica
    /// each. Panics (failing the test) if it cannot.
    pub fn start() -> RedisCluster {
        Self::start_with(&[])
    }

    /// [`start`](Self::start), each node with these ACL users besides the default one (as
    /// in `ACL SETUSER`: `"app on >secret ~ns:* +get"`).
    pub fn start_with(acl_users: &[&str]) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| {
                acl_users
                    .iter()
                    .fold(RedisOptions::default().cluster_node(), |o, rule| {
                        o.acl_user(*rule)
                    })
                    .start()
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli must be on PATH");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_converged(3);
        cluster
    }

    /// A cluster of one node serving every slot, no replica — a local development setup, or
    /// a managed "cluster mode" of one shard. Such a node never learns its own address (no
    /// other node ever met it): `CLUSTER NODES` lists it as `:<port>`.
    pub fn start_alone() -> RedisCluster {
        let node = RedisOptions::default().cluster_node().start();
        assert_eq!(node.cli(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]), "OK");
        let cluster = RedisCluster { nodes: vec![node] };
        cluster.wait_converged(0);
        cluster
    }

    /// `redis+cluster://127.0.0.1:<port>,…` with every node as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// The `i`th node started.
    pub fn node(&self, i: usize) -> &RedisServer {
        &self.nodes[i]
    }

    /// The `i`th node started, to kill or freeze.
    pub fn node_mut(&mut self, i: usize) -> &mut RedisServer {
        &mut self.nodes[i]
    }

    /// The topology as a live node sees it.
    pub fn topology(&self) -> Vec<ClusterNode> {
        let text = self
            .nodes
            .iter()
            .map(|n| n.cli(&["CLUSTER", "NODES"]))
            .find(|t| !t.is_empty())
            .expect("no live node");
        text.lines().filter_map(parse_node).collect()
    }

    /// The index (in start order) of the node on `port`.
    pub fn index_of(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|n| n.port() == port)
            .expect("a node of this cluster")
    }

    /// The masters, by start index.
    pub fn masters(&self) -> Vec<usize> {
        self.topology()
            .iter()
            .filter(|n| n.master && n.slots > 0)
            .map(|n| self.index_of(n.port))
            .collect()
    }

    /// Kills master `i` and waits until its replica has taken its slots over.
    pub fn fail_over(&mut self, i: usize) {
        let port = self.nodes[i].port();
        let id = self
            .topology()
            .into_iter()
            .find(|n| n.port == port)
            .expect("the node")
            .id;
        self.nodes[i].kill();
        until(
            || format!("a replica to take over from {port}"),
            || {
                // Every slot served by a live master: the replica took the dead one's over.
                let slots: usize = self
                    .topology()
                    .iter()
                    .filter(|n| n.master && n.id != id)
                    .map(|n| n.slots)
                    .sum();
                slots == 16_384 && self.state_ok()
            },
        );
    }

    /// Starts node `i` again after [`fail_over`](Self::fail_over) killed it — with its
    /// `nodes.conf`, empty otherwise — and waits until it has rejoined as a replica of the
    /// master that took its slots over and has synced from it.
    pub fn rejoin(&mut self, i: usize) {
        self.nodes[i].restart();
        let port = self.nodes[i].port();
        until(
            || format!("node {port} to rejoin as a replica"),
            || {
                let replica = self
                    .topology()
                    .into_iter()
                    .any(|n| n.port == port && !n.master && n.master_id.is_some());
                replica && self.synced() && self.state_ok()
            },
        );
    }

    /// Moves `slots` slots from master `from` to master `to` with
    /// `redis-cli --cluster reshard` (keys migrate with `MIGRATE`, clients meanwhile get
    /// `ASK`/`MOVED`). Blocks until done.
    pub fn reshard(&self, from: usize, to: usize, slots: usize) {
        let topology = self.topology();
        let replicas = topology.iter().filter(|n| !n.master).count();
        let id_of = |i: usize| {
            let port = self.nodes[i].port();
            topology
                .iter()
                .find(|n| n.port == port)
                .expect("the node")
                .id
                .clone()
        };
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("reshard")
            .arg(format!("127.0.0.1:{}", self.nodes[from].port()))
            .args(["--cluster-from", &id_of(from), "--cluster-to", &id_of(to)])
            .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
            .args(["--cluster-pipeline", "100"])
            .output()
            .expect("redis-cli must be on PATH");
        assert!(
            out.status.success(),
            "redis-cli --cluster reshard: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.wait_converged(replicas);
    }

    /// Moves one slot, with its keys, to master `to` — the steps `redis-cli --cluster reshard`
    /// takes for each slot: `IMPORTING` on the target, `MIGRATING` on the owner, `MIGRATE` of
    /// its keys (clients meanwhile get `ASK`), then every master told the new owner (`MOVED`
    /// from then on). Blocks until the cluster agrees.
    pub fn move_slot(&self, slot: u16, to: usize) {
        let topology = self.topology();
        let replicas = topology.iter().filter(|n| !n.master).count();
        let owner = topology
            .iter()
            .find(|n| n.master && n.ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&slot)))
            .expect("a master serves every slot");
        let target = topology
            .iter()
            .find(|n| n.port == self.nodes[to].port())
            .expect("the node");
        let (source, slot) = (&self.nodes[self.index_of(owner.port)], slot.to_string());
        let setslot = |node: &RedisServer, how: &[&str]| {
            let reply = node.cli(&[&["CLUSTER", "SETSLOT", &slot], how].concat());
            assert_eq!(reply, "OK", "CLUSTER SETSLOT {slot} {how:?}");
        };
        setslot(&self.nodes[to], &["IMPORTING", &owner.id]);
        setslot(source, &["MIGRATING", &target.id]);
        let port = self.nodes[to].port().to_string();
        loop {
            let keys = source.cli(&["CLUSTER", "GETKEYSINSLOT", &slot, "100"]);
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let migrate = [
                &["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"],
                &keys[..],
            ];
            assert_eq!(source.cli(&migrate.concat()), "OK");
        }
        for master in topology.iter().filter(|n| n.master) {
            setslot(
                &self.nodes[self.index_of(master.port)],
                &["NODE", &target.id],
            );
        }
        self.wait_converged(replicas);
    }

    fn state_ok(&self) -> bool {
        self.nodes
            .iter()
            .map(|n| n.cli(&["CLUSTER", "INFO"]))
            .filter(|info| !info.is_empty())
            .all(|info| info.contains("cluster_state:ok"))
    }

    /// Whether every live replica has its master's data (`master_link_status:up`): a
    /// replica listed in `CLUSTER NODES` may not have had its first sync yet, and promoted
    /// then it would take over its slots empty.
    fn synced(&self) -> bool {
        self.nodes
            .iter()
            .map(|n| n.cli(&["INFO", "replication"]))
            .filter(|info| info.contains("role:slave"))
            .all(|info| info.contains("master_link_status:up"))
    }

    /// Until every live node says the cluster is ok, all slots are served, and `replicas`
    /// replicas are attached and synced.
    fn wait_converged(&self, replicas: usize) {
        let what = || format!("the cluster to converge: {:?}", self.topology());
        until(what, || {
            let topology = self.topology();
            let served: usize = topology.iter().filter(|n| n.master).map(|n| n.slots).sum();
            let attached = topology.iter().filter(|n| !n.master).count();
            self.state_ok() && served == 16_384 && attached >= replicas && self.synced()
        });
    }
}

/// Polls `done` every 100 ms; panics (failing the test) after [`CONVERGE`], saying `what`
/// it waited for.
fn until(what: impl Fn() -> String, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + CONVERGE;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {CONVERGE:?} waiting for {}",
            what()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A line of `CLUSTER NODES`:
/// `<id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slot>…`.
fn parse_node(line: &str) -> Option<ClusterNode> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 8 || f[2].contains("fail") || f[2].contains("noaddr") {
        return None;
    }
    let port = f[1].split('@').next()?.rsplit(':').next()?.parse().ok()?;
    let ranges: Vec<(u16, u16)> = f[8..]
        .iter()
        .filter(|s| !s.starts_with('['))
        .filter_map(|s| {
            let (lo, hi) = s.split_once('-').unwrap_or((s, s));
            Some((lo.parse().ok()?, hi.parse().ok()?))
        })
        .collect();
    Some(ClusterNode {
        id: f[0].to_owned(),
        port,
        master: f[2].contains("master"),
        master_id: (f[3] != "-").then(|| f[3].to_owned()),
        slots: ranges.iter().map(|(lo, hi)| usize::from(hi - lo) + 1).sum(),
        ranges,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cluster_nodes_lines() {
        let m = parse_node("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460 7000 [7001->-abc]").unwrap();
        assert_eq!((m.port, m.master, m.slots), (30001, true, 5462));
        assert_eq!(m.ranges, [(0, 5460), (7000, 7000)]);
        let r = parse_node("67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30004@40004 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected").unwrap();
        assert_eq!(
            r.master_id.as_deref(),
            Some("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca")
        );
        assert!(!r.master);
        assert!(parse_node("abc 127.0.0.1:1@2 master,fail - 0 0 1 disconnected").is_none());
    }
}
