//! `gateway.toml`: listeners, routes and their cache policies. Every value is checked while
//! the file is read, so a mistake is reported with its file, line and field.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::{HeaderName, Uri};
use serde::Deserialize;
use serde::de::{self, Deserializer};
use strata_http::{KeyPolicy, Policy, QueryKey, StoreOptIns};

/// A gateway's configuration: what `gateway.toml` holds (every field is documented in the
/// repository's `examples/gateway.toml`). Read with [`Config::load`] or [`Config::parse`], or
/// made for one upstream with [`Config::quick`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where clients connect (default `127.0.0.1:8080`). Every path is forwarded.
    #[serde(default = "default_listen")]
    pub(crate) listen: SocketAddr,
    /// Where the admin API, `/metrics` and the dashboard are served: an address, or `"off"`.
    /// Default: loopback on the port after `listen`'s (`127.0.0.1:8081` for the default
    /// listener; port 0 when `listen`'s is 0), so it is reachable from the host only.
    pub(crate) admin_listen: Option<AdminListen>,
    /// Redis for L2, leases and the invalidation log (`redis://`, `rediss://`,
    /// `redis+sentinel://`, `redis+cluster://`); else `REDIS_URL`; else the embedded
    /// in-memory cache.
    pub(crate) redis: Option<String>,
    /// The gateway's cache namespace (default `gateway`); gateways sharing it share entries.
    #[serde(default = "default_namespace")]
    pub(crate) namespace: String,
    /// Splits the gateway namespace's invalidation log into this many parts (1 to 64), for
    /// purge rates one stream cannot carry; every gateway of the namespace must say the same.
    /// Followed namespaces keep the count their services chose.
    pub(crate) log_shards: Option<usize>,
    /// Drops responses from L1 when something outside Strata changes their L2 entries
    /// (`redis-cli DEL`, another stack's cache-aside): Redis server-assisted invalidation
    /// (`strata::HybridCacheBuilder::track_foreign_writes`). Off by default: it costs every
    /// gateway a report per write to the namespace (BENCHMARKS.md). Needs `redis`.
    #[serde(default)]
    pub(crate) track_foreign_writes: bool,
    /// Namespaces of services whose `invalidate_tag` also purges the gateway's responses.
    #[serde(default)]
    pub(crate) follow: Vec<String>,
    /// The admin API's bearer token; else `STRATA_ADMIN_TOKEN`; with neither, the admin API
    /// answers 401 to everything.
    pub(crate) admin_token: Option<String>,
    /// Threads serving connections, each with its own listener (default: one per CPU).
    pub(crate) workers: Option<usize>,
    /// Memory for L1, in bytes or with a unit (`256MiB`, default): responses weigh their
    /// encoded size.
    #[serde(default = "default_l1_size")]
    pub(crate) l1_size: ByteSize,
    /// Upstream connection settings.
    #[serde(default)]
    pub(crate) upstream: UpstreamSettings,
    /// Routes, matched by longest path prefix.
    #[serde(rename = "route", default)]
    pub(crate) routes: Vec<RouteConfig>,
}

/// How the gateway talks to upstreams.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct UpstreamSettings {
    /// TCP connect timeout (default 2 s).
    pub(crate) connect_timeout: DurationValue,
    /// Time to the response head (default 30 s).
    pub(crate) timeout: DurationValue,
    /// How long an idle pooled connection is kept (default 90 s).
    pub(crate) idle_timeout: DurationValue,
    /// Idle connections kept per upstream (default 256).
    pub(crate) max_idle_per_host: usize,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            connect_timeout: DurationValue(Duration::from_secs(2)),
            timeout: DurationValue(Duration::from_secs(30)),
            idle_timeout: DurationValue(Duration::from_secs(90)),
            max_idle_per_host: 256,
        }
    }
}

