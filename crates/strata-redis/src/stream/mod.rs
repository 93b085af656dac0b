//! `RedisStreamLog`: the durable invalidation log on Redis Streams.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{classify_log, into_log_error};
use async_trait::async_trait;
use strata::Error;
use strata::invalidation::{
    Invalidation, InvalidationLog, LogAppend, LogEvent, Position as Delivered, Subscription,
};
use tokio::sync::mpsc;

use crate::config::RedisConfig;
use crate::connection::{Connection, RedisConnection};
use crate::log_shards::{self, caught_up, merge, shard_of};
use crate::reconnect::reconnect_backoff;
use crate::scripts::{AGREE, APPEND_LOG, LOG_TAIL};

mod pushed;

/// The version of the protocol (`docs/protocol.md`) this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Refuses a namespace written with a protocol this crate does not speak: reading it could
/// misread entries, and writing it could mislead newer instances.
fn check_protocol(namespace: &str, stored: Option<&str>) -> Result<(), Error> {
    match stored.map(str::parse::<u32>) {
        None | Some(Ok(PROTOCOL_VERSION)) => Ok(()),
        Some(Ok(v)) => Err(Error::Config(format!(
            "namespace `{namespace}` is written with protocol version {v}; this instance speaks \
             version {PROTOCOL_VERSION}: upgrade it to join the namespace"
        ))),
        Some(Err(_)) => Err(Error::Config(format!(
            "namespace `{namespace}`: its protocol version in Redis is {stored:?}, not a number"
        ))),
    }
}

/// Entries taken per read: enough to catch up quickly after a disconnect.
const BATCH: usize = 512;

/// Invalidations on a Redis stream per namespace, `<namespace>#log`: durable and ordered.
///
/// Each entry carries a gap-free sequence number (`<namespace>#log:seq`, bumped in the same
/// script that appends), and the same script pushes it to the followers (`SPUBLISH` on the
/// stream's sharded channel). A follower subscribes on a connection of its own (named
/// `strata-log:<namespace>:<pid>` in `CLIENT LIST`, `strata-log:<namespace>#<part>:<pid>` for
/// the parts of a split log but the first) and reads the stream only to catch up: after a
/// (re)connect, on a gap in the pushed numbers, and at each heartbeat if the stream is ahead.
/// Where the server refuses sharded pub/sub (before Redis 7.0, or an ACL without the
/// channel), it reads the stream with a blocking `XREAD` instead, which costs the server more
/// per entry and follower. Either way it remembers the last entry it applied; after a
/// disconnect it resumes from there, so
/// invalidations sent meanwhile are applied, not lost as with pub/sub. If the stream was
/// trimmed past that point (the sequence jumps), the follower emits [`LogEvent::Resync`] and
/// the cache drops its L1. Order comes from stream ids, assigned by Redis, never from clocks.
///
/// The stream is trimmed to about [`max_len`](Self::max_len) entries (default 10,000), so a
/// follower survives a disconnect during which up to that many invalidations were sent.
///
/// The same subscription (or blocking read) follows `<namespace>#filled`, where a
/// [`RedisStore`](crate::RedisStore) announces the release of a load lease that other
/// instances wait on: their waiting flights then look at L2 at once ([`LogEvent::Filled`])
/// instead of at their next poll.
///
/// A namespace whose invalidations are too many for one stream on one master can be split
/// into [`shards`](Self::shards): a key's invalidations go to the part its hash picks, and
/// every follower reads every part on a connection of its own (on a Redis Cluster, the parts
/// sit on different masters).
#[derive(Clone)]
pub struct RedisStreamLog {
    publisher: Connection,
    config: RedisConfig,
    max_len: usize,
    heartbeat: Duration,
    /// Shard counts configured here, by namespace.
    shards: Arc<HashMap<String, usize>>,
    /// Shard counts agreed with Redis, by namespace: looked up once per namespace.
    agreed: Arc<Mutex<HashMap<String, usize>>>,
    /// By namespace: the last look at its acknowledgements, shared by the writes waiting.
    looks: Arc<Mutex<HashMap<String, Arc<Looks>>>>,
}

