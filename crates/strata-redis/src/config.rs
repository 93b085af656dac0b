//! Connection settings shared by the store and the backplane: URL, timeouts, TLS.

use std::fmt;
#[cfg(feature = "tls")]
use std::sync::Once;
use std::time::Duration;

use crate::error::classify;
use redis::aio::MultiplexedConnection;
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};
use strata::Error;

/// How to reach Redis: one server, the master of a Sentinel-managed group, or a Redis Cluster.
///
/// Built from a URL plus timeouts and, for TLS, a CA and an optional client certificate
/// (mutual TLS):
/// - `redis://[user[:password]@]host[:port][/db]`, `rediss://…` for TLS;
/// - `redis+sentinel://[user[:password]@]host[:port][,host[:port]…]/master[/db]` (or
///   `rediss+sentinel://`): the sentinels (port 26379 by default) are asked for the address of
///   `master`; the credentials, database and TLS apply to the master. The stores built on
///   it ask again whenever the master stops answering as one (connection refused or lost,
///   `READONLY`), so they follow a failover; the `redis` crate does not by itself.
/// - `redis+cluster://[user[:password]@]host[:port][,host[:port]…]` (or `rediss+cluster://`):
///   a Redis Cluster reached through these seed nodes (port 6379 by default); the client
///   learns the topology from them, follows `MOVED`/`ASK` during resharding and refreshes
///   its slot map after a failover. Keys that a script changes together are placed in one
///   slot with hash tags (see the crate documentation).
///
/// `Debug` never prints passwords or key material.
///
/// ```
/// use std::time::Duration;
/// let config = strata_redis::RedisConfig::from_url("redis://app:s3cret@127.0.0.1:6379/2")?
///     .command_timeout(Duration::from_millis(200));
/// assert!(!format!("{config:?}").contains("s3cret"));
/// # Ok::<(), strata::Error>(())
/// ```
#[derive(Clone)]
pub struct RedisConfig {
    /// The server; with Sentinel, the master's settings (credentials, db, TLS) and the first
    /// sentinel's address as a placeholder.
    info: ConnectionInfo,
    sentinel: Option<Sentinel>,
    /// The seed nodes of a cluster.
    pub(crate) cluster: Option<Vec<ConnectionInfo>>,
    pub(crate) connect_timeout: Duration,
    pub(crate) command_timeout: Duration,
    pub(crate) replica_wait: Duration,
    pub(crate) ca_pem: Option<Vec<u8>>,
    pub(crate) client_pem: Option<(Vec<u8>, Vec<u8>)>,
}

impl RedisConfig {
    /// Parses `url`. Fails with [`Error::Config`] on a malformed URL or unknown scheme.
    pub fn from_url(url: &str) -> Result<Self, Error> {
        #[cfg(not(feature = "tls"))]
        if url.starts_with("rediss") {
            return Err(no_tls());
        }
        let (info, sentinel, cluster) = match (Sentinel::parse(url)?, parse_cluster(url)?) {
            (Some((info, sentinel)), _) => (info, Some(sentinel), None),
            (None, Some(_)) if !cfg!(feature = "cluster") => {
                return Err(Error::Config(
                    "redis+cluster:// needs strata-redis built with its `cluster` feature (on by \
                     default)"
                        .into(),
                ));
            }
            (None, Some(seeds)) => (seeds[0].clone(), None, Some(seeds)),
            (None, None) => (parse_info(url)?, None, None),
        };
        Ok(RedisConfig {
            info,
            sentinel,
            cluster,
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_millis(500),
            replica_wait: Duration::from_millis(50),
            ca_pem: None,
            client_pem: None,
        })
    }

