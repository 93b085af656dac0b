//! `Connection`: the connection every command of a store or publisher goes through — on one
//! server our own auto-reconnecting connection ([`crate::wire`]; over TLS or a Unix socket
//! the `redis` crate's `ConnectionManager`), on a cluster the `redis` crate's cluster
//! connection — replaced by a new one in the cases it cannot get out of by itself.
//!
//! 1. **A failed re-authentication.** The manager reconnects only after I/O errors; if a
//!    reconnect's `AUTH` fails (an ACL user disabled for a while, a password rotated), every
//!    later request fails with that error and no reconnect is tried again, for good. (Our
//!    own connection tries again on the next command; the rebuild costs it nothing.)
//! 2. **A Sentinel failover.** The manager reconnects to the address it was built with; after a
//!    failover that is a dead server or a demoted replica (`READONLY`). The master's new
//!    address must be asked of the sentinels.
//! 3. **A cluster failover.** The cluster connection keeps reconnecting to a dead master's
//!    address; a new one reads the slot map from a live seed.
//!
//! Each way a new connection is built for the master (or the cluster) as it is now, at most
//! one rebuild at a time and one per [`REBUILD_GAP`]. The cluster connection otherwise
//! follows `MOVED`/`ASK` and refreshes its slot map on a redirect by itself.
//! [`RedisConnection`] is either, behind the `ConnectionLike` interface every command is sent
//! through.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

#[cfg(not(feature = "cluster"))]
pub(crate) use crate::no_cluster::ClusterConnection;
use redis::aio::{ConnectionLike, ConnectionManager};
#[cfg(feature = "cluster")]
pub(crate) use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::{
    Cmd, ErrorKind, FromRedisValue, Pipeline, RedisError, RedisFuture, RedisResult,
    ServerErrorKind, Value,
};
use strata::{Error, ReplicaWait};

use crate::autopipeline::AutoPipeline;
use crate::client_tracking::{Tracking, TrackingSpec};
use crate::config::RedisConfig;
use crate::error::{classify, into_log_error};
use crate::layout::{Layout, slot_of};
use crate::wire::Wire;

/// `INFO server`'s text, empty if it cannot be read (the oldest behaviour is then assumed).
async fn server_info(conn: &mut impl ConnectionLike) -> String {
    let info: Result<String, _> = redis::cmd("INFO").arg("server").query_async(conn).await;
    info.unwrap_or_default()
}

/// What a server offers that Strata chooses its commands by, from `INFO server`'s text: what
/// its connections use, and what `strata doctor` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerFeatures {
    /// `redis_version`, major and minor (`(0, 0)` when unreadable; Valkey reports 7.2).
    pub redis_version: (u32, u32),
    /// `valkey_version`, on Valkey.
    pub valkey_version: Option<(u32, u32)>,
    /// `SET … NX GET` and `SET … XX GET` (Redis 7.0 on, with sharded pub/sub).
    pub nx_get: bool,
    /// `SET … IFEQ` (Valkey 8.1, Redis 8.4 on): a compare-and-set without a script.
    pub ifeq: bool,
}

impl ServerFeatures {
    /// Reads `INFO server`'s text; an empty or unreadable one gives the oldest behaviour.
    pub fn of(info: &str) -> Self {
        let version = |field: &str| -> Option<(u32, u32)> {
            let v = info.lines().find_map(|l| l.strip_prefix(field))?.trim();
            let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
            Some((parts.next()??, parts.next().flatten().unwrap_or(0)))
        };
        let redis = version("redis_version:").unwrap_or((0, 0));
        let ifeq = match version("valkey_version:") {
            Some(valkey) => valkey >= (8, 1),
            None => redis >= (8, 4),
        };
        ServerFeatures {
            redis_version: redis,
            valkey_version: version("valkey_version:"),
            nx_get: redis >= (7, 0),
            ifeq,
        }
    }
}

/// The shortest time between two rebuilds.
const REBUILD_GAP: Duration = Duration::from_millis(200);

/// How long the map of which slots have a replica is trusted before it is read again.
const TOPOLOGY_FOR: Duration = Duration::from_secs(5);

/// A self-healing connection to the Redis master. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Connection {
    shared: Arc<Shared>,
}