/// One route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteConfig {
    /// A name for metrics and keys (default: the prefix).
    pub(crate) name: Option<String>,
    /// The path prefix it serves, by whole segments (`/api` serves `/api` and `/api/…`).
    pub(crate) prefix: PathPrefix,
    /// Where requests go: `http://host:port[/base]`.
    pub(crate) upstream: Upstream,
    /// Remove the prefix before forwarding (default false).
    #[serde(default)]
    pub(crate) strip_prefix: bool,
    /// The cache policy (default: shared-cache rules, freshness from the upstream).
    #[serde(default)]
    pub(crate) cache: CacheConfig,
}

/// A route's cache policy.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CacheConfig {
    /// `false` passes every request through.
    pub(crate) enabled: Option<bool>,
    /// Freshness for every storable response, overriding the upstream's.
    pub(crate) ttl: Option<DurationValue>,
    /// Freshness for responses that give none.
    pub(crate) default_ttl: Option<DurationValue>,
    /// `stale-while-revalidate` when the upstream does not say.
    pub(crate) stale_while_revalidate: Option<DurationValue>,
    /// `stale-if-error` when the upstream does not say.
    pub(crate) stale_if_error: Option<DurationValue>,
    /// Longest a response is kept.
    pub(crate) max_ttl: Option<DurationValue>,
    /// Key template: `{host}`, `{path}`, `{query}`, `{header:<name>}`.
    pub(crate) key: Option<String>,
    /// Query parameters in the key: `"all"` (default), `"none"`, or `{ only = [...] }` /
    /// `{ except = [...] }`.
    pub(crate) query: Option<QueryConfig>,
    /// Request headers in the key (besides the variants the upstream's `Vary` selects).
    #[serde(default)]
    pub(crate) headers: Vec<HeaderNameValue>,
    /// Hardening: a cacheable request reaches the upstream with only its keyed headers (and
    /// `traceparent`, `tracestate`, `x-request-id`), for upstreams that read headers they do
    /// not list in `Vary` (cache poisoning). Default false: every header is forwarded.
    pub(crate) strip_unkeyed: Option<bool>,
    /// The former name of `strip_unkeyed = false` (forwarding is now the default): `true`
    /// is accepted and changes nothing, `false` strips.
    pub(crate) forward_unkeyed: Option<bool>,
    /// Store `private` responses.
    #[serde(default)]
    pub(crate) private: bool,
    /// Store responses with `Set-Cookie`.
    #[serde(default)]
    pub(crate) set_cookie: bool,
    /// Store responses to requests with `Authorization` whatever they say.
    #[serde(default)]
    pub(crate) authorized: bool,
    /// Serve requests with `Cookie` from the cache (the cookie is not forwarded).
    #[serde(default)]
    pub(crate) cookies: bool,
    /// Targeted cache-control fields (RFC 9213) this route obeys, first present and valid
    /// wins over `Cache-Control` and `Expires` (default `["Strata-Cache-Control",
    /// "CDN-Cache-Control"]`; `[]` for `Cache-Control` alone).
    pub(crate) targets: Option<Vec<HeaderNameValue>>,
    /// Largest body stored, in bytes or with a unit (default `1MiB`).
    pub(crate) max_body: Option<ByteSize>,
    /// Longest wait on another request's trip to the upstream.
    pub(crate) collapse_wait: Option<DurationValue>,
    /// How long "not cacheable" is remembered.
    pub(crate) hit_for_pass: Option<DurationValue>,
    /// Ignore the client's `Cache-Control`.
    #[serde(default)]
    pub(crate) ignore_request_cache_control: bool,
    /// Show the key in `Cache-Status`.
    #[serde(default)]
    pub(crate) debug: bool,
}

/// `query = "all" | "none" | { only = [...] } | { except = [...] }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum QueryConfig {
    /// `"all"` or `"none"`.
    Word(QueryWord),
    /// `{ only = [...] }` or `{ except = [...] }`.
    List(QueryList),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum QueryWord {
    All,
    None,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub(crate) enum QueryList {
    Only(Vec<String>),
    Except(Vec<String>),
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_namespace() -> String {
    "gateway".into()
}
fn default_l1_size() -> ByteSize {
    ByteSize(256 << 20)
}

/// `admin_listen`: an address, or `"off"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AdminListen {
    /// No admin listener: no purge API, no `/metrics`, no dashboard.
    Off,
    /// Listen here.
    At(SocketAddr),
}

impl<'de> Deserialize<'de> for AdminListen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text == "off" {
            return Ok(AdminListen::Off);
        }
        text.parse().map(AdminListen::At).map_err(|_| {
            de::Error::custom(format!(
                "{text:?} is not an address (expected e.g. \"127.0.0.1:8081\", or \"off\")"
            ))
        })
    }
}