    /// How long to wait for a connection (default 1 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long to wait for a command's reply (default 500 ms).
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// On a Redis Cluster, how long a write waits for a replica of its master to acknowledge
    /// it (`WAIT 1 <ms>`; default 50 ms), so that an acknowledged write outlives a failover.
    /// A replica that does not answer in time is looked for again in the topology; the write
    /// still succeeds. While a write waits, the commands sent after it on the connection to
    /// that master wait too: keep it short next to the replicas' round trip. Only masters with
    /// a connected replica are waited on; nothing on one server or with Sentinel.
    pub fn replica_wait(mut self, wait: Duration) -> Self {
        self.replica_wait = wait;
        self
    }

    /// Trust this CA (PEM) for `rediss://` instead of the system's roots.
    pub fn ca_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Present this client certificate and key (PEM) for mutual TLS.
    pub fn client_certificate_pem(
        mut self,
        cert: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Self {
        self.client_pem = Some((cert.into(), key.into()));
        self
    }

    /// Credentials for the sentinels themselves, when they require `AUTH` (the URL's apply to
    /// the master).
    pub fn sentinel_credentials(mut self, username: Option<&str>, password: &str) -> Self {
        if let Some(sentinel) = &mut self.sentinel {
            for node in &mut sentinel.nodes {
                let mut settings = node.redis_settings().clone().set_password(password);
                if let Some(user) = username {
                    settings = settings.set_username(user);
                }
                *node = node.clone().set_redis_settings(settings);
            }
        }
        self
    }

    pub(crate) fn is_tls(&self) -> bool {
        matches!(self.info.addr(), ConnectionAddr::TcpTls { .. })
    }

    /// The host of the URL (a cluster's first seed).
    pub(crate) fn host(&self) -> Option<&str> {
        match self.info.addr() {
            ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. } => Some(host),
            _ => None,
        }
    }

    /// Whether the master is found through Sentinel (and may move).
    pub(crate) fn is_sentinel(&self) -> bool {
        self.sentinel.is_some()
    }

    /// Which server this names, as a store and a log compare it to learn that they share one
    /// (a store then appends log entries in its own scripts): the address and database, or
    /// Sentinel's master name and sentinels. `None` for a cluster, whose data and log live in
    /// different slots. Credentials are not part of it.
    pub(crate) fn identity(&self) -> Option<String> {
        if self.cluster.is_some() {
            return None;
        }
        let db = self.info.redis_settings().db();
        Some(match &self.sentinel {
            Some(s) => {
                let nodes: Vec<String> = s.nodes.iter().map(|n| addr_text(n.addr())).collect();
                format!("sentinel:{}@{}/{db}", s.master, nodes.join(","))
            }
            None => format!("{}/{db}", addr_text(self.info.addr())),
        })
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// A `redis::Client` for the server — with Sentinel, for the master as the sentinels
    /// name it now.
    pub(crate) async fn resolve(&self) -> Result<redis::Client, Error> {
        self.client_for(&self.server().await?)
    }

    /// The server's address and settings — with Sentinel, the master's as the sentinels name
    /// it now.
    async fn server(&self) -> Result<ConnectionInfo, Error> {
        Ok(match &self.sentinel {
            None => self.info.clone(),
            Some(sentinel) => self
                .info
                .clone()
                .set_addr(sentinel.master_addr(self).await?),
        })
    }

    /// `host:port` reached as the configured server is (TLS or not).
    fn addr_like(&self, host: String, port: u16) -> ConnectionAddr {
        match self.info.addr() {
            ConnectionAddr::TcpTls { insecure, .. } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: *insecure,
                tls_params: None,
            },
            _ => ConnectionAddr::Tcp(host, port),
        }
    }

    /// A `redis::Client` for `info`, with these TLS settings.
    fn client_for(&self, info: &ConnectionInfo) -> Result<redis::Client, Error> {
        if !self.is_tls() {
            if self.ca_pem.is_some() || self.client_pem.is_some() {
                return Err(Error::Config(
                    "TLS certificates given for a non-TLS URL (use rediss://)".into(),
                ));
            }
            return redis::Client::open(info.clone()).map_err(classify);
        }
        self.tls_client(info)
    }