/// `<namespace>#acks` as a look found it: instance id → its acknowledgement.
type Acks = Arc<Vec<(String, String)>>;

/// The looks at a namespace's acknowledgements (`HGETALL <namespace>#acks`): one at a time,
/// its answer shared by every write that waits meanwhile. Without it each waiting write sent
/// its own, back to back: a burst of writes, or an instance slow to acknowledge, multiplied
/// them.
#[derive(Default)]
struct Looks {
    /// Held while a look is in flight: when the last look began, and what it found.
    last: tokio::sync::Mutex<Option<(Instant, Acks)>>,
}

impl Looks {
    /// The acknowledgements under `key`, as a look begun after this call found them: one
    /// that another waiting write began meanwhile, or this call's own. (Not an older one: a
    /// field it shows past its life may have been refreshed since, and is removed on its
    /// word.) `None` if `deadline` passed first.
    async fn look(
        &self,
        publisher: &Connection,
        key: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Option<Acks>, Error> {
        // A look in flight now began before this call: the one after it will do.
        let asked = Instant::now();
        let Ok(mut last) = tokio::time::timeout_at(deadline, self.last.lock()).await else {
            return Ok(None);
        };
        if let Some((began, acks)) = last.as_ref()
            && *began >= asked
        {
            return Ok(Some(acks.clone()));
        }
        let began = Instant::now();
        let acks: Acks = Arc::new(
            redis::cmd("HGETALL")
                .arg(key)
                .query_async(&mut publisher.get())
                .await
                .map_err(|e| publisher.failed_log(e))?,
        );
        *last = Some((began, acks.clone()));
        Ok(Some(acks))
    }
}

impl std::fmt::Debug for RedisStreamLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStreamLog")
            .field("config", &self.config)
            .field("max_len", &self.max_len)
            .field("heartbeat", &self.heartbeat)
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}