struct Shared {
    config: RedisConfig,
    /// The server as a log on it names it (see [`RedisConfig::identity`]).
    identity: Option<String>,
    /// What the server's `SET` takes: `NX GET` (a miss's lease in the plain read), `IFEQ`
    /// (a miss's fill without a script).
    set: ServerFeatures,
    kind: Kind,
    rebuilding: AtomicBool,
    /// On a cluster, the slots whose master has a connected replica (by slot, the master's
    /// ordinal in `CLUSTER NODES`), and when that was read.
    replicated: Mutex<Option<(Instant, Arc<ReplicatedSlots>)>>,
    /// Server-assisted invalidation, kept by every connection that replaces the first.
    tracking: Arc<Tracking>,
    /// On a cluster, this connection's name in the process (see [`Connection::cluster_name`]).
    cluster_name: Option<String>,
}

/// Numbers the cluster connections of the process, to name them.
static CLUSTER_CONNECTIONS: AtomicU64 = AtomicU64::new(0);

enum Kind {
    /// One server (or Sentinel's master), its commands gathered into writes
    /// ([`Link::Wire`], or [`Link::Batched`] over TLS or a Unix socket): replaced when it
    /// cannot recover by itself.
    Single(RwLock<Link>),
    /// A cluster: follows `MOVED`/`ASK` by itself; replaced after connection failures (see
    /// [`Connection::needs_rebuild`]).
    Cluster(RwLock<ClusterConnection>),
}

/// A connection to Redis for commands of your own, as [`RedisConfig::connect`] and
/// [`RedisConfig::dedicated`] give it: to one server or to a cluster alike. Send commands
/// with the `redis` crate (`redis::cmd(…).query_async(&mut conn)`); cheap to clone.
#[derive(Clone)]
pub struct RedisConnection(pub(crate) Link);