    /// A TLS client for `info`, with the CA and client certificate given.
    #[cfg(feature = "tls")]
    fn tls_client(&self, info: &ConnectionInfo) -> Result<redis::Client, Error> {
        install_crypto_provider();
        if self.ca_pem.is_none() && self.client_pem.is_none() {
            return redis::Client::open(info.clone()).map_err(classify);
        }
        redis::Client::build_with_tls(info.clone(), self.certificates())
            .map_err(|e| Error::Config(format!("TLS settings: {e}")))
    }

    #[cfg(not(feature = "tls"))]
    fn tls_client(&self, _info: &ConnectionInfo) -> Result<redis::Client, Error> {
        Err(no_tls())
    }

    /// A cluster client builder with the TLS settings given.
    #[cfg(feature = "tls")]
    pub(crate) fn cluster_tls(
        &self,
        builder: redis::cluster::ClusterClientBuilder,
    ) -> Result<redis::cluster::ClusterClientBuilder, Error> {
        install_crypto_provider();
        Ok(if self.ca_pem.is_some() || self.client_pem.is_some() {
            builder.certs(self.certificates())
        } else {
            builder
        })
    }

    #[cfg(not(feature = "tls"))]
    pub(crate) fn cluster_tls(
        &self,
        _builder: redis::cluster::ClusterClientBuilder,
    ) -> Result<redis::cluster::ClusterClientBuilder, Error> {
        Err(no_tls())
    }

    /// The CA and client certificate given, for the `redis` crate.
    #[cfg(feature = "tls")]
    fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self
                .client_pem
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.ca_pem.clone(),
        }
    }

    /// The server's auto-reconnecting connection manager.
    pub(crate) async fn connect_manager(&self) -> Result<redis::aio::ConnectionManager, Error> {
        redis::aio::ConnectionManager::new_with_config(self.resolve().await?, self.manager_config())
            .await
            .map_err(classify)
    }

    /// A connection of its own on `client`, with our timeouts (`block` added to the command
    /// timeout).
    pub(crate) async fn own_connection(
        &self,
        client: &redis::Client,
        block: Duration,
    ) -> Result<MultiplexedConnection, Error> {
        self.connection_with(client, self.timeouts(block)).await
    }

    /// A connection of its own, speaking RESP3, whose pub/sub messages go to `pushes`: to the
    /// server (with Sentinel, the master of the moment), or to the cluster node at `node`.
    pub(crate) async fn push_connection(
        &self,
        node: Option<(&str, u16)>,
        pushes: tokio::sync::mpsc::UnboundedSender<redis::PushInfo>,
    ) -> Result<MultiplexedConnection, Error> {
        let info = match node {
            Some((host, port)) => self
                .info
                .clone()
                .set_addr(self.addr_like(host.into(), port)),
            None => self.server().await?,
        };
        // RESP3: pub/sub messages arrive as pushes on a connection that still answers
        // commands (the probes).
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let client = self.client_for(&info.set_redis_settings(resp3))?;
        let settings = self.timeouts(Duration::ZERO).set_push_sender(pushes);
        self.connection_with(&client, settings).await
    }

    fn timeouts(&self, block: Duration) -> redis::AsyncConnectionConfig {
        redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(block + self.command_timeout))
    }

    async fn connection_with(
        &self,
        client: &redis::Client,
        settings: redis::AsyncConnectionConfig,
    ) -> Result<MultiplexedConnection, Error> {
        client
            .get_multiplexed_async_connection_with_config(&settings)
            .await
            .map_err(classify)
    }

    /// The connection manager's settings: our timeouts, and one connection attempt per
    /// reconnect. Its own retries would hold every request that meets a reconnect for their
    /// whole backoff; ours (the cache's guard) are budgeted and stop at the breaker.
    pub(crate) fn manager_config(&self) -> redis::aio::ConnectionManagerConfig {
        redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout))
            .set_number_of_retries(0)
    }
}

/// A `rediss://` URL given to a build without TLS.
#[cfg(not(feature = "tls"))]
fn no_tls() -> Error {
    Error::Config(
        "rediss:// needs strata-redis built with its `tls` feature (on by default)".into(),
    )
}

