//! Redis for Strata: the shared L2 store and the invalidation backplane.
//!
//! ```no_run
//! # async fn run() -> Result<(), strata::Error> {
//! use strata_redis::{RedisConfig, RedisStore, RedisStreamLog};
//!
//! let config = RedisConfig::from_url("redis://127.0.0.1:6379")?;
//! let store = RedisStore::connect_with(&config).await?;
//! let cache = strata::HybridCache::builder("product-service")
//!     .invalidation(RedisStreamLog::sharing(&store)) // on the store's connection
//!     .l2(store)
//!     .build()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! - [`RedisStore`]: values under `<namespace>:<key>`, tag indexes under `<namespace>#tag:<tag>`,
//!   one auto-reconnecting connection (on one server our own, lean one: the commands sent at
//!   the same moment leave together in one write, fewer turns of Redis's event loop, each
//!   carrying more), Lua for multi-key atomicity. One round trip
//!   per step: an L1 miss is one `SET <key> <lease record> NX GET PX <ttl>` — a hit answered as
//!   `GET` would, a miss leaving the reader's load lease in the key (single-flight across
//!   instances, and the fence of its fill); a fill is one script storing only if that lease is
//!   still there (the fills that meet on their way share one call: entering a script is a
//!   third of a fill's cost to the server) — or, where the server compares by itself (Valkey
//!   8.1, Redis 8.4: `SET … IFEQ`, read from `INFO server`), one plain `SET <key> <value> IFEQ
//!   <lease record> GET`;
//!   an invalidation is one `UNLINK`, or one script that also appends its log entry when the
//!   log lives on the same server.
//! - [`RedisLease`]: the lease taken to refresh a value L2 still holds (stale-while-revalidate,
//!   fail-safe), `<namespace>#lease:<key>` taken with `SET NX PX` and an owner token, released
//!   by compare-and-delete (by the refresh's fill itself).
//! - [`RedisStreamLog`]: the durable invalidation log, a stream per namespace
//!   (`<namespace>#log`); a follower resumes where it left off after a disconnect, and drops its
//!   L1 only if entries it had not read were trimmed away. It also wakes the flights that wait on
//!   another instance's lease as soon as that load ends, and keeps the acknowledgements of
//!   [acknowledged writes](strata::HybridCacheBuilder::acknowledged_writes) in
//!   `<namespace>#acks`.
//! - [`RedisPubSub`]: the lighter alternative, invalidations on
//!   `strata:invalidate:<namespace>` (sharded on a cluster); a follower that lost its
//!   connection drops its L1 when it comes back, since it may have missed messages.
//! - [`CompatChannel`]: wraps either log so that key invalidations also travel as the plain
//!   pub/sub JSON other stacks use, `{"service","key","timestamp"}` on `cache:invalidate`, both
//!   ways.
//! - [`RedisWriteQueue`]: write-behind's durable queue, a stream per namespace
//!   (`<namespace>#wb`) with a consumer group; entries that fail every attempt go to
//!   `<namespace>#wb:dead`.
//! - [`RedisConfig`]: `redis://`, `rediss://` (TLS via rustls, custom CA, mutual TLS),
//!   `redis+sentinel://` (the master found through Sentinel, followed across failovers) and
//!   `redis+cluster://` (a Redis Cluster through its seed nodes), ACL user and password,
//!   database, connect and command timeouts; never prints secrets. TLS and Cluster are cargo
//!   features (`tls`, `cluster`), both on by default; a URL that needs one that is off is a
//!   clear [`Error::Config`](strata::Error::Config).
//!
//! # Redis Cluster
//! Everything above runs on a cluster (`redis+cluster://host:port,host:port`). A script may
//! touch one slot only, so the keys that change together share one through hash tags: data
//! keys stay `<namespace>:<key>` (a load's lease record lives in the data key itself); a
//! key's refresh lease goes to its slot (`<namespace>#lease:{<namespace>:<key>}`); a
//! namespace's log, its sequence, the lease-release stream, the acknowledgements and the
//! write-behind streams share the slot of `{<namespace>}` (`<namespace>#log{<namespace>}`,
//! …). What cannot share a slot is ordered so the guarantees hold: a tag's index is written
//! before the value (a tag invalidated in between deletes the key's lease record, which
//! refuses the fill) and emptied member by member; the log entry of a write is appended after
//! it, apart; `MGET`s are split by slot by the client; a clear scans every master. The client follows `MOVED`/`ASK` and refreshes its slot map. A namespace whose
//! invalidations outgrow one master splits its log into parts on several
//! ([`RedisStreamLog::shards`]). [`RedisConfig::connect`] gives a connection for commands of
//! your own to a server or a cluster alike ([`RedisConnection`]).
//!
//! # Permissions
//! With Redis ACLs, Strata needs, for a namespace `NS`:
//! ```text
//! user app on >PASSWORD ~NS:* ~NS#* &strata:invalidate:NS &NS#* -@all +get +mget +set +unlink +sadd +smembers +pttl +pexpire +incr +scan +publish +subscribe +evalsha +eval +script|load +ping +xadd +xread +xrange +xrevrange +spublish +ssubscribe +client|setname +info
//! ```
//! (`+info`: which `SET` options the server has, read once per connection — without it every
//! L2 read goes through a script, as on servers before 7.0, with a warning in the log;
//! `&NS#*`, `+spublish` and `+ssubscribe`: invalidations pushed to the followers — without
//! them followers read the log with a blocking `XREAD`, which costs the server more, with a
//! warning in the log)
//! and, for acknowledged writes, `+hset +hgetall +hdel`; for tracking foreign writes
//! (`track_foreign_writes`, see `docs/protocol.md` §6), `+client|tracking +client|id`; for
//! [`StatsReporter`], `+hincrby +hset +zincrby +zremrangebyrank`, and for `strata stats` and
//! `strata top`, `+hgetall +zrevrange`; for write-behind, `+xgroup|create +xreadgroup +xautoclaim +xack +xdel +multi +exec`;
//! on a cluster, also `+cluster|slots +cluster|nodes +srem +wait +exists`.