/// What a [`RedisConnection`] is: to one server (shared, or of its own for blocking reads),
/// or to a cluster.
#[derive(Clone)]
pub(crate) enum Link {
    Single(ConnectionManager),
    /// The engine's own connection to one server over TCP (see [`crate::wire`]).
    Wire(Arc<Wire>),
    /// The engine's connection to one server over TLS or a Unix socket: single commands
    /// gathered into pipelines.
    Batched(Arc<AutoPipeline>),
    Own(redis::aio::MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl RedisConnection {
    /// The reply to the command `args` (its name first) as `T`, as `query_async` would give
    /// it. On the engine's own connection the arguments are written straight into its buffer
    /// (see [`resp::encode`](crate::resp::encode)) and the request's future is not boxed, as
    /// the `redis` crate's `ConnectionLike` boxes it; other connections get a `redis::Cmd`.
    pub(crate) async fn call<T: FromRedisValue>(
        &mut self,
        args: &[crate::resp::Arg<'_>],
    ) -> RedisResult<T> {
        let reply = match &self.0 {
            Link::Wire(wire) => wire.send_args(args).await?,
            _ => self.req_packed_command(&crate::resp::cmd(args)).await?,
        };
        Ok(redis::from_redis_value(reply.extract_error()?)?)
    }
}

// Connecting lives beside the connection: the settings (`config.rs`) know nothing of it.
impl RedisConfig {
    /// A multiplexed connection with these settings (TLS, credentials, timeouts), for
    /// commands of your own, whatever the deployment: to one server (reconnecting by itself;
    /// with Sentinel, to the master of the moment, where it stays — Strata's own stores
    /// follow a failover), or to a cluster (following `MOVED`/`ASK`, each command to the
    /// node of its keys).
    pub async fn connect(&self) -> Result<RedisConnection, Error> {
        Ok(RedisConnection(if self.is_cluster() {
            Link::Cluster(self.open_cluster(self.command_timeout).await?)
        } else {
            Link::Single(self.connect_manager().await?)
        }))
    }

    /// A connection of its own for blocking reads (`XREAD … BLOCK`), which would hold up
    /// every other command on a shared one: its replies may take `block` plus the command
    /// timeout. To the server (with Sentinel, the master of the moment), or to a cluster.
    pub async fn dedicated(&self, block: Duration) -> Result<RedisConnection, Error> {
        if self.is_cluster() {
            return Ok(RedisConnection(Link::Cluster(
                self.open_cluster(block + self.command_timeout).await?,
            )));
        }
        let client = self.resolve().await?;
        // Over TCP our own connection: a follower's `XREAD` replies cost a fraction to read.
        if let Some(wire) = Wire::new(
            &client,
            self.connect_timeout,
            block + self.command_timeout,
            None,
        ) {
            wire.connect().await.map_err(classify)?;
            return Ok(RedisConnection(Link::Wire(wire)));
        }
        Ok(RedisConnection(Link::Own(
            self.own_connection(&client, block).await?,
        )))
    }

    /// The engine's connection to the server (with Sentinel, the master of the moment): our
    /// own over TCP, the `redis` crate's connection manager, gathered, over TLS or a Unix
    /// socket. `now`: connected (and authenticated) before this returns, else on first use.
    /// `tracking`: what every socket of ours turns on (see [`crate::tracking`]).
    async fn engine_link(&self, now: bool, tracking: &Arc<Tracking>) -> Result<Link, Error> {
        let client = self.resolve().await?;
        if let Some(wire) = Wire::new(
            &client,
            self.connect_timeout,
            self.command_timeout,
            Some(tracking.clone()),
        ) {
            if now {
                wire.connect().await.map_err(classify)?;
            }
            return Ok(Link::Wire(wire));
        }
        let manager = if now {
            ConnectionManager::new_with_config(client, self.manager_config()).await
        } else {
            ConnectionManager::new_lazy_with_config(client, self.manager_config())
        };
        Ok(Link::Batched(AutoPipeline::new(manager.map_err(classify)?)))
    }

    /// A connection to the cluster (every node it needs, multiplexed; `MOVED`/`ASK`
    /// followed), with these settings; `response` bounds a reply (a blocking read's block
    /// included). [`Error::Config`] if this is not a cluster.
    #[cfg(feature = "cluster")]
    pub async fn connect_cluster(
        &self,
        response: Duration,
    ) -> Result<redis::cluster_async::ClusterConnection, Error> {
        let seeds = self
            .cluster
            .as_ref()
            .ok_or_else(|| Error::Config(format!("{self} is not a redis+cluster:// URL")))?;
        let mut builder = redis::cluster::ClusterClientBuilder::new(seeds.clone())
            .connection_timeout(self.connect_timeout)
            .response_timeout(response);
        if self.is_tls() {
            builder = self.cluster_tls(builder)?;
        } else if self.ca_pem.is_some() || self.client_pem.is_some() {
            return Err(Error::Config(
                "TLS certificates given for a non-TLS URL (use rediss+cluster://)".into(),
            ));
        }
        builder
            .build()
            .map_err(|e| Error::Config(format!("Redis Cluster settings: {e}")))?
            .get_async_connection()
            .await
            .map_err(classify)
    }

    /// The cluster connection, for the engine (see [`connect_cluster`](Self::connect_cluster)).
    #[cfg(feature = "cluster")]
    pub(crate) async fn open_cluster(
        &self,
        response: Duration,
    ) -> Result<ClusterConnection, Error> {
        self.connect_cluster(response).await
    }

    /// Without the `cluster` feature no cluster URL parses, so this is never reached.
    #[cfg(not(feature = "cluster"))]
    pub(crate) async fn open_cluster(
        &self,
        _response: Duration,
    ) -> Result<ClusterConnection, Error> {
        Err(Error::Config(format!(
            "{self}: built without the `cluster` feature"
        )))
    }
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.0 {
            Link::Single(_) | Link::Wire(_) | Link::Batched(_) => "server",
            Link::Own(_) => "server, own",
            Link::Cluster(_) => "cluster",
        };
        f.debug_tuple("RedisConnection").field(&kind).finish()
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Link::Single(c) => c.req_packed_command(cmd),
            Link::Wire(c) => Box::pin(c.send(cmd)),
            Link::Batched(c) => Box::pin(c.send(cmd)),
            Link::Own(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Link::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Wire(c) => Box::pin(c.send_pipeline(pipeline, offset, count)),
            Link::Batched(c) => {
                let mut manager = c.manager().clone();
                Box::pin(async move { manager.req_packed_commands(pipeline, offset, count).await })
            }
            Link::Own(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Link::Single(c) => c.get_db(),
            Link::Wire(c) => c.db(),
            Link::Batched(c) => c.manager().get_db(),
            Link::Own(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
        }
    }
}

impl Connection {
    /// Connects now; fails if the server cannot be reached or refuses the credentials.
    pub(crate) async fn open(config: &RedisConfig) -> Result<Self, Error> {
        let tracking = Tracking::new();
        let kind = if config.is_cluster() {
            Kind::Cluster(RwLock::new(
                config.open_cluster(config.command_timeout).await?,
            ))
        } else {
            Kind::Single(RwLock::new(config.engine_link(true, &tracking).await?))
        };
        let info = match &kind {
            Kind::Single(link) => {
                let link = link
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                server_info(&mut RedisConnection(link)).await
            }
            Kind::Cluster(c) => {
                let mut cluster = c
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                cluster
                    .route_command(
                        redis::cmd("INFO").arg("server").clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                    )
                    .await
                    .ok()
                    .and_then(|v| redis::from_redis_value::<String>(v).ok())
                    .unwrap_or_default()
            }
        };
        if info.is_empty() {
            // An ACL user without `+info` cannot tell us: every read then goes through a
            // script, as on servers before 7.0. Worth a word, once per connection.
            tracing::warn!(
                "cannot read `INFO server` (does the ACL user lack `+info`?): assuming a \
                 server before Redis 7.0, every L2 read goes through a script"
            );
        }
        let set = ServerFeatures::of(&info);
        let cluster_name = matches!(kind, Kind::Cluster(_)).then(|| {
            let n = CLUSTER_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
            format!("cluster-connection#{n}")
        });
        Ok(Connection {
            shared: Arc::new(Shared {
                config: config.clone(),
                identity: config.identity(),
                set,
                kind,
                rebuilding: AtomicBool::new(false),
                replicated: Mutex::default(),
                tracking,
                cluster_name,
            }),
        })
    }

    /// The current connection, to send commands on.
    pub(crate) fn get(&self) -> RedisConnection {
        RedisConnection(match &self.shared.kind {
            // Held for a clone (an `Arc` increment); a writer holds it for an assignment.
            Kind::Single(link) => link
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
            Kind::Cluster(cluster) => Link::Cluster(
                cluster
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone(),
            ),
        })
    }

    /// Whether writes through this connection can be tracked with `NOLOOP`: one server (or
    /// Sentinel's master) over plain TCP, where the sockets are our own and each turns
    /// tracking on as it opens ([`Tracking`]); or a cluster, whose connection to each master
    /// is reached by address. `None` over TLS or a Unix socket to one server (the `redis`
    /// crate's connection manager reconnects without telling).
    pub(crate) fn tracking(&self) -> Option<Option<&Arc<Tracking>>> {
        match &self.shared.kind {
            Kind::Single(_) if matches!(self.get().0, Link::Wire(_)) => {
                Some(Some(&self.shared.tracking))
            }
            Kind::Single(_) => None,
            Kind::Cluster(_) => Some(None),
        }
    }

    /// Where tracking must be turned on: the server (`None`), or each master of a cluster.
    pub(crate) async fn tracked_nodes(&self) -> Result<Vec<Option<(String, u16)>>, Error> {
        self.scan_nodes().await
    }

    /// Turns tracking on as `spec` says: on one server, on the socket of the moment and every
    /// later one; on a cluster, on the connection to `node` (off first: the server refuses a
    /// prefix given twice).
    pub(crate) async fn track(
        &self,
        node: Option<&(String, u16)>,
        spec: TrackingSpec,
    ) -> Result<(), RedisError> {
        match (self.get().0, node) {
            (Link::Wire(wire), None) => wire.track(spec).await,
            (Link::Cluster(mut cluster), Some((host, port))) => {
                let routing = || {
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                        host: host.clone(),
                        port: *port,
                    })
                };
                let off = redis::cmd("CLIENT").arg("TRACKING").arg("OFF").clone();
                cluster
                    .route_command(off, routing())
                    .await?
                    .extract_error()?;
                cluster
                    .route_command(spec.command(), routing())
                    .await?
                    .extract_error()
                    .map(drop)
            }
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "this connection does not track",
            )
            .into()),
        }
    }