/// A size: a number of bytes, or a string with a unit (`512KiB`, `256MiB`, `1GiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ByteSize(pub(crate) u64);

/// Parses `4096`, `512KiB`, `256MiB`, `1GiB` (and `KB`/`MB`/`GB`, also powers of 1024).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| {
        format!("{text:?} is not a size (expected e.g. 4096, 512KiB, 256MiB, 1GiB)")
    })?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" | "KB" | "K" => 10,
        "MiB" | "MB" | "M" => 20,
        "GiB" | "GB" | "G" => 30,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (expected KiB, MiB or GiB)"
            ));
        }
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(t) => parse_size(&t).map(ByteSize).map_err(de::Error::custom),
        }
    }
}

/// A duration written `250ms`, `30s`, `5m`, `2h` or `1d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DurationValue(pub(crate) Duration);

/// Parses `250ms`, `30s`, `5m`, `2h`, `1d`: durations as `gateway.toml` and the `strata`
/// commands take them.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit (expected e.g. 250ms, 30s, 5m, 2h, 1d)"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| {
        format!("{text:?} is not a duration (expected e.g. 250ms, 30s, 5m, 2h, 1d)")
    })?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (expected ms, s, m, h or d)"
            ));
        }
    };
    n.checked_mul(unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
}

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text)
            .map(DurationValue)
            .map_err(de::Error::custom)
    }
}

/// A path prefix: starts with `/`, no query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathPrefix(pub(crate) String);

impl<'de> Deserialize<'de> for PathPrefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if !text.starts_with('/') || text.contains(['?', '#', ' ']) {
            return Err(de::Error::custom(format!(
                "{text:?} is not a path prefix (it must start with `/`, without query)"
            )));
        }
        let trimmed = text.trim_end_matches('/');
        Ok(PathPrefix(if trimmed.is_empty() {
            "/".into()
        } else {
            trimmed.into()
        }))
    }
}

impl PathPrefix {
    /// Whether `path` is under this prefix, by whole segments.
    pub(crate) fn matches(&self, path: &str) -> bool {
        self.0 == "/"
            || path
                .strip_prefix(&self.0)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

/// An upstream base URL: `http://host[:port][/base]`.
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    pub(crate) scheme: http::uri::Scheme,
    pub(crate) authority: http::uri::Authority,
    /// The base path, without a trailing `/` (empty for none).
    pub(crate) base: String,
}

impl Upstream {
    pub(crate) fn parse(text: &str) -> Result<Upstream, String> {
        let uri: Uri = text
            .parse()
            .map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(format!("{text:?}: expected http://host:port"));
        };
        if scheme != &http::uri::Scheme::HTTP {
            return Err(format!(
                "{text:?}: only http:// upstreams are supported (terminate TLS in front of the \
                 upstream, or on a sidecar)"
            ));
        }
        if uri.query().is_some() {
            return Err(format!("{text:?}: an upstream has no query"));
        }
        Ok(Upstream {
            scheme: scheme.clone(),
            authority: authority.clone(),
            base: uri.path().trim_end_matches('/').to_owned(),
        })
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.base)
    }
}

impl<'de> Deserialize<'de> for Upstream {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Upstream::parse(&text).map_err(de::Error::custom)
    }
}

/// A header name, lowercase.
#[derive(Debug, Clone)]
pub(crate) struct HeaderNameValue(pub(crate) HeaderName);

impl<'de> Deserialize<'de> for HeaderNameValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        HeaderName::from_bytes(text.as_bytes())
            .map(HeaderNameValue)
            .map_err(|_| de::Error::custom(format!("{text:?} is not a header name")))
    }
}