// Without the `cluster` feature the code for clusters stays, made unreachable by its type (a
// cluster connection with no values, `no_cluster.rs`): these lints would only say that.
#![cfg_attr(
    not(feature = "cluster"),
    allow(unreachable_code, unused_variables, unused_mut, dead_code)
)]

mod autopipeline;
mod client_tracking;
mod compat;
mod config;
mod connection;
mod error;
mod fill_batch;
mod layout;
mod lease;
mod log_shards;
#[cfg(not(feature = "cluster"))]
mod no_cluster;
mod pubsub;
mod reconnect;
mod requeue;
mod resp;
mod scripts;
mod stats;
mod store;
mod stream;
mod tracking;
mod wire;
mod write_queue;

pub use compat::{CompatChannel, DEFAULT_COMPAT_CHANNEL};
pub use config::RedisConfig;
pub use connection::{RedisConnection, ServerFeatures};
pub use lease::RedisLease;
pub use log_shards::MAX_LOG_SHARDS;
pub use pubsub::{RedisPubSub, channel};
pub use scripts::protocol_scripts;
pub use stats::{
    HOT_KEPT, NamespaceHotKeys, NamespaceStats, StatsReader, StatsReporter, hot_key, stats_key,
};
pub use store::RedisStore;
pub use stream::{PROTOCOL_VERSION, RedisStreamLog};
pub use write_queue::RedisWriteQueue;

/// The reply parser of the engine's connection, for the fuzz target only (feature
/// `fuzzing`): the first whole reply in `bytes` and its length.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn parse_reply(bytes: &[u8]) -> redis::RedisResult<Option<(redis::Value, usize)>> {
    resp::parse(bytes)
}