    /// Whether the engine's connection to `node` (the server: `None`) still tracks towards
    /// `redirect`: a socket that opened while the receiver was away was refused, and on a
    /// cluster the client may have replaced its connection to a master without telling.
    pub(crate) async fn still_tracks(
        &self,
        node: Option<&(String, u16)>,
        redirect: i64,
    ) -> Result<bool, RedisError> {
        let info = redis::cmd("CLIENT").arg("TRACKINGINFO").clone();
        let info = match (self.cluster(), node) {
            (Some(mut cluster), Some((host, port))) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                cluster.route_command(info, routing).await?
            }
            _ => info.query_async(&mut self.get()).await?,
        };
        // RESP2: flags, [flags…], redirect, id, prefixes, [prefixes…].
        let fields: Vec<Value> = redis::from_redis_value(info.extract_error()?)?;
        let mut on = false;
        let mut to = None;
        for pair in fields.chunks(2) {
            match (pair.first(), pair.get(1)) {
                (Some(Value::BulkString(name)), Some(value)) if name == b"flags" => {
                    let flags: Vec<String> = redis::from_redis_value(value.clone())?;
                    on = flags.iter().any(|f| f == "on");
                }
                (Some(Value::BulkString(name)), Some(Value::Int(id))) if name == b"redirect" => {
                    to = Some(*id);
                }
                _ => {}
            }
        }
        Ok(on && to == Some(redirect))
    }

    /// The server as a log on it names it; `None` on a cluster.
    pub(crate) fn identity(&self) -> Option<&str> {
        self.shared.identity.as_deref()
    }

    /// On a cluster, this connection's name, which a log writing on it gives its entries
    /// ([`LogAppend::server`](strata::LogAppend::server)): a store on the same connection
    /// then knows that the log's `WAIT` will follow its own writes on the same socket.
    pub(crate) fn cluster_name(&self) -> Option<&str> {
        self.shared.cluster_name.as_deref()
    }

    /// Whether the server takes `SET … NX GET` and `SET … XX GET` (Redis 7.0 on); older ones
    /// get a script that reads first.
    pub(crate) fn set_nx_get(&self) -> bool {
        self.shared.set.nx_get
    }

    /// Whether the server takes `SET … IFEQ` (Valkey 8.1, Redis 8.4 on): a miss's fill is then
    /// a plain command.
    pub(crate) fn set_ifeq(&self) -> bool {
        self.shared.set.ifeq
    }

    /// Where keys live: a server's layout or a cluster's.
    pub(crate) fn layout(&self) -> Layout {
        Layout::cluster(matches!(self.shared.kind, Kind::Cluster(_)))
    }

    /// The cluster connection of the moment; `None` on one server.
    fn cluster(&self) -> Option<ClusterConnection> {
        match &self.shared.kind {
            Kind::Cluster(cluster) => Some(
                cluster
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone(),
            ),
            Kind::Single(_) => None,
        }
    }

    /// On a cluster, waits until a replica of `key`'s master has what this connection wrote
    /// there (`WAIT 1`, at most [`RedisConfig::replica_wait`]): an acknowledged write then
    /// survives a failover, which promotes that replica. Replication is asynchronous
    /// otherwise, and a master killed right after answering would take the write with it (an
    /// invalidation lost: a stale value back in L2). Nothing on one server, where a restart
    /// loses all.
    ///
    /// Only where the master has a connected replica (`CLUSTER NODES`, read again every
    /// [`TOPOLOGY_FOR`] and after a `WAIT` no replica answered): `WAIT` on a master without
    /// one would hold its connection for the whole timeout, for nothing.
    pub(crate) async fn replicated(&self, key: &str) -> Result<(), Error> {
        self.replicated_all(std::slice::from_ref(&key)).await
    }

    /// [`replicated`](Self::replicated) as a wait to run beside the next step — or none: on
    /// one server, where a master has no replica, and where `then`, a key the next step writes
    /// on this connection and waits for in turn, lives on the same master (a `WAIT` covers
    /// every earlier write of its connection to its master, so that one covers this write).
    pub(crate) async fn replica_wait(
        &self,
        key: &str,
        then: Option<&str>,
    ) -> Result<Option<ReplicaWait>, Error> {
        if !matches!(self.shared.kind, Kind::Cluster(_)) {
            return Ok(None);
        }
        let replicated = self.replica_slots().await?;
        let master = |slot: Slot| replicated.get(&slot).copied();
        let slot = Slot::for_key(key);
        match master(slot) {
            None => return Ok(None),
            Some(m) if then.map(Slot::for_key).and_then(master) == Some(m) => return Ok(None),
            Some(_) => {}
        }
        // The master is known to have a replica: its `WAIT`, without looking again.
        let conn = self.clone();
        Ok(Some(ReplicaWait::new(async move { conn.wait(slot).await })))
    }

    /// [`replicated`](Self::replicated) for writes to many keys: one `WAIT` per master they
    /// live on (a `WAIT` covers every earlier write of this connection to its master), all
    /// at once.
    pub(crate) async fn replicated_all(&self, keys: &[impl AsRef<str>]) -> Result<(), Error> {
        if !matches!(self.shared.kind, Kind::Cluster(_)) {
            return Ok(());
        }
        let replicated = self.replica_slots().await?;
        let mut masters: HashMap<usize, Slot> = HashMap::new();
        for key in keys {
            let slot = Slot::for_key(key.as_ref());
            if let Some(master) = replicated.get(&slot) {
                masters.entry(*master).or_insert(slot);
            }
        }
        futures_util::future::try_join_all(masters.into_values().map(|slot| self.wait(slot)))
            .await?;
        Ok(())
    }

    /// `WAIT 1` on the master of `slot`.
    async fn wait(&self, slot: Slot) -> Result<(), Error> {
        let Some(mut cluster) = self.cluster() else {
            return Ok(());
        };
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
            Route::with_slot(slot, SlotAddr::Master),
        ));
        let wait = redis::cmd("WAIT")
            .arg(1)
            .arg(u64::try_from(self.shared.config.replica_wait.as_millis()).unwrap_or(u64::MAX))
            .clone();
        let acked = cluster
            .route_command(wait, routing)
            .await
            .map_err(|e| self.failed(e))?;
        if redis::from_redis_value::<u64>(acked).unwrap_or(0) == 0 {
            // The replica lags or is gone: look again at the topology before the next write.
            tracing::debug!(?slot, "no replica acknowledged a write in time");
            *self
                .shared
                .replicated
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        }
        Ok(())
    }

    /// The slots whose master has a connected replica, as of at most [`TOPOLOGY_FOR`] ago.
    async fn replica_slots(&self) -> Result<Arc<ReplicatedSlots>, Error> {
        if let Some((at, slots)) = &*self
            .shared
            .replicated
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            && at.elapsed() < TOPOLOGY_FOR
        {
            return Ok(slots.clone());
        }
        let slots = Arc::new(replica_slots(&self.cluster_nodes().await?));
        *self
            .shared
            .replicated
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((Instant::now(), slots.clone()));
        Ok(slots)
    }

    /// `CLUSTER NODES` as one node sees it.
    async fn cluster_nodes(&self) -> Result<String, Error> {
        let Some(mut cluster) = self.cluster() else {
            return Ok(String::new());
        };
        let value = cluster
            .route_command(
                redis::cmd("CLUSTER").arg("NODES").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await
            .map_err(|e| self.failed(e))?;
        let text = redis::from_redis_value(value).map_err(|e| self.failed(e.into()))?;
        Ok(with_own_host(text, self.shared.config.host().unwrap_or("")))
    }

    /// A scan of the keys matching `pattern`: on the server, or on every master of a cluster
    /// as `CLUSTER NODES` lists them now.
    pub(crate) async fn scan(&self, pattern: &str) -> Result<Scan<'_>, Error> {
        Ok(Scan {
            conn: self,
            pattern: pattern.to_owned(),
            nodes: self.scan_nodes().await?,
            cursor: 0,
        })
    }

    /// Where a keyspace scan must go: the server (`None`), or every master of a cluster.
    async fn scan_nodes(&self) -> Result<Vec<Option<(String, u16)>>, Error> {
        if !matches!(self.shared.kind, Kind::Cluster(_)) {
            return Ok(vec![None]);
        }
        Ok(nodes(&self.cluster_nodes().await?)
            .filter(|n| n.master && !n.failed)
            .filter_map(|n| Some(Some((n.host.to_owned(), n.port?))))
            .collect())
    }

    /// Where to subscribe to `channel`: the server (`None`); on a cluster, the master that
    /// serves the channel's slot (a sharded channel), or for a plain channel — which a
    /// cluster broadcasts to every node — the `attempt`-th live master, so that retries go
    /// round them.
    pub(crate) async fn subscription_node(
        &self,
        channel: &str,
        sharded: bool,
        attempt: usize,
    ) -> Result<Option<(String, u16)>, Error> {
        if !matches!(self.shared.kind, Kind::Cluster(_)) {
            return Ok(None);
        }
        let text = self.cluster_nodes().await?;
        let slot = slot_of(channel.as_bytes());
        let masters: Vec<Node<'_>> = nodes(&text)
            .filter(|n| n.master && !n.failed && n.port.is_some())
            .filter(|n| !sharded || n.ranges().any(|(lo, hi)| (lo..=hi).contains(&slot)))
            .collect();
        let node = masters.get(attempt % masters.len().max(1)).ok_or_else(|| {
            Error::unavailable(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                format!("no live master serves channel {channel}"),
            ))
        })?;
        Ok(node.port.map(|port| (node.host.to_owned(), port)))
    }

    /// One `SCAN` page of keys matching `pattern` on `node` (from
    /// [`scan_nodes`](Self::scan_nodes)): the next cursor (0 when done) and the keys.
    async fn scan_page(
        &self,
        node: Option<&(String, u16)>,
        cursor: u64,
        pattern: &str,
    ) -> Result<(u64, Vec<Vec<u8>>), Error> {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000);
        match (self.cluster(), node) {
            (Some(mut cluster), Some((host, port))) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                let value = cluster
                    .route_command(scan, routing)
                    .await
                    .map_err(|e| self.failed(e))?;
                redis::from_redis_value(value).map_err(|e| self.failed(e.into()))
            }
            _ => scan
                .query_async(&mut self.get())
                .await
                .map_err(|e| self.failed(e)),
        }
    }

    /// [`open`](Self::open) for a log publisher: failures are log errors.
    pub(crate) async fn open_log(config: &RedisConfig) -> Result<Self, Error> {
        Self::open(config).await.map_err(into_log_error)
    }

    /// Maps a failed command's error, first starting a rebuild if the manager cannot recover
    /// from it by itself.
    pub(crate) fn failed(&self, e: RedisError) -> Error {
        if self.needs_rebuild(&e) {
            self.rebuild();
        }
        classify(e)
    }

    /// [`failed`](Self::failed) for a log publisher: [`Error::Unavailable`] or [`Error::Log`].
    pub(crate) fn failed_log(&self, e: RedisError) -> Error {
        into_log_error(self.failed(e))
    }

    fn needs_rebuild(&self, e: &RedisError) -> bool {
        if matches!(self.shared.kind, Kind::Cluster(_)) {
            // The cluster connection follows `MOVED`, but after a master dies it reconnects
            // to the dead address and learns the new topology only from a redirect, which
            // requests to a dead node never get: a new connection reads the slot map afresh
            // from a live seed.
            return e.is_io_error()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_timeout()
                || matches!(
                    e.kind(),
                    ErrorKind::Server(
                        ServerErrorKind::ClusterDown
                            | ServerErrorKind::TryAgain
                            | ServerErrorKind::MasterDown
                    )
                );
        }
        if e.kind() == ErrorKind::AuthenticationFailed {
            return true;
        }
        self.shared.config.is_sentinel()
            && (e.is_io_error()
                || e.is_connection_dropped()
                || matches!(
                    e.kind(),
                    ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
                ))
    }

    fn rebuild(&self) {
        if self.shared.rebuilding.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let config = &shared.config;
            let rebuilt = match &shared.kind {
                Kind::Single(slot) => {
                    config
                        .engine_link(false, &shared.tracking)
                        .await
                        .map(|link| {
                            *slot
                                .write()
                                .unwrap_or_else(std::sync::PoisonError::into_inner) = link;
                        })
                }
                Kind::Cluster(slot) => {
                    config
                        .open_cluster(config.command_timeout)
                        .await
                        .map(|cluster| {
                            *slot
                                .write()
                                .unwrap_or_else(std::sync::PoisonError::into_inner) = cluster;
                        })
                }
            };
            match rebuilt {
                Ok(()) => tracing::info!(target = %config, "Redis connection rebuilt"),
                Err(e) => {
                    tracing::warn!(target = %config, error = %e, "Redis connection rebuild failed");
                }
            }
            tokio::time::sleep(REBUILD_GAP).await;
            shared.rebuilding.store(false, Ordering::Release);
        });
    }
}