/// A config error: where, and what.
#[derive(Debug)]
pub struct ConfigError(pub(crate) String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses `text` (from `origin`, for messages) and checks what serde cannot.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!(":{line}")
                })
                .unwrap_or_default();
            ConfigError(format!("{origin}{at}: {e}"))
        })?;
        if let Some(n) = config.log_shards
            && !(1..=strata_redis::MAX_LOG_SHARDS).contains(&n)
        {
            return Err(ConfigError(format!(
                "{origin}: field `log_shards`: from 1 to {}, not {n}",
                strata_redis::MAX_LOG_SHARDS
            )));
        }
        if config.routes.is_empty() {
            return Err(ConfigError(format!(
                "{origin}: no [[route]]: at least one route (prefix → upstream) is needed"
            )));
        }
        let mut seen: Vec<(&str, &str)> = Vec::new();
        for (i, route) in config.routes.iter().enumerate() {
            let name = route.name();
            let at = |field: &str| format!("{origin}: route #{} ({name}), field `{field}`", i + 1);
            if let Some((_, other)) = seen.iter().find(|(n, _)| *n == name) {
                return Err(ConfigError(format!(
                    "{}: name also used by route {other}",
                    at("name")
                )));
            }
            if let Some((other, _)) = seen.iter().find(|(_, p)| *p == route.prefix.0) {
                return Err(ConfigError(format!(
                    "{}: prefix {} also served by route {other}",
                    at("prefix"),
                    route.prefix.0
                )));
            }
            seen.push((name, &route.prefix.0));
            route
                .policy()
                .map_err(|e| ConfigError(format!("{}: {e}", at("cache.key"))))?;
        }
        Ok(config)
    }

    /// What the environment sets where the configuration is silent, as `strata gateway`
    /// does: `REDIS_URL` (else the embedded in-memory cache) and `STRATA_ADMIN_TOKEN` (else
    /// the admin API stays locked).
    #[must_use]
    pub fn with_env(mut self) -> Self {
        if self.redis.is_none() {
            self.redis = std::env::var("REDIS_URL").ok();
        }
        if self.admin_token.is_none() {
            self.admin_token = std::env::var("STRATA_ADMIN_TOKEN").ok();
        }
        self
    }

    /// Where the gateway listens.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// Where the admin API, `/metrics` and the dashboard listen (`None`: nowhere). Unless
    /// set, loopback on the port after [`listen`](Self::listen)'s (port 0 stays 0).
    pub fn admin_listen(&self) -> Option<SocketAddr> {
        match self.admin_listen {
            Some(AdminListen::Off) => None,
            Some(AdminListen::At(addr)) => Some(addr),
            None => {
                let ip = if self.listen.is_ipv6() {
                    std::net::Ipv6Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv4Addr::LOCALHOST.into()
                };
                let port = match self.listen.port() {
                    0 => 0,
                    p => p.checked_add(1)?,
                };
                Some(SocketAddr::new(ip, port))
            }
        }
    }

    /// Sets where the admin API listens ([`admin_listen`](Self::admin_listen); `None`:
    /// nowhere).
    #[must_use]
    pub fn with_admin_listen(mut self, at: Option<SocketAddr>) -> Self {
        self.admin_listen = Some(at.map_or(AdminListen::Off, AdminListen::At));
        self
    }

    /// The configuration of the quick form: one route, `/` → `upstream`.
    pub fn quick(listen: SocketAddr, upstream: &str) -> Result<Config, ConfigError> {
        let upstream =
            Upstream::parse(upstream).map_err(|e| ConfigError(format!("--upstream {e}")))?;
        Ok(Config {
            listen,
            admin_listen: None,
            redis: None,
            namespace: default_namespace(),
            log_shards: None,
            track_foreign_writes: false,
            follow: Vec::new(),
            admin_token: None,
            workers: None,
            l1_size: default_l1_size(),
            upstream: UpstreamSettings::default(),
            routes: vec![RouteConfig {
                name: Some("default".into()),
                prefix: PathPrefix("/".into()),
                upstream,
                strip_prefix: false,
                cache: CacheConfig::default(),
            }],
        })
    }
}