/// rustls needs one process-wide crypto provider before the first TLS connection; we bring
/// `ring` (no C toolchain beyond `cc`, unlike aws-lc). If the application installed one
/// already, that one stays.
#[cfg(feature = "tls")]
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let settings = self.info.redis_settings();
        f.debug_struct("RedisConfig")
            .field("target", &self.to_string())
            .field("sentinel", &self.sentinel)
            .field("cluster", &self.cluster.as_ref().map(Vec::len))
            .field("db", &settings.db())
            .field("username", &settings.username())
            .field("password", &settings.password().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("replica_wait", &self.replica_wait)
            .field("ca", &self.ca_pem.as_ref().map(|_| "<pem>"))
            .field(
                "client_certificate",
                &self.client_pem.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl fmt::Display for RedisConfig {
    /// The target without credentials, for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tls = if self.is_tls() { "s" } else { "" };
        if let Some(seeds) = &self.cluster {
            let nodes: Vec<String> = seeds.iter().map(|n| addr_text(n.addr())).collect();
            return write!(f, "redis{tls}+cluster://{}", nodes.join(","));
        }
        if let Some(sentinel) = &self.sentinel {
            let nodes: Vec<String> = sentinel.nodes.iter().map(|n| addr_text(n.addr())).collect();
            return write!(
                f,
                "redis{tls}+sentinel://{}/{}",
                nodes.join(","),
                sentinel.master
            );
        }
        match self.info.addr() {
            ConnectionAddr::Tcp(host, port) => write!(f, "redis://{host}:{port}"),
            ConnectionAddr::TcpTls { host, port, .. } => write!(f, "rediss://{host}:{port}"),
            ConnectionAddr::Unix(path) => write!(f, "unix://{}", path.display()),
            _ => f.write_str("redis://?"),
        }
    }
}

fn addr_text(addr: &ConnectionAddr) -> String {
    match addr {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            format!("{host}:{port}")
        }
        ConnectionAddr::Unix(path) => path.display().to_string(),
        _ => "?".into(),
    }
}

fn parse_info(url: &str) -> Result<ConnectionInfo, Error> {
    url.into_connection_info()
        .map_err(|e| Error::Config(format!("Redis URL: {}", e.detail().unwrap_or("malformed"))))
}

/// `host:port` as given, or `host` with `port`.
fn with_port(host: &str, port: u16) -> String {
    if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host.to_owned()
    } else {
        format!("{host}:{port}")
    }
}

/// The seed nodes of a `redis+cluster://` or `rediss+cluster://` URL, each with the URL's
/// credentials and TLS; `None` for any other scheme.
fn parse_cluster(url: &str) -> Result<Option<Vec<ConnectionInfo>>, Error> {
    let (scheme, rest) = match url.split_once("://") {
        Some(("redis+cluster", rest)) => ("redis", rest),
        Some(("rediss+cluster", rest)) => ("rediss", rest),
        _ => return Ok(None),
    };
    let bad = |what: &str| Error::Config(format!("Redis Cluster URL: {what}"));
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((userinfo, rest)) => (Some(userinfo), rest),
        None => (None, rest),
    };
    let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
    if !matches!(path, "" | "0") {
        return Err(bad("a cluster has database 0 only"));
    }
    if hosts.is_empty() {
        return Err(bad("needs at least one seed host"));
    }
    let userinfo = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
    let mut seeds = Vec::new();
    for host in hosts.split(',') {
        let host = with_port(host, 6379);
        seeds.push(parse_info(&format!("{scheme}://{userinfo}{host}"))?);
    }
    Ok(Some(seeds))
}

/// The sentinels of a Sentinel-managed group, and the name of its master.
#[derive(Clone)]
struct Sentinel {
    nodes: Vec<ConnectionInfo>,
    master: String,
}