/// A keyspace scan in progress ([`Connection::scan`]).
pub(crate) struct Scan<'a> {
    conn: &'a Connection,
    pattern: String,
    /// The nodes still to scan, the current one last.
    nodes: Vec<Option<(String, u16)>>,
    cursor: u64,
}

impl Scan<'_> {
    /// The next page of keys (maybe empty, as `SCAN` gives them); `None` once every node is
    /// done.
    pub(crate) async fn next_page(&mut self) -> Result<Option<Vec<Vec<u8>>>, Error> {
        let Some(node) = self.nodes.last() else {
            return Ok(None);
        };
        let (next, keys) = self
            .conn
            .scan_page(node.as_ref(), self.cursor, &self.pattern)
            .await?;
        if next == 0 {
            self.nodes.pop();
        }
        self.cursor = next;
        Ok(Some(keys))
    }
}

/// A line of `CLUSTER NODES`:
/// `<id> <ip:port@bus> <flags> <master id> <ping> <pong> <epoch> <link> <slots>…`.
struct Node<'a> {
    id: &'a str,
    host: &'a str,
    port: Option<u16>,
    master: bool,
    failed: bool,
    master_id: &'a str,
    connected: bool,
    slots: Vec<&'a str>,
}

impl Node<'_> {
    /// The runs of slots it serves. (`[…]` entries are slots migrating in or out: their owner
    /// stays as listed.)
    fn ranges(&self) -> impl Iterator<Item = (u16, u16)> + '_ {
        self.slots
            .iter()
            .filter(|s| !s.starts_with('['))
            .filter_map(|range| {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                Some((lo.parse().ok()?, hi.parse().ok()?))
            })
    }
}