impl RedisStreamLog {
    /// Connects to the Redis at `url` with default timeouts.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::connect_with(&RedisConfig::from_url(url)?).await
    }

    /// Connects with explicit settings.
    ///
    /// An instance with a [`RedisStore`](crate::RedisStore) on the same server should use
    /// [`sharing`](Self::sharing) instead.
    pub async fn connect_with(config: &RedisConfig) -> Result<Self, Error> {
        Ok(Self::on(Connection::open_log(config).await?, config))
    }

    /// The log on `store`'s connection: its appends, acknowledgements and looks at them go
    /// out in the same writes as the store's reads and fills. What an instance should use:
    /// on a second connection, the server reads and answers two sockets where one would do
    /// (four instances acknowledging writes, W5: 10 % of the server's CPU; BENCHMARKS.md,
    /// "One socket per instance"). The log's subscription (or blocking read) keeps a
    /// connection of its own either way.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), strata::Error> {
    /// use strata_redis::{RedisStore, RedisStreamLog};
    /// let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
    /// let cache = strata::HybridCache::builder("catalog")
    ///     .invalidation(RedisStreamLog::sharing(&store))
    ///     .l2(store)
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn sharing(store: &crate::RedisStore) -> Self {
        let (publisher, config) = store.connection();
        Self::on(publisher.clone(), config)
    }

    fn on(publisher: Connection, config: &RedisConfig) -> Self {
        RedisStreamLog {
            publisher,
            config: config.clone(),
            max_len: 10_000,
            heartbeat: Duration::from_secs(1),
            shards: Arc::default(),
            agreed: Arc::default(),
            looks: Arc::default(),
        }
    }

    /// Splits `namespace`'s log into `shards` parts (1 to
    /// [`MAX_LOG_SHARDS`](crate::MAX_LOG_SHARDS); default 1), for a namespace whose
    /// invalidations are more than one stream on one master serves (see the sizing guide in
    /// `docs/redis-cluster.md`). Each part keeps about [`max_len`](Self::max_len) entries.
    ///
    /// The count is stored in Redis by the first instance to use the namespace's log, and
    /// instances that configure nothing adopt it (a gateway following the namespace, say). An
    /// instance configured with another count is refused with [`Error::Config`] when it first
    /// follows or publishes; changing the count means stopping every instance of the
    /// namespace and deleting `<namespace>#log:shards` (`…{<namespace>}` on a cluster).
    #[must_use]
    pub fn shards(mut self, namespace: impl Into<String>, shards: usize) -> Self {
        Arc::make_mut(&mut self.shards).insert(namespace.into(), shards);
        self
    }

    /// Keeps about `max_len` entries per namespace (at least 1; trimming is approximate, in
    /// whole stream nodes, as `MAXLEN ~` does).
    #[must_use]
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len.max(1);
        self
    }

    /// How often an idle follower looks at the log (default 1 s, at least 10 ms): a pushed
    /// follower reads the newest entry on its subscription's connection, a reading one's
    /// blocking read returns empty. Each reports the follower caught up
    /// ([`LogEvent::CaughtUp`]), so this is how often an idle follower vouches for its L1: a
    /// cache's `max_staleness` must be at least twice it.
    #[must_use]
    pub fn heartbeat_every(mut self, every: Duration) -> Self {
        self.heartbeat = every.max(Duration::from_millis(10));
        self
    }

    /// How many parts `namespace`'s log has, as every instance agrees (see
    /// [`shards`](Self::shards)).
    async fn shard_count(&self, namespace: &str) -> Result<usize, Error> {
        if let Some(n) = self.agreed().get(namespace) {
            return Ok(*n);
        }
        let configured = self.shards.get(namespace).copied();
        let layout = self.publisher.layout();
        let key = layout.log_shards(namespace);
        let (stored, protocol): (Option<String>, Option<String>) = AGREE
            .key(&key)
            .key(layout.protocol(namespace))
            .arg(configured.unwrap_or(1))
            .arg(PROTOCOL_VERSION)
            .invoke_async(&mut self.publisher.get())
            .await
            .map_err(|e| self.publisher.failed_log(e))?;
        check_protocol(namespace, protocol.as_deref())?;
        let agreed = log_shards::agree(namespace, configured, stored.as_deref())?;
        if stored.is_none() {
            self.publisher
                .replicated(&key)
                .await
                .map_err(into_log_error)?;
        }
        self.agreed().insert(namespace.to_owned(), agreed);
        Ok(agreed)
    }

    /// The looks at `namespace`'s acknowledgements, shared by its waiting writes.
    fn looks(&self, namespace: &str) -> Arc<Looks> {
        let mut looks = self
            .looks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Looked up by `&str` first: the key is allocated once per namespace, not per write.
        if let Some(l) = looks.get(namespace) {
            return l.clone();
        }
        looks.entry(namespace.to_owned()).or_default().clone()
    }

    fn agreed(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        // A poisoned map of plain numbers is still right.
        self.agreed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A connection for one follower's blocking reads: its own, so a read that blocks holds
    /// up nobody else's commands, with a response timeout above the block time.
    async fn reader(&self, namespace: &str, shard: usize) -> Result<RedisConnection, Error> {
        let mut conn = self
            .config
            .dedicated(self.heartbeat)
            .await
            .map_err(into_log_error)?;
        self.name(&mut conn, namespace, shard).await?;
        Ok(conn)
    }

    /// Names a follower's connection, so operators can tell followers apart in `CLIENT LIST`:
    /// by namespace (and part), and by process. (A cluster connection reaches several nodes:
    /// left unnamed.)
    async fn name(
        &self,
        conn: &mut (impl redis::aio::ConnectionLike + Send),
        namespace: &str,
        shard: usize,
    ) -> Result<(), Error> {
        if self.config.is_cluster() {
            return Ok(());
        }
        let part = match shard {
            0 => String::new(),
            n => format!("#{n}"),
        };
        redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(format!(
                "strata-log:{namespace}{part}:{}",
                std::process::id()
            ))
            .exec_async(conn)
            .await
            .map_err(classify_log)
    }
}