impl RouteConfig {
    /// The largest body this route stores (default 1 MiB).
    pub(crate) fn max_body(&self) -> usize {
        self.cache
            .max_body
            .map_or(1 << 20, |b| usize::try_from(b.0).unwrap_or(usize::MAX))
    }

    pub(crate) fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.prefix.0)
    }

    pub(crate) fn cached(&self) -> bool {
        self.cache.enabled.unwrap_or(true)
    }

    /// The route's cache policy.
    pub(crate) fn policy(&self) -> Result<Policy, strata::Error> {
        let c = &self.cache;
        let mut key = KeyPolicy::default()
            .headers(c.headers.iter().map(|h| h.0.clone()))
            .strip_unkeyed(c.strip_unkeyed.unwrap_or(c.forward_unkeyed == Some(false)));
        if let Some(template) = &c.key {
            key = key.template(template)?;
        }
        if let Some(query) = &c.query {
            key = key.query(match query {
                QueryConfig::Word(QueryWord::All) => QueryKey::All,
                QueryConfig::Word(QueryWord::None) => QueryKey::None,
                QueryConfig::List(QueryList::Only(names)) => QueryKey::Only(names.clone()),
                QueryConfig::List(QueryList::Except(names)) => QueryKey::Except(names.clone()),
            });
        }
        let mut policy = Policy::new(self.name())
            .key(key)
            .store_opt_ins(
                StoreOptIns::default()
                    .private(c.private)
                    .set_cookie(c.set_cookie)
                    .authorized(c.authorized),
            )
            .cache_requests_with_cookies(c.cookies)
            .max_body_bytes(self.max_body())
            .honour_request_directives(!c.ignore_request_cache_control)
            .debug(c.debug);
        if let Some(targets) = &c.targets {
            policy = policy.targets(targets.iter().map(|t| t.0.clone()));
        }
        let set = |p: Policy, d: &Option<DurationValue>, f: fn(Policy, Duration) -> Policy| match d
        {
            Some(d) => f(p, d.0),
            None => p,
        };
        policy = set(policy, &c.ttl, Policy::ttl);
        policy = set(policy, &c.default_ttl, Policy::default_ttl);
        policy = set(
            policy,
            &c.stale_while_revalidate,
            Policy::stale_while_revalidate,
        );
        policy = set(policy, &c.stale_if_error, Policy::stale_if_error);
        policy = set(policy, &c.max_ttl, Policy::max_ttl);
        policy = set(policy, &c.collapse_wait, Policy::collapse_wait);
        policy = set(policy, &c.hit_for_pass, Policy::hit_for_pass);
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = "127.0.0.1:9000"
follow = ["product"]

[upstream]
timeout = "5s"

[[route]]
name = "products"
prefix = "/products/"
upstream = "http://127.0.0.1:3001"
[route.cache]
ttl = "60s"
query = { except = ["utm_source"] }
headers = ["accept-language"]
targets = ["Akamai-Cache-Control", "CDN-Cache-Control"]

[[route]]
prefix = "/"
upstream = "http://127.0.0.1:3000/base/"
"#;

    #[test]
    fn a_full_config_reads() {
        let c = Config::parse(GOOD, "gateway.toml").unwrap();
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.routes[0].prefix.0, "/products");
        assert_eq!(c.routes[1].upstream.base, "/base");
        assert_eq!(c.upstream.timeout.0, Duration::from_secs(5));
        assert!(c.routes[0].prefix.matches("/products/1"));
        assert!(!c.routes[0].prefix.matches("/products-old"));
        assert_eq!(c.routes[1].name(), "/");
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let typo = GOOD.replace("ttl = \"60s\"", "ttl = \"60 s\"");
        let e = Config::parse(&typo, "gateway.toml").unwrap_err().0;
        assert!(e.starts_with("gateway.toml:13:"), "{e}");
        assert!(e.contains("ttl") && e.contains("unknown unit"), "{e}");
        let unknown = GOOD.replace("ttl = \"60s\"", "tll = \"60s\"");
        let e = Config::parse(&unknown, "g.toml").unwrap_err().0;
        assert!(
            e.starts_with("g.toml:13:") && e.contains("unknown field `tll`"),
            "{e}"
        );
        let https = GOOD.replace("http://127.0.0.1:3001", "https://x");
        let e = Config::parse(&https, "g.toml").unwrap_err().0;
        assert!(
            e.starts_with("g.toml:11:") && e.contains("only http://"),
            "{e}"
        );
        let dup = GOOD.replace("prefix = \"/\"", "prefix = \"/products\"");
        let e = Config::parse(&dup, "g.toml").unwrap_err().0;
        assert!(e.contains("route #2") && e.contains("`prefix`"), "{e}");
        let template = GOOD.replace("ttl = \"60s\"", "key = \"{host}\"");
        let e = Config::parse(&template, "g.toml").unwrap_err().0;
        assert!(e.contains("route #1 (products), field `cache.key`"), "{e}");
        assert!(
            Config::parse("listen = \"127.0.0.1:1\"", "g.toml")
                .unwrap_err()
                .0
                .contains("no [[route]]")
        );
        let shards = format!("log_shards = 65\n{GOOD}");
        let e = Config::parse(&shards, "g.toml").unwrap_err().0;
        assert!(e.contains("`log_shards`") && e.contains("65"), "{e}");
        let shards = format!("log_shards = 3\n{GOOD}");
        assert_eq!(
            Config::parse(&shards, "g.toml").unwrap().log_shards,
            Some(3)
        );
        let tracked = format!("track_foreign_writes = true\n{GOOD}");
        assert!(
            Config::parse(&tracked, "g.toml")
                .unwrap()
                .track_foreign_writes
        );
        assert!(!Config::parse(GOOD, "g.toml").unwrap().track_foreign_writes);
    }

    #[test]
    fn the_example_config_is_valid() {
        let text = include_str!("../../../examples/gateway.toml");
        let c = Config::parse(text, "examples/gateway.toml").unwrap();
        assert_eq!(c.routes.len(), 3);
        assert!(!c.routes[1].cached());
        for route in &c.routes {
            route.policy().unwrap();
        }
        // The container's default: reachable from outside it.
        let text = include_str!("../../../deploy/docker/gateway.toml");
        let c = Config::parse(text, "deploy/docker/gateway.toml").unwrap();
        assert!(c.listen.ip().is_unspecified(), "{}", c.listen);
        assert_eq!(c.routes.len(), 1);
    }

    #[test]
    fn the_admin_listener_defaults_to_loopback_beside_the_public_one() {
        let at = |text: &str| Config::parse(&format!("{text}\n{GOOD}"), "g.toml");
        let c = at("").unwrap();
        assert_eq!(c.admin_listen(), Some("127.0.0.1:9001".parse().unwrap()));
        let c = Config::parse(&GOOD.replace("127.0.0.1:9000", "0.0.0.0:0"), "g").unwrap();
        assert_eq!(c.admin_listen(), Some("127.0.0.1:0".parse().unwrap()));
        let c = Config::parse(&GOOD.replace("127.0.0.1:9000", "[::]:80"), "g").unwrap();
        assert_eq!(c.admin_listen(), Some("[::1]:81".parse().unwrap()));
        assert_eq!(at("admin_listen = \"off\"").unwrap().admin_listen(), None);
        let c = at("admin_listen = \"10.0.0.1:9100\"").unwrap();
        assert_eq!(c.admin_listen(), Some("10.0.0.1:9100".parse().unwrap()));
        let e = at("admin_listen = \"localhost\"").unwrap_err().0;
        assert!(
            e.contains("admin_listen") && e.contains("not an address"),
            "{e}"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("1GB").unwrap(), 1 << 30);
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("99999999999GiB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("99999999999999999d").is_err());
    }
}