/// `CLUSTER NODES` with the answering node's own address filled in: a node that has never
/// been met by another (a cluster of one) does not know its address and lists itself as
/// `:<port>@<bus>`. It is then the only node, so the seed that reached it is its address —
/// the rule `CLUSTER SLOTS` gives clients for an empty host.
fn with_own_host(text: String, host: &str) -> String {
    let unknown = |line: &str| {
        let mut f = line.split_whitespace().skip(1);
        matches!((f.next(), f.next()), (Some(addr), Some(flags))
            if addr.starts_with(':') && flags.split(',').any(|flag| flag == "myself"))
    };
    if host.is_empty() || !text.lines().any(unknown) {
        return text;
    }
    text.lines()
        .map(|line| match line.split_once(' ') {
            Some((id, rest)) if unknown(line) => format!("{id} {host}{rest}\n"),
            _ => format!("{line}\n"),
        })
        .collect()
}

fn nodes(text: &str) -> impl Iterator<Item = Node<'_>> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (host, port) = f.get(1)?.split('@').next()?.rsplit_once(':')?;
        let flags = f.get(2)?;
        Some(Node {
            id: f.first()?,
            host,
            port: port.parse().ok(),
            master: flags.contains("master"),
            failed: flags.contains("fail"),
            master_id: f.get(3)?,
            connected: f.get(7) == Some(&"connected"),
            slots: f.get(8..).map(<[&str]>::to_vec).unwrap_or_default(),
        })
    })
}

