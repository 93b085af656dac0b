//! Connection settings shared by the store and the backplane: URL, timeouts, TLS.

use std::fmt;
use std::sync::Once;
use std::time::Duration;

use crate::error::classify;
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};
use strata::Error;

/// How to reach one Redis server.
///
/// Built from a URL — `redis://[user[:password]@]host[:port][/db]`, `rediss://…` for TLS — plus
/// timeouts and, for TLS, a CA and an optional client certificate (mutual TLS). `Debug` never
/// prints the password or key material.
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
    info: ConnectionInfo,
    pub(crate) connect_timeout: Duration,
    pub(crate) command_timeout: Duration,
    ca_pem: Option<Vec<u8>>,
    client_pem: Option<(Vec<u8>, Vec<u8>)>,
}

impl RedisConfig {
    /// Parses `url`. Fails with [`Error::Config`] on a malformed URL or unknown scheme.
    pub fn from_url(url: &str) -> Result<Self, Error> {
        let info = url.into_connection_info().map_err(|e| {
            Error::Config(format!("Redis URL: {}", e.detail().unwrap_or("malformed")))
        })?;
        Ok(RedisConfig {
            info,
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_millis(500),
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

    fn is_tls(&self) -> bool {
        matches!(self.info.addr(), ConnectionAddr::TcpTls { .. })
    }

    /// A `redis::Client` for these settings.
    pub(crate) fn client(&self) -> Result<redis::Client, Error> {
        if !self.is_tls() {
            if self.ca_pem.is_some() || self.client_pem.is_some() {
                return Err(Error::Config(
                    "TLS certificates given for a non-TLS URL (use rediss://)".into(),
                ));
            }
            return redis::Client::open(self.info.clone()).map_err(classify);
        }
        install_crypto_provider();
        if self.ca_pem.is_none() && self.client_pem.is_none() {
            return redis::Client::open(self.info.clone()).map_err(classify);
        }
        let certs = redis::TlsCertificates {
            client_tls: self
                .client_pem
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.ca_pem.clone(),
        };
        redis::Client::build_with_tls(self.info.clone(), certs)
            .map_err(|e| Error::Config(format!("TLS settings: {e}")))
    }

    /// A multiplexed, auto-reconnecting connection with these settings (TLS, credentials,
    /// timeouts), for commands of your own.
    pub async fn connect(&self) -> Result<redis::aio::ConnectionManager, Error> {
        redis::aio::ConnectionManager::new_with_config(self.client()?, self.manager_config())
            .await
            .map_err(classify)
    }

    /// The connection manager's settings: our timeouts, and its own reconnect with backoff.
    pub(crate) fn manager_config(&self) -> redis::aio::ConnectionManagerConfig {
        redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1))
    }
}

/// A connection failure of an invalidation log is a log error, not a store error.
pub(crate) fn into_log_error(e: Error) -> Error {
    match e {
        Error::Store(source) => Error::Log(source),
        other => other,
    }
}

/// rustls needs one process-wide crypto provider before the first TLS connection; we bring
/// `ring` (no C toolchain beyond `cc`, unlike aws-lc). If the application installed one
/// already, that one stays.
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
            .field("db", &settings.db())
            .field("username", &settings.username())
            .field("password", &settings.password().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
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
        match self.info.addr() {
            ConnectionAddr::Tcp(host, port) => write!(f, "redis://{host}:{port}"),
            ConnectionAddr::TcpTls { host, port, .. } => write!(f, "rediss://{host}:{port}"),
            ConnectionAddr::Unix(path) => write!(f, "unix://{}", path.display()),
            _ => f.write_str("redis://?"),
        }
    }
}
