//! The backplane seam: how one instance tells every other instance to drop L1 entries.

mod memory;
mod wire;

use std::fmt::Debug;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::error::Error;

pub use memory::MemoryLog;

/// What to drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One key.
    Key(String),
    /// Every entry carrying a tag.
    Tag(String),
    /// The whole namespace.
    Clear,
}

/// One invalidation, as published by an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalidation {
    /// The publishing instance's id, so that it can skip its own messages.
    pub origin: u64,
    /// What to drop.
    pub target: Target,
}

impl Invalidation {
    /// The origin of a write made outside the cache's own instances and reported by the
    /// server ([`L2Store::track_writes`](crate::L2Store::track_writes)): no instance has this
    /// id.
    pub const FOREIGN: u64 = 0;

    /// The wire form: a small JSON object, `{"origin":"<hex>","op":"key|tag|clear","arg":…}`.
    pub fn encode(&self) -> Vec<u8> {
        wire::encode(self)
    }

    /// Parses the wire form; foreign or corrupt bytes are an [`Error::Decode`].
    pub fn decode(bytes: &[u8]) -> Result<Invalidation, Error> {
        wire::decode(bytes)
    }
}

/// Where an invalidation stands in a log: the part of the log it went to (0 for a log in one
/// part) and its sequence number there (gap-free, from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// The part of the log.
    pub part: usize,
    /// The entry's number in that part.
    pub seq: u64,
}

/// What a follower receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    /// Apply an invalidation.
    Apply(Invalidation),
    /// Invalidations may have been missed (a reconnect, a lagging reader): drop the whole L1
    /// of the namespace, the only safe answer to not knowing what changed.
    Resync,
    /// An instance released the load lease on a key that others wait on (its fill landed in
    /// L2, or its load failed): the waiting flights look at L2 now rather than at their next
    /// poll. Not an invalidation; logs that cannot tell simply never send it.
    Filled(String),
    /// The follower is caught up: everything appended to the log until `age` ago was
    /// delivered. Sent at least every [`heartbeat`](InvalidationLog::heartbeat) while the log
    /// is reachable, so a cache can bound how stale its L1 may be. `lag` is how long the newest
    /// entry just applied took to arrive (by the log's clock against ours), if there was one.
    CaughtUp {
        /// Append-to-delivery time of the newest entry applied, if any.
        lag: Option<std::time::Duration>,
        /// How long ago the whole log was last known caught up: zero when this report is the
        /// news; more when the log is read in parts (shards) and another part last reported
        /// earlier — a cache must not trust its L1 past what every part vouches for.
        age: std::time::Duration,
        /// How far the reporting part has been delivered, for logs that number their entries:
        /// once the cache has applied what came before this report, it can
        /// [`acknowledge`](InvalidationLog::acknowledge) that far.
        position: Option<Position>,
    },
}

/// An invalidation as an L2 store appends it to the log in the same step as the change it
/// announces — one round trip for a write and its log entry — when the log lives on the
/// store's server ([`InvalidationLog::beside`]). The shape is a durable stream's: the entry
/// goes to `stream`, numbered by the gap-free counter `sequence`, the stream kept to about
/// `max_len` entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogAppend {
    /// The server the log lives on, as its store names it: a store on another appends
    /// nothing and the cache publishes apart. (On a Redis Cluster, where the entry is always
    /// published apart, the connection the log writes on: a store on the same one leaves its
    /// wait for a replica to the log's where both wait on the same master.)
    pub server: String,
    /// The stream the entry goes to.
    pub stream: String,
    /// The counter that numbers the stream's entries without gaps.
    pub sequence: String,
    /// About how many entries the stream keeps.
    pub max_len: usize,
    /// The entry ([`Invalidation::encode`]).
    pub entry: Vec<u8>,
    /// The part of the log `stream` is (see [`Position`]).
    pub part: usize,
}

impl LogAppend {
    /// Where the entry stands once appended as number `seq` of its stream.
    pub fn at(&self, seq: u64) -> Position {
        Position {
            part: self.part,
            seq,
        }
    }
}

/// Where followers receive events; dropping it ends the subscription.
pub type Subscription = mpsc::UnboundedReceiver<LogEvent>;

/// The invalidation backplane. Implementations: [`MemoryLog`] (in-process default) and
/// `strata_redis::RedisStreamLog` (durable) and `strata_redis::RedisPubSub`.
#[async_trait]
pub trait InvalidationLog: Send + Sync + Debug + 'static {
    /// Sends `invalidation` to every follower of `namespace`, the sender's included; where it
    /// went, for a log that numbers its entries.
    async fn publish(
        &self,
        namespace: &str,
        invalidation: &Invalidation,
    ) -> Result<Option<Position>, Error>;

    /// Starts following `namespace`. When this returns, every later `publish` reaches the
    /// subscription (or, if the implementation loses messages, a [`LogEvent::Resync`] does).
    async fn follow(&self, namespace: &str) -> Result<Subscription, Error>;

    /// How often a follower reports [`LogEvent::CaughtUp`] while the log is reachable, idle or
    /// not; `None` (the default) if it never does. A cache with a
    /// [`max_staleness`](crate::HybridCacheBuilder::max_staleness) needs a log that reports.
    fn heartbeat(&self) -> Option<std::time::Duration> {
        None
    }

    /// `invalidation` as an entry an L2 store on the log's server can append in the same step
    /// as the change it announces ([`LogAppend`]); `None` (the default) where the log cannot be
    /// written that way: the cache then [`publish`](Self::publish)es it apart.
    async fn beside(
        &self,
        namespace: &str,
        invalidation: &Invalidation,
    ) -> Result<Option<LogAppend>, Error> {
        let _ = (namespace, invalidation);
        Ok(None)
    }

    /// Whether this log announces the ends of loads other instances wait on
    /// ([`LogEvent::Filled`]); default: no — waiters then look at L2 every few milliseconds
    /// instead of every few hundred.
    fn announces_load_ends(&self) -> bool {
        false
    }

    /// Whether this log takes acknowledgements ([`acknowledge`](Self::acknowledge),
    /// [`await_acknowledged`](Self::await_acknowledged)); default: no.
    fn acknowledges(&self) -> bool {
        false
    }

    /// Tells the log that `instance` has applied everything of `namespace`'s log up to
    /// `applied` (one sequence number per part): what it announced since is out of its L1.
    /// Also says the instance is alive; sent at least every
    /// [`heartbeat`](Self::heartbeat).
    async fn acknowledge(
        &self,
        namespace: &str,
        instance: u64,
        applied: &[u64],
    ) -> Result<(), Error> {
        let _ = (namespace, instance, applied);
        Ok(())
    }

    /// Waits until every live instance of `namespace` but `origin` has acknowledged
    /// `position`, for at most `within`; `Ok(true)` if they all did.
    async fn await_acknowledged(
        &self,
        namespace: &str,
        origin: u64,
        position: Position,
        within: std::time::Duration,
    ) -> Result<bool, Error> {
        let _ = (namespace, origin, position, within);
        Ok(false)
    }
}