#[async_trait]
impl InvalidationLog for RedisStreamLog {
    async fn publish(
        &self,
        namespace: &str,
        invalidation: &Invalidation,
    ) -> Result<Option<Delivered>, Error> {
        let shards = self.shard_count(namespace).await?;
        let part = shard_of(&invalidation.target, shards);
        let (log, sequence) = self.publisher.layout().log_shard(namespace, part, shards);
        let seq: u64 = APPEND_LOG
            .key(&log)
            .key(sequence)
            .arg(self.max_len)
            .arg(invalidation.encode())
            .invoke_async(&mut self.publisher.get())
            .await
            .map_err(|e| self.publisher.failed_log(e))?;
        // On a cluster: acknowledged once a replica has it, so a failover keeps it.
        self.publisher
            .replicated(&log)
            .await
            .map_err(into_log_error)?;
        Ok(Some(Delivered { part, seq }))
    }

    fn heartbeat(&self) -> Option<Duration> {
        Some(self.heartbeat)
    }

    fn acknowledges(&self) -> bool {
        true
    }

    /// It reads `<namespace>#filled`, where a `RedisStore` on the same server announces them.
    fn announces_load_ends(&self) -> bool {
        true
    }

    /// One `HSET` (or `HDEL`, leaving) on `<namespace>#acks`: the instance's field holds until
    /// when it counts as alive (three heartbeats on, by its clock) and how far it applied
    /// each part of the log.
    async fn acknowledge(
        &self,
        namespace: &str,
        instance: u64,
        applied: &[u64],
    ) -> Result<(), Error> {
        let key = self.publisher.layout().acks(namespace);
        let mut cmd = if applied.is_empty() {
            redis::cmd("HDEL")
        } else {
            redis::cmd("HSET")
        };
        cmd.arg(&key).arg(instance);
        if !applied.is_empty() {
            let alive_until = now_ms() + 3 * u64::try_from(self.heartbeat.as_millis()).unwrap_or(0);
            let seqs: Vec<String> = applied.iter().map(u64::to_string).collect();
            cmd.arg(format!("{alive_until}:{}", seqs.join(",")));
        }
        cmd.exec_async(&mut self.publisher.get())
            .await
            .map_err(|e| self.publisher.failed_log(e))
    }

    /// Reads `<namespace>#acks` (one `HGETALL`, shared with the writes waiting meanwhile) until
    /// every other live instance's field covers `position`: at once, again as soon as each
    /// reply is in for the first few looks, then every millisecond; fields past their life are
    /// removed.
    async fn await_acknowledged(
        &self,
        namespace: &str,
        origin: u64,
        position: Delivered,
        within: Duration,
    ) -> Result<bool, Error> {
        let key = self.publisher.layout().acks(namespace);
        let origin = origin.to_string();
        let deadline = tokio::time::Instant::now() + within;
        let shared = self.looks(namespace);
        let mut looks = 0;
        loop {
            if looks >= QUICK_LOOKS {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                tokio::time::sleep(ACK_POLL.min(left)).await;
            }
            looks += 1;
            let Some(acks) = shared.look(&self.publisher, &key, deadline).await? else {
                return Ok(false);
            };
            let now = now_ms();
            let (mut all, mut gone) = (true, Vec::new());
            for (instance, ack) in acks.iter().filter(|(i, _)| *i != origin) {
                match parse_ack(ack, position.part) {
                    Some((alive_until, _)) if alive_until < now => gone.push(instance),
                    Some((_, seq)) if seq >= position.seq => {}
                    _ => all = false,
                }
            }
            if !gone.is_empty() {
                // Instances that stopped saying they are alive: no longer waited for.
                let _ = redis::cmd("HDEL")
                    .arg(&key)
                    .arg(&gone)
                    .exec_async(&mut self.publisher.get())
                    .await;
            }
            if all {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
        }
    }

    async fn beside(
        &self,
        namespace: &str,
        invalidation: &Invalidation,
    ) -> Result<Option<LogAppend>, Error> {
        // On one server its store appends the entry in the same step. On a cluster the log's
        // slot is not the data's, so it is appended apart, but a store on the same connection
        // learns where (its own `WAIT` can then be left to the log's on a shared master).
        let Some(server) = self
            .publisher
            .identity()
            .or_else(|| self.publisher.cluster_name())
        else {
            return Ok(None);
        };
        let shards = self.shard_count(namespace).await?;
        let part = shard_of(&invalidation.target, shards);
        let (stream, sequence) = self.publisher.layout().log_shard(namespace, part, shards);
        Ok(Some(LogAppend {
            server: server.to_owned(),
            stream,
            sequence,
            max_len: self.max_len,
            entry: invalidation.encode(),
            part,
        }))
    }

    async fn follow(&self, namespace: &str) -> Result<Subscription, Error> {
        let shards = self.shard_count(namespace).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        // One part: its follower hands events to the cache itself. Several: through a merge,
        // which dates the reports that they caught up.
        let (parts, from_parts) = mpsc::unbounded_channel();
        let out = || {
            if shards == 1 {
                Out::Cache(tx.clone())
            } else {
                Out::Merge(parts.clone())
            }
        };
        let followers = (0..shards).map(|shard| {
            let (stream, sequence) = self.publisher.layout().log_shard(namespace, shard, shards);
            let follower = Follower {
                log: self.clone(),
                namespace: namespace.to_owned(),
                shard,
                stream,
                sequence,
                // Lease releases are announced once per namespace: part 0 reads them.
                filled_stream: (shard == 0).then(|| self.publisher.layout().filled(namespace)),
                events: out(),
            };
            follower.start()
        });
        // Every part's position is read before this returns: whatever is appended from now
        // on is ours to apply.
        let started = futures_util::future::try_join_all(followers).await?;
        for (follower, feed, position) in started {
            tokio::spawn(follower.run(feed, position));
        }
        if shards > 1 {
            tokio::spawn(merge(from_parts, tx, shards));
        }
        Ok(rx)
    }
}

/// Where a follower stands: the last entry applied and its sequence number, and the last
/// lease-release announcement seen (`<namespace>#filled`, read in the same `XREAD` by part
/// 0's follower).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Position {
    id: String,
    seq: u64,
    filled: String,
}