impl fmt::Debug for Sentinel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes: Vec<String> = self.nodes.iter().map(|n| addr_text(n.addr())).collect();
        f.debug_struct("Sentinel")
            .field("nodes", &nodes)
            .field("master", &self.master)
            .finish()
    }
}

impl Sentinel {
    /// Parses a `redis+sentinel://` or `rediss+sentinel://` URL into the master's settings and
    /// the sentinels; `None` for any other scheme.
    fn parse(url: &str) -> Result<Option<(ConnectionInfo, Sentinel)>, Error> {
        let (scheme, rest) = match url.split_once("://") {
            Some(("redis+sentinel", rest)) => ("redis", rest),
            Some(("rediss+sentinel", rest)) => ("rediss", rest),
            _ => return Ok(None),
        };
        let bad = |what: &str| Error::Config(format!("Sentinel URL: {what}"));
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((userinfo, rest)) => (Some(userinfo), rest),
            None => (None, rest),
        };
        let (hosts, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("no master name (…/<master>[/<db>])"))?;
        let (master, db) = match path.split_once('/') {
            Some((master, db)) => (master, Some(db)),
            None => (path, None),
        };
        if master.is_empty() || hosts.is_empty() {
            return Err(bad("needs sentinel hosts and a master name"));
        }
        let mut nodes = Vec::new();
        for host in hosts.split(',') {
            let host = with_port(host, 26379);
            nodes.push(parse_info(&format!("{scheme}://{host}"))?);
        }
        // The master's settings, parsed by the `redis` crate (percent-decoding included), at
        // the first sentinel's address until the sentinels name the master.
        let userinfo = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
        let db = db
            .filter(|d| !d.is_empty())
            .map(|d| format!("/{d}"))
            .unwrap_or_default();
        let first = addr_text(nodes[0].addr());
        let info = parse_info(&format!("{scheme}://{userinfo}{first}{db}"))?;
        Ok(Some((
            info,
            Sentinel {
                nodes,
                master: master.to_owned(),
            },
        )))
    }

    /// Asks the sentinels, in order, for the master's address.
    async fn master_addr(&self, config: &RedisConfig) -> Result<ConnectionAddr, Error> {
        let mut last = None;
        for node in &self.nodes {
            match self.ask(config, node).await {
                Ok(Some((host, port))) => return Ok(config.addr_like(host, port)),
                Ok(None) => {
                    last = Some(format!(
                        "{} does not know master {:?}",
                        addr_text(node.addr()),
                        self.master
                    ));
                }
                Err(e) => last = Some(format!("{}: {e}", addr_text(node.addr()))),
            }
        }
        Err(Error::unavailable(std::io::Error::new(
            std::io::ErrorKind::NotConnected,
            format!("no sentinel named a master: {}", last.unwrap_or_default()),
        )))
    }

    async fn ask(
        &self,
        config: &RedisConfig,
        node: &ConnectionInfo,
    ) -> Result<Option<(String, u16)>, Error> {
        let mut conn = config
            .own_connection(&config.client_for(node)?, Duration::ZERO)
            .await?;
        redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&self.master)
            .query_async::<Option<(String, u16)>>(&mut conn)
            .await
            .map_err(classify)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_as_this_build_supports_them() {
        let cluster = RedisConfig::from_url("redis+cluster://127.0.0.1:7000,127.0.0.1:7001");
        if cfg!(feature = "cluster") {
            assert!(cluster.unwrap().is_cluster());
        } else {
            let e = cluster.unwrap_err();
            assert!(e.to_string().contains("`cluster` feature"), "{e}");
        }
        assert!(
            !RedisConfig::from_url("redis://127.0.0.1:6379")
                .unwrap()
                .is_cluster()
        );
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn a_tls_url_says_which_feature_it_needs() {
        for url in ["rediss://127.0.0.1:6380", "rediss+cluster://127.0.0.1:7000"] {
            let e = RedisConfig::from_url(url).unwrap_err();
            assert!(e.to_string().contains("`tls` feature"), "{url}: {e}");
        }
    }
}