/// The slots served by a master that has a live, connected replica, each with its master's
/// ordinal (to tell which slots one `WAIT` covers).
type ReplicatedSlots = HashMap<Slot, usize>;

fn replica_slots(text: &str) -> ReplicatedSlots {
    let with_replica: HashSet<&str> = nodes(text)
        .filter(|n| !n.master && !n.failed && n.connected)
        .map(|n| n.master_id)
        .collect();
    let mut slots = HashMap::new();
    let masters = nodes(text).filter(|n| n.master && with_replica.contains(n.id));
    for (ordinal, node) in masters.enumerate() {
        for (lo, hi) in node.ranges() {
            slots.extend((lo..=hi).filter_map(Slot::new).map(|slot| (slot, ordinal)));
        }
    }
    slots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_features_follow_the_server_and_its_version() {
        let f = |info: &str| {
            let s = ServerFeatures::of(info);
            (s.nx_get, s.ifeq)
        };
        assert_eq!(f("redis_version:6.2.14\r\n"), (false, false));
        assert_eq!(f("# Server\r\nredis_version:7.0.15\r\n"), (true, false));
        assert_eq!(f("redis_version:8.2.1\r\n"), (true, false));
        assert_eq!(f("redis_version:8.4.0\r\n"), (true, true));
        assert_eq!(f("redis_version:10.0.0\r\n"), (true, true));
        // Valkey reports a Redis version of 7.2 beside its own.
        assert_eq!(
            f("redis_version:7.2.4\r\nvalkey_version:8.0.1\r\n"),
            (true, false)
        );
        assert_eq!(
            f("redis_version:7.2.4\r\nvalkey_version:8.1.1\r\n"),
            (true, true)
        );
        assert_eq!(
            f("redis_version:7.2.4\r\nvalkey_version:9.0.0\r\n"),
            (true, true)
        );
        // Unreadable: the oldest behaviour.
        assert_eq!(f(""), (false, false));
        assert_eq!(f("redis_version:x.y\r\n"), (false, false));
    }

    #[test]
    fn only_masters_with_a_live_replica_are_waited_on() {
        let text = "\
a 127.0.0.1:1@11 myself,master - 0 0 1 connected 0-9 20
b 127.0.0.1:2@12 master - 0 0 2 connected 10-19
c 127.0.0.1:3@13 slave a 0 0 1 connected
d 127.0.0.1:4@14 slave,fail b 0 0 2 disconnected
";
        let slots = replica_slots(text);
        assert_eq!(slots.len(), 11, "0-9 and 20, from a");
        assert_eq!(slots.get(&Slot::new(20).unwrap()), Some(&0));
        assert!(
            !slots.contains_key(&Slot::new(10).unwrap()),
            "b's replica failed"
        );
        let masters: Vec<_> = nodes(text).filter(|n| n.master).map(|n| n.port).collect();
        assert_eq!(masters, [Some(1), Some(2)]);
    }

    #[test]
    fn a_cluster_of_one_lists_itself_at_the_seed_it_was_reached_by() {
        let alone = "a :7101@17101 myself,master - 0 0 1 connected 0-16383\n";
        let text = with_own_host(alone.to_owned(), "10.0.0.5");
        let node = nodes(&text).next().unwrap();
        assert_eq!((node.host, node.port), ("10.0.0.5", Some(7101)));
        assert_eq!(node.ranges().collect::<Vec<_>>(), [(0, 16383)]);
        // A node with an address, or another node without one (`noaddr`), is left alone.
        let known = "a 127.0.0.1:1@11 myself,master - 0 0 1 connected 0-9\n\
                     b :2@12 master,noaddr - 0 0 2 disconnected\n";
        assert_eq!(with_own_host(known.to_owned(), "10.0.0.5"), known);
    }
}