/// One entry as `XREAD`/`XREVRANGE` return it: id, then field/value pairs.
type RawEntry = (String, Vec<Vec<u8>>);

impl Position {
    /// The newest entry and the sequence number it carries, read together: a follower that
    /// starts here applies every entry appended later, and can tell if any is trimmed away
    /// before it reads it. Then the newest announcement of `filled`, for a follower that reads
    /// them from that stream (apart: another slot on a cluster; one missed is only a later
    /// wake-up; a pushed follower is pushed them and reads none).
    async fn tail(
        conn: &mut (impl redis::aio::ConnectionLike + Send),
        follower: &Follower,
        filled: Option<&str>,
    ) -> Result<Position, Error> {
        let (newest, seq): (Vec<RawEntry>, Option<u64>) = LOG_TAIL
            .key(&follower.stream)
            .key(&follower.sequence)
            .invoke_async(conn)
            .await
            .map_err(classify_log)?;
        let filled = match filled {
            Some(filled) => redis::cmd("XREVRANGE")
                .arg(filled)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(conn)
                .await
                .map_err(classify_log)?,
            None => Vec::new(),
        };
        let id = |entries: Vec<RawEntry>| {
            entries
                .into_iter()
                .next()
                .map_or_else(|| "0-0".into(), |(id, _)| id)
        };
        Ok(Position {
            id: id(newest),
            seq: seq.unwrap_or(0),
            filled: id(filled),
        })
    }
}

/// How many times a write waiting for acknowledgements looks at them again as soon as the
/// last look's reply is in, before it looks every [`ACK_POLL`]. The others' acknowledgements
/// come a round trip or two after the append (the push, their follower applying it, their
/// `HSET`), and Tokio's timer cannot wait less than a millisecond: it rounds a deadline up to
/// its next tick, so a 1 ms poll waited 1–2 ms, and W5's writes 2.2 ms at the median. Looking
/// back to back, they wait ~0.7 ms for ~2.2 `HGETALL`s instead of ~1 (BENCHMARKS.md, W5).
const QUICK_LOOKS: u32 = 8;

/// How often a write still waiting for acknowledgements after its quick looks looks at them.
const ACK_POLL: Duration = Duration::from_millis(1);

/// An acknowledgement's fields: until when its instance counts as alive, and how far it
/// applied `part`; `None` if foreign.
fn parse_ack(ack: &str, part: usize) -> Option<(u64, u64)> {
    let (alive_until, seqs) = ack.split_once(':')?;
    let seq = seqs
        .split(',')
        .nth(part)
        .map_or(Some(0), |s| s.parse().ok())?;
    Some((alive_until.parse().ok()?, seq))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How long ago (by our wall clock) Redis appended the entry `id` (`<ms>-<seq>`, Redis' clock):
/// clock skew between the hosts is included, and a negative difference reads as zero.
fn lag_of(id: &str) -> Duration {
    let appended: u64 = id
        .split_once('-')
        .and_then(|(ms, _)| ms.parse().ok())
        .unwrap_or(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Duration::from_millis(now.saturating_sub(appended))
}

/// The fields of one log entry.
struct Entry<'a> {
    seq: u64,
    data: &'a [u8],
}

impl<'a> Entry<'a> {
    /// `s` and `d` from the field/value list; `None` for anything else (a foreign writer).
    fn parse(fields: &'a [Vec<u8>]) -> Option<Entry<'a>> {
        let (mut seq, mut data) = (None, None);
        for pair in fields.chunks_exact(2) {
            match pair[0].as_slice() {
                b"s" => seq = std::str::from_utf8(&pair[1]).ok()?.parse().ok(),
                b"d" => data = Some(pair[1].as_slice()),
                _ => {}
            }
        }
        Some(Entry {
            seq: seq?,
            data: data?,
        })
    }
}

/// The follower of one part of a namespace's log, kept alive across disconnects until the
/// cache's subscription is dropped.
struct Follower {
    log: RedisStreamLog,
    namespace: String,
    shard: usize,
    stream: String,
    sequence: String,
    filled_stream: Option<String>,
    events: Out,
}

/// Where a part's follower sends its events.
enum Out {
    /// Straight to the cache (a log in one part).
    Cache(mpsc::UnboundedSender<LogEvent>),
    /// To the merge of the parts.
    Merge(mpsc::UnboundedSender<(usize, LogEvent)>),
}

impl Out {
    fn send(&self, shard: usize, event: LogEvent) -> bool {
        match self {
            Out::Cache(tx) => tx.send(event).is_ok(),
            Out::Merge(tx) => tx.send((shard, event)).is_ok(),
        }
    }

    async fn closed(&self) {
        match self {
            Out::Cache(tx) => tx.closed().await,
            Out::Merge(tx) => tx.closed().await,
        }
    }
}

/// How a part's follower hears of new entries.
enum Feed {
    /// Pushed by the server as they are appended ([`pushed`]); the stream is read to catch up.
    Pushed(crate::pubsub::Subscribed),
    /// Read with a blocking `XREAD` (a server without sharded pub/sub, or a user not allowed
    /// the channel).
    Polled(RedisConnection),
}

/// Why a follower left its connection.
enum Stopped {
    /// The connection failed, or the server unsubscribed it: reconnect.
    Lost,
    /// The cache is gone.
    Gone,
}

impl Follower {
    /// Its feed and where it starts: after the newest entry.
    async fn start(self) -> Result<(Follower, Feed, Position), Error> {
        let (feed, position) = self.connect(0).await?;
        Ok((self, feed, position))
    }

    /// A feed — pushed where the server can, else read — and the log's tail, read on it.
    async fn connect(&self, attempt: usize) -> Result<(Feed, Position), Error> {
        if let Some(mut sub) = self.subscribe(attempt).await? {
            let tail = Position::tail(&mut sub.conn, self, None).await?;
            return Ok((Feed::Pushed(sub), tail));
        }
        let mut conn = self.log.reader(&self.namespace, self.shard).await?;
        let tail = Position::tail(&mut conn, self, self.filled_stream.as_deref()).await?;
        Ok((Feed::Polled(conn), tail))
    }

    /// Passes an event on; `false` when the cache is gone.
    fn send(&self, event: LogEvent) -> bool {
        self.events.send(self.shard, event)
    }

    /// What has been delivered of this part: as far as `position`.
    fn delivered(&self, position: &Position) -> Option<Delivered> {
        Some(Delivered {
            part: self.shard,
            seq: position.seq,
        })
    }

    async fn run(self, mut feed: Feed, mut position: Position) {
        // Where this part starts: everything before is (vacuously) applied.
        if !self.send(caught_up(None, self.delivered(&position))) {
            return;
        }
        loop {
            let stopped = match &mut feed {
                Feed::Pushed(sub) => self.follow_pushed(sub, &mut position).await,
                Feed::Polled(conn) => self.follow_polled(conn, &mut position).await,
            };
            if matches!(stopped, Stopped::Gone) {
                return;
            }
            match self.reconnect(&mut position).await {
                Some(f) => feed = f,
                None => return,
            }
        }
    }

    /// Reads the log with blocking `XREAD`s until the connection fails or the cache is gone.
    async fn follow_polled(&self, conn: &mut RedisConnection, position: &mut Position) -> Stopped {
        loop {
            let read = tokio::select! {
                read = self.read(conn, position) => read,
                () = self.events.closed() => return Stopped::Gone,
            };
            let streams = match read {
                Ok(streams) => streams,
                Err(e) => {
                    tracing::warn!(stream = %self.stream, error = %e, "invalidation log read failed; reconnecting");
                    return Stopped::Lost;
                }
            };
            let mut read = 0;
            for (stream, entries) in streams {
                let is_log = stream == self.stream;
                read += if is_log { entries.len() } else { 0 };
                for (id, fields) in entries {
                    let applied = if is_log {
                        let send = |event| self.send(event);
                        apply(&send, &self.stream, position, id, Entry::parse(&fields))
                    } else {
                        position.filled = id;
                        self.announce(&fields)
                    };
                    if !applied {
                        return Stopped::Gone;
                    }
                }
            }
            // A full batch means more is waiting: caught up only once a read drains the log
            // (or times out empty, the idle heartbeat).
            if read < BATCH {
                let lag = (read > 0).then(|| lag_of(&position.id));
                if !self.send(caught_up(lag, self.delivered(position))) {
                    return Stopped::Gone;
                }
            }
        }
    }

    /// Passes on a lease-release announcement; `false` when the cache is gone.
    fn announce(&self, fields: &[Vec<u8>]) -> bool {
        let key = fields
            .chunks_exact(2)
            .find(|pair| pair[0] == b"k")
            .and_then(|pair| String::from_utf8(pair[1].clone()).ok());
        match key {
            Some(key) => self.send(LogEvent::Filled(key)),
            None => true, // foreign: ignored
        }
    }

    /// The next entries of the log and of the announcements, by stream name.
    async fn read(
        &self,
        conn: &mut RedisConnection,
        after: &Position,
    ) -> Result<Vec<(String, Vec<RawEntry>)>, Error> {
        let mut xread = redis::cmd("XREAD");
        xread
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(u64::try_from(self.log.heartbeat.as_millis()).unwrap_or(u64::MAX))
            .arg("STREAMS")
            .arg(&self.stream);
        match &self.filled_stream {
            Some(filled) => xread.arg(filled).arg(&after.id).arg(&after.filled),
            None => xread.arg(&after.id),
        };
        let reply: Option<Vec<(String, Vec<RawEntry>)>> =
            xread.query_async(conn).await.map_err(classify_log)?;
        Ok(reply.unwrap_or_default())
    }

    /// A new feed, retried with backoff; `None` when the cache is gone.
    ///
    /// Normally the follower resumes after `position`. If the stream lost entries instead —
    /// it is gone, or its sequence is behind ours (a Redis restarted without persistence, a
    /// failover to a replica that lagged) — what we had not read is lost with it: resync,
    /// and follow the new stream from its tail.
    async fn reconnect(&self, position: &mut Position) -> Option<Feed> {
        let mut backoff = reconnect_backoff();
        for attempt in 1.. {
            let delay = backoff.next().unwrap_or(Duration::from_secs(5));
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.events.closed() => return None,
            }
            let (feed, tail) = match self.connect(attempt).await {
                Ok(connected) => connected,
                Err(e) => {
                    tracing::debug!(stream = %self.stream, error = %e, "invalidation log reconnect failed");
                    continue;
                }
            };
            if tail.seq < position.seq {
                tracing::warn!(stream = %self.stream, "invalidation log lost entries while away; dropping L1");
                if !self.send(LogEvent::Resync) {
                    return None;
                }
                *position = tail;
            } else {
                tracing::info!(stream = %self.stream, after = %position.id, "invalidation log reconnected; resuming");
            }
            return Some(feed);
        }
        None
    }
}

/// Applies one entry (`None`: a foreign one, skipped), passing events to `send`; `false`
/// when the cache is gone.
fn apply(
    send: &dyn Fn(LogEvent) -> bool,
    stream: &str,
    position: &mut Position,
    id: String,
    entry: Option<Entry<'_>>,
) -> bool {
    let Some(entry) = entry else {
        tracing::warn!(stream = %stream, id, "ignoring a foreign log entry");
        position.id = id;
        return true;
    };
    // A jump in the sequence means entries we never read were trimmed (or the counter was
    // lost): anything may have changed.
    if entry.seq != position.seq + 1 {
        tracing::warn!(stream = %stream, after = ?position.seq, next = entry.seq, "invalidation log gap; dropping L1");
        if !send(LogEvent::Resync) {
            return false;
        }
    }
    let event = match Invalidation::decode(entry.data) {
        Ok(inv) => Some(LogEvent::Apply(inv)),
        Err(e) => {
            tracing::warn!(stream = %stream, id, error = %e, "ignoring an undecodable log entry");
            None
        }
    };
    position.id = id;
    position.seq = entry.seq;
    event.is_none_or(send)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_acknowledgement_reads_as_documented() {
        assert!(strata_testkit::protocol::says(
            "`1700000003000:17,4` says \"alive until 1,700,000,003,000; applied part 0 up to 17 \
             and part 1 up to 4\""
        ));
        assert_eq!(
            parse_ack("1700000003000:17,4", 0),
            Some((1_700_000_003_000, 17))
        );
        assert_eq!(
            parse_ack("1700000003000:17,4", 1),
            Some((1_700_000_003_000, 4))
        );
    }

    fn fields(pairs: &[(&str, &str)]) -> Vec<Vec<u8>> {
        pairs
            .iter()
            .flat_map(|(f, v)| [f.as_bytes().to_vec(), v.as_bytes().to_vec()])
            .collect()
    }

    #[test]
    fn entries_parse_and_foreign_ones_are_refused() {
        let e = fields(&[("s", "7"), ("d", "{}")]);
        let entry = Entry::parse(&e).unwrap();
        assert_eq!((entry.seq, entry.data), (7, &b"{}"[..]));
        for bad in [
            fields(&[("d", "{}")]),
            fields(&[("s", "x"), ("d", "{}")]),
            fields(&[("s", "1")]),
            vec![b"s".to_vec()],
        ] {
            assert!(Entry::parse(&bad).is_none());
        }
    }

    #[test]
    fn a_sequence_jump_is_a_resync() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let send = |event| tx.send(event).is_ok();
        let inv = Invalidation {
            origin: 1,
            target: strata::invalidation::Target::Key("k".into()),
        };
        let data = String::from_utf8(inv.encode()).unwrap();
        let mut position = Position {
            id: "1-0".into(),
            seq: 4,
            filled: "0-0".into(),
        };
        let entry = |seq: &str| fields(&[("s", seq), ("d", &data)]);
        assert!(apply(
            &send,
            "ns#log",
            &mut position,
            "2-0".into(),
            Entry::parse(&entry("5"))
        ));
        assert_eq!(rx.try_recv().unwrap(), LogEvent::Apply(inv.clone()));
        assert!(apply(
            &send,
            "ns#log",
            &mut position,
            "9-0".into(),
            Entry::parse(&entry("9"))
        ));
        assert_eq!(rx.try_recv().unwrap(), LogEvent::Resync);
        assert_eq!(rx.try_recv().unwrap(), LogEvent::Apply(inv));
        assert_eq!(
            position,
            Position {
                id: "9-0".into(),
                seq: 9,
                filled: "0-0".into(),
            }
        );
    }
}
