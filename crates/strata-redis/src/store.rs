//! `RedisStore`: the L2 on Redis.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use strata::envelope::{lease_holder, lease_record, lease_waited};
use strata::invalidation::Subscription;
use strata::keys::namespace_patterns;
use strata::{
    Error, Fence, L2Store, Lease, LogAppend, Position, Read, ReplicaWait, WriteMode, Written,
};

use crate::config::RedisConfig;
use crate::connection::Connection;
use crate::fill_batch::{FillBatch, Filled};
use crate::layout::Layout;
use crate::lease::RedisLease;
use crate::resp::Arg;
use crate::scripts::{
    DELETE_TAG, FILL, FILL_IN_SLOT, INDEX_TAG, INVALIDATE, READ, RELEASE_RECORD,
    RELEASE_RECORD_IN_SLOT, REPLACE,
};
use crate::tracking::Tracker;

/// Members of a tag invalidated at once on a cluster (each a script on its key's master).
const TAG_CONCURRENCY: usize = 64;

/// Strata's L2 on a Redis server: one multiplexed, auto-reconnecting connection, pipelined by
/// the client, with connect and command timeouts.
///
/// Round trips: an L1 miss is one command — `SET <key> <lease record> NX GET PX <ttl>`,
/// which answers a hit with the value as `GET` would and, on a miss, leaves the reader's
/// lease record in the key (Redis 7.0 on; a script on older servers); a fill is one script
/// that stores only if that record is still there (on one server, the fills that meet on
/// their way go as one call of it); an invalidation is one `UNLINK`, or one
/// script that also appends it to the log when the [`RedisStreamLog`](crate::RedisStreamLog)
/// lives on the same server.
///
/// On a Redis Cluster (`redis+cluster://`) the same guarantees hold: what a script changes
/// together lives in one slot (see the crate documentation for the key layout), the lease
/// record in the data key itself; a tag's index, in its own slot, is written before the
/// value, and its members are invalidated each in its own slot; multi-key reads (`MGET`)
/// are split by slot by the client. The log lives in another slot than the data there, so
/// its entries are appended apart.
///
/// Keys follow [`strata::keys`]: `<namespace>:<key>` for values, `<namespace>#tag:<tag>` for
/// tag indexes (sets), so a namespace can be scanned, cleared and ACL-restricted by prefix.
#[derive(Clone)]
pub struct RedisStore {
    conn: Connection,
    config: RedisConfig,
    /// Server-assisted invalidation, started by the first cache that asks for it.
    tracker: Arc<tokio::sync::Mutex<Option<Arc<Tracker>>>>,
    /// Misses' fills, sent together on one server.
    fills: FillBatch,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// `SET key value PX ttl`: a write with nothing else to do in the same step.
    async fn plain_set(&self, data: &str, value: &[u8], ttl: Duration) -> Result<(), Error> {
        let set = [
            "SET".into(),
            data.into(),
            value.into(),
            "PX".into(),
            ttl_ms(ttl).into(),
        ];
        self.conn
            .get()
            .call(&set)
            .await
            .map_err(|e| self.conn.failed(e))
    }

    /// A miss's fill in one step with the fewest arguments: the plain command where the server
    /// compares for us (`SET … IFEQ`: Valkey 8.1, Redis 8.4), else the small script
    /// [`FILL_LEASED`](crate::scripts::FILL_LEASED) (Redis 7). Stored if the data key still
    /// holds this load's lease record, left as it was otherwise. `None` when [`FILL`] must do
    /// it: the fill releases a refresh lease, the server predates `SET … XX GET`, or `IFEQ`
    /// found the record waited on (its end is announced; the script compares it again).
    #[allow(clippy::too_many_arguments)]
    async fn fill_in_place(
        &self,
        namespace: &str,
        data: &str,
        value: &[u8],
        ttl: Duration,
        fence: &Fence,
        refresh_lease: Option<u64>,
        lease_ttl: Duration,
    ) -> Result<Option<InPlace>, Error> {
        let Fence::Lease(token) = fence else {
            return Ok(None);
        };
        if refresh_lease.is_some() {
            return Ok(None);
        }
        let record = lease_record(*token);
        if self.conn.set_ifeq() {
            self.fill_ifeq(data, value, ttl, &record).await
        } else if self.conn.set_nx_get() {
            self.fill_leased(namespace, data, value, ttl, record, lease_ttl)
                .await
                .map(Some)
        } else {
            Ok(None)
        }
    }

    /// [`fill_in_place`](Self::fill_in_place) where the server compares: `SET … IFEQ`.
    async fn fill_ifeq(
        &self,
        data: &str,
        value: &[u8],
        ttl: Duration,
        record: &[u8],
    ) -> Result<Option<InPlace>, Error> {
        let fill = [
            "SET".into(),
            data.into(),
            value.into(),
            "IFEQ".into(),
            record.into(),
            "GET".into(),
            "PX".into(),
            ttl_ms(ttl).into(),
        ];
        let old: Option<Vec<u8>> = self
            .conn
            .get()
            .call(&fill)
            .await
            .map_err(|e| self.conn.failed(e))?;
        Ok(match old {
            Some(old) if old[..] == *record => Some(InPlace::stored(true)),
            Some(old) if old.strip_suffix(b"W") == Some(record) => None,
            // Overtaken (an invalidation, a write, another load's lease) or expired.
            _ => Some(InPlace::stored(false)),
        })
    }

    /// [`fill_in_place`](Self::fill_in_place) where it cannot:
    /// [`FILL_LEASED`](crate::scripts::FILL_LEASED), with the fills on their way meanwhile on
    /// one server ([`FillBatch`]; the script announces the end of a load waited on there),
    /// alone on a cluster (where the caller announces).
    async fn fill_leased(
        &self,
        namespace: &str,
        data: &str,
        value: &[u8],
        ttl: Duration,
        record: [u8; 12],
        lease_ttl: Duration,
    ) -> Result<InPlace, Error> {
        let (ttl, lease_ttl) = (ttl_ms(ttl), ttl_ms(lease_ttl));
        let filled = self
            .fills
            .fill(namespace, data, value, ttl, record, lease_ttl)
            .await?;
        Ok(InPlace {
            stored: filled != Filled::Overtaken,
            announce: filled == Filled::StoredWaitedOn,
        })
    }

    /// What a fill done in place leaves to do: `key`'s waiters told, if it replaced a record
    /// waited on. Whether it stored.
    async fn finish_in_place(
        &self,
        done: InPlace,
        namespace: &str,
        key: &str,
    ) -> Result<bool, Error> {
        if done.announce {
            announce_filled(&self.conn, namespace, key).await?;
        }
        Ok(done.stored)
    }

    /// The arguments of [`FILL`] and [`FILL_IN_SLOT`] (see `FILL_BODY`); `scratch` keeps
    /// the fence's bytes when they are made here.
    #[allow(clippy::too_many_arguments)]
    fn fill_args<'a>(
        &self,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
        fence: &'a Fence,
        scratch: &'a mut FenceScratch,
        lease: Option<u64>,
        lease_ttl: Duration,
    ) -> [Arg<'a>; 8] {
        let [kind, compared] = fence_args(fence, scratch);
        [
            value.into(),
            ttl_ms(ttl).into(),
            kind,
            compared,
            key.into(),
            lease.map_or(Arg::Bytes(b""), Arg::Int),
            (if self.conn.set_nx_get() { "1" } else { "" }).into(),
            ttl_ms(lease_ttl).into(),
        ]
    }

    /// Connects to the Redis at `url` with default timeouts.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::connect_with(&RedisConfig::from_url(url)?).await
    }

    /// Connects with explicit settings. Fails if the server cannot be reached within the
    /// connect timeout or refuses the credentials.
    pub async fn connect_with(config: &RedisConfig) -> Result<Self, Error> {
        let conn = Connection::open(config).await?;
        Ok(RedisStore {
            fills: FillBatch::new(conn.clone(), !config.is_cluster()),
            conn,
            config: config.clone(),
            tracker: Arc::default(),
        })
    }

    /// The connection and its settings, for a log sharing them.
    pub(crate) fn connection(&self) -> (&Connection, &RedisConfig) {
        (&self.conn, &self.config)
    }

    /// Unlinks every key matching `pattern`: on one server, or on each master of a cluster.
    async fn unlink_matching(&self, pattern: &str) -> Result<u64, Error> {
        let mut removed = 0;
        let mut scan = self.conn.scan(pattern).await?;
        while let Some(keys) = scan.next_page().await? {
            if !keys.is_empty() {
                let n: u64 = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut self.conn.get())
                    .await
                    .map_err(|e| self.conn.failed(e))?;
                removed += n;
            }
        }
        Ok(removed)
    }
}

/// A fill done in place ([`RedisStore::fill_in_place`]).
#[derive(Debug, Clone, Copy)]
struct InPlace {
    stored: bool,
    /// It replaced a record waited on, and the load's end is still to be announced (by the
    /// caller: the step itself could not).
    announce: bool,
}

impl InPlace {
    fn stored(stored: bool) -> Self {
        InPlace {
            stored,
            announce: false,
        }
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The refresh lease's key as a fill names it: only a fill that releases the lease (it has
/// the token) touches it; otherwise the data key stands in, named but untouched — one key
/// name less to build per miss.
fn refresh_key<'a>(
    l: Layout,
    namespace: &str,
    key: &str,
    data: &'a str,
    lease: Option<u64>,
) -> Cow<'a, str> {
    match lease {
        Some(_) => Cow::Owned(l.lease(namespace, key)),
        None => Cow::Borrowed(data),
    }
}

/// Room for a fence's bytes made on the spot: a lease record (12 bytes) or a stamp (8).
type FenceScratch = [u8; 12];

/// A fence as the fill scripts take it, two arguments: kind and what it compares with (see
/// `scripts::FENCE`), made in `scratch` when it is not in the fence.
fn fence_args<'a>(fence: &'a Fence, scratch: &'a mut FenceScratch) -> [Arg<'a>; 2] {
    let (kind, compared): (&str, &[u8]) = match fence {
        Fence::Lease(token) => {
            *scratch = lease_record(*token);
            ("L", &scratch[..])
        }
        Fence::Stamp(stamp) => {
            scratch[..8].copy_from_slice(&stamp.to_le_bytes());
            ("S", &scratch[..8])
        }
        Fence::Bytes(bytes) => ("B", &bytes[..]),
        Fence::None => ("N", b""),
    };
    [kind.into(), compared.into()]
}

/// What a flight's read found: the data key's bytes (or nothing) as `SET … NX GET` returns
/// them, for the reader holding `lease`.
fn read_of(value: Option<Vec<u8>>, lease: Option<u64>) -> Read {
    match value {
        None if lease.is_some() => Read::Leased,
        None => Read::Absent,
        Some(v) => match lease_holder(&v) {
            Some(holder) if Some(holder) == lease => Read::Leased,
            Some(_) => Read::Loading {
                waited_on: lease_waited(&v),
            },
            None => Read::Value(Bytes::from(v)),
        },
    }
}

/// A value as `get` returns it: a lease record reads as nothing.
fn value_of(value: Option<Vec<u8>>) -> Option<Bytes> {
    value.filter(|v| lease_holder(v).is_none()).map(Bytes::from)
}

#[async_trait]
impl L2Store for RedisStore {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Bytes>, Error> {
        let value: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.conn.layout().data(namespace, key))
            .query_async(&mut self.conn.get())
            .await
            .map_err(|e| self.conn.failed(e))?;
        Ok(value_of(value))
    }

    async fn get_many(&self, namespace: &str, keys: &[&str]) -> Result<Vec<Option<Bytes>>, Error> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let full: Vec<String> = keys
            .iter()
            .map(|k| self.conn.layout().data(namespace, k))
            .collect();
        // On a cluster the client splits this by slot and puts the answers back in order.
        let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(&full)
            .query_async(&mut self.conn.get())
            .await
            .map_err(|e| self.conn.failed(e))?;
        Ok(values.into_iter().map(value_of).collect())
    }

    async fn read(
        &self,
        namespace: &str,
        key: &str,
        lease: Option<(u64, Duration)>,
        wait: bool,
    ) -> Result<Read, Error> {
        let l = self.conn.layout();
        let data = l.data(namespace, key);
        let Some((token, ttl)) = lease else {
            return Ok(read_of(self.get_raw(&data).await?, None));
        };
        let value: Option<Vec<u8>> = if !wait && self.conn.set_nx_get() {
            // The common case, a plain command: a hit costs what a `GET` does.
            let record = lease_record(token);
            let read = [
                "SET".into(),
                (&data).into(),
                record[..].into(),
                "NX".into(),
                "GET".into(),
                "PX".into(),
                ttl_ms(ttl).into(),
            ];
            self.conn.get().call(&read).await
        } else {
            READ.key(&data)
                .arg(&lease_record(token)[..])
                .arg(ttl_ms(ttl))
                .arg(if wait { "1" } else { "" })
                .invoke_async(&mut self.conn.get())
                .await
        }
        .map_err(|e| self.conn.failed(e))?;
        Ok(read_of(value, Some(token)))
    }

    async fn read_many(
        &self,
        namespace: &str,
        keys: &[&str],
        lease: Option<(u64, Duration)>,
    ) -> Result<Vec<Read>, Error> {
        let (Some((token, ttl)), true) = (lease, self.conn.set_nx_get()) else {
            let values = self.get_many(namespace, keys).await?;
            return Ok(values
                .into_iter()
                .map(|v| v.map_or(Read::Absent, Read::Value))
                .collect());
        };
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let record = lease_record(token);
        let read_one = |key: &str| {
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.conn.layout().data(namespace, key))
                .arg(&record[..])
                .arg("NX")
                .arg("GET")
                .arg("PX")
                .arg(ttl_ms(ttl));
            cmd
        };
        let values: Vec<Option<Vec<u8>>> = if self.conn.layout() == Layout::Cluster {
            // A cluster pipeline must stay in one slot: each key on its own, all at once.
            futures_util::future::try_join_all(keys.iter().map(|key| {
                let (cmd, mut conn) = (read_one(key), self.conn.get());
                async move { cmd.query_async::<Option<Vec<u8>>>(&mut conn).await }
            }))
            .await
        } else {
            // One pipeline: every key read, and each missing one leased.
            let mut pipe = redis::pipe();
            for key in keys {
                pipe.add_command(read_one(key));
            }
            pipe.query_async(&mut self.conn.get()).await
        }
        .map_err(|e| self.conn.failed(e))?;
        Ok(values
            .into_iter()
            .map(|v| read_of(v, Some(token)))
            .collect())
    }

    async fn release(&self, namespace: &str, key: &str, token: u64) -> Result<(), Error> {
        let l = self.conn.layout();
        let record = lease_record(token);
        if l == Layout::Single {
            return RELEASE_RECORD
                .key(l.data(namespace, key))
                .key(l.filled(namespace))
                .arg(&record[..])
                .arg(key)
                .invoke_async::<()>(&mut self.conn.get())
                .await
                .map_err(|e| self.conn.failed(e));
        }
        let (_, waited): (u8, u8) = RELEASE_RECORD_IN_SLOT
            .key(l.data(namespace, key))
            .arg(&record[..])
            .invoke_async(&mut self.conn.get())
            .await
            .map_err(|e| self.conn.failed(e))?;
        if waited == 1 {
            announce_filled(&self.conn, namespace, key).await?;
        }
        Ok(())
    }

    fn lease(&self) -> Option<Arc<dyn Lease>> {
        Some(Arc::new(RedisLease::on(self.conn.clone())))
    }

    async fn set(
        &self,
        namespace: &str,
        key: &str,
        value: Bytes,
        ttl: Duration,
        tags: &[String],
        mode: WriteMode,
    ) -> Result<Written, Error> {
        let l = self.conn.layout();
        if l == Layout::Cluster {
            let apart = self.set_in_cluster(namespace, key, value, ttl, tags, mode);
            return ReplicaWait::finish(apart.await?).await;
        }
        let data = l.data(namespace, key);
        let log = match mode {
            WriteMode::Fill {
                fence,
                lease,
                lease_ttl,
            } => {
                // A miss's fill, the hot one: a plain command where the server can compare,
                // else the script, its command written directly (see `Lua::call`).
                if tags.is_empty()
                    && let Some(done) = self
                        .fill_in_place(namespace, &data, &value, ttl, &fence, lease, lease_ttl)
                        .await?
                {
                    return Ok(Written {
                        stored: self.finish_in_place(done, namespace, key).await?,
                        logged: None,
                    });
                }
                let filled = l.filled(namespace);
                let refresh = refresh_key(l, namespace, key, &data, lease);
                let tag_keys: Vec<String> = tags.iter().map(|tag| l.tag(namespace, tag)).collect();
                let mut keys: Vec<Arg<'_>> = Vec::with_capacity(3 + tag_keys.len());
                keys.extend([&*data, &*filled, &*refresh].map(Arg::from));
                keys.extend(tag_keys.iter().map(Arg::from));
                let mut scratch = FenceScratch::default();
                let args = self.fill_args(key, &value, ttl, &fence, &mut scratch, lease, lease_ttl);
                let stored: u64 = FILL
                    .call(&mut self.conn.get(), &keys, &args)
                    .await
                    .map_err(|e| self.conn.failed(e))?;
                return Ok(Written {
                    stored: stored == 1,
                    logged: None,
                });
            }
            // The invalidation appended in the same step, if any.
            WriteMode::Replace { log } => log.filter(|log| self.beside(log)),
        };
        if tags.is_empty() && log.is_none() {
            // Nothing else to do in the same step: a plain command.
            self.plain_set(&data, &value, ttl).await?;
            return Ok(Written {
                stored: true,
                logged: None,
            });
        }
        let mut replace = REPLACE.key(&data);
        match &log {
            Some(log) => replace.key(&log.stream).key(&log.sequence),
            // Named but untouched: the data key stands in.
            None => replace.key(&data).key(&data),
        };
        replace.arg(value.as_ref()).arg(ttl_ms(ttl));
        match &log {
            Some(log) => replace.arg(log.max_len).arg(&log.entry[..]),
            None => replace.arg("").arg(""),
        };
        for tag in tags {
            replace.key(l.tag(namespace, tag));
        }
        // A write-through answers its log entry's number (0: none).
        let answer: u64 = replace
            .invoke_async(&mut self.conn.get())
            .await
            .map_err(|e| self.conn.failed(e))?;
        Ok(Written {
            stored: true,
            logged: log.map(|log| log.at(answer)),
        })
    }

    async fn set_apart(
        &self,
        namespace: &str,
        key: &str,
        value: Bytes,
        ttl: Duration,
        tags: &[String],
        mode: WriteMode,
    ) -> Result<(Written, Option<ReplicaWait>), Error> {
        if self.conn.layout() == Layout::Cluster {
            return self
                .set_in_cluster(namespace, key, value, ttl, tags, mode)
                .await;
        }
        Ok((
            self.set(namespace, key, value, ttl, tags, mode).await?,
            None,
        ))
    }

    async fn delete(
        &self,
        namespace: &str,
        key: &str,
        log: Option<&LogAppend>,
    ) -> Result<Option<Position>, Error> {
        ReplicaWait::finish(self.delete_apart(namespace, key, log).await?).await
    }

    async fn delete_apart(
        &self,
        namespace: &str,
        key: &str,
        log: Option<&LogAppend>,
    ) -> Result<(Option<Position>, Option<ReplicaWait>), Error> {
        let data = self.conn.layout().data(namespace, key);
        match log.filter(|log| self.beside(log)) {
            Some(log) => {
                let keys = [(&data).into(), (&log.stream).into(), (&log.sequence).into()];
                let args = [(log.max_len as u64).into(), log.entry[..].into()];
                let seq: u64 = INVALIDATE
                    .call(&mut self.conn.get(), &keys, &args)
                    .await
                    .map_err(|e| self.conn.failed(e))?;
                Ok((Some(log.at(seq)), None))
            }
            None => {
                self.unlink(&data).await?;
                // On a cluster: acknowledged once a replica has it, so a failover keeps it.
                let replica = self.conn.replica_wait(&data, self.log_after(log)).await?;
                Ok((None, replica))
            }
        }
    }

    async fn delete_by_tag(&self, namespace: &str, tag: &str) -> Result<u64, Error> {
        let index = self.conn.layout().tag(namespace, tag);
        if self.conn.layout() == Layout::Single {
            return DELETE_TAG
                .key(index)
                .invoke_async(&mut self.conn.get())
                .await
                .map_err(|e| self.conn.failed(e));
        }
        // A cluster: the members live in other slots. Each is deleted in its own slot (a
        // lease record too: the load in flight is refused), many at once, then acknowledged
        // once replicated — one `WAIT` per master — and removed from the index: only those,
        // so members added meanwhile stay.
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&index)
            .query_async(&mut self.conn.get())
            .await
            .map_err(|e| self.conn.failed(e))?;
        let prefix = format!("{namespace}:");
        // Owned keys: a stream of borrowing closures is not `Send` enough for `async_trait`.
        let keys: Vec<String> = members
            .iter()
            .filter(|m| m.starts_with(&prefix))
            .cloned()
            .collect();
        let removed = futures_util::stream::iter(keys)
            .map(|data| async move { self.unlink(&data).await })
            .buffer_unordered(TAG_CONCURRENCY)
            .try_fold(0, |removed, existed| async move { Ok(removed + existed) })
            .await?;
        self.conn.replicated_all(&members).await?;
        if !members.is_empty() {
            redis::cmd("SREM")
                .arg(&index)
                .arg(&members)
                .exec_async(&mut self.conn.get())
                .await
                .map_err(|e| self.conn.failed(e))?;
        }
        Ok(removed)
    }

    async fn clear(&self, namespace: &str) -> Result<u64, Error> {
        // Lease records go with the values: every load in flight is refused.
        let mut removed = 0;
        for pattern in namespace_patterns(namespace) {
            removed += self.unlink_matching(&pattern).await?;
        }
        Ok(removed)
    }

    /// Server-assisted invalidation (`docs/protocol.md` §6): one receiver for every
    /// namespace of this store. One server or Sentinel's master, over plain TCP.
    async fn track_writes(&self, namespace: &str) -> Result<Option<Subscription>, Error> {
        let Some(tracking) = self.conn.tracking() else {
            return Err(Error::Config(
                "track_foreign_writes needs a cluster, or one Redis server or Sentinel master \
                 reached over plain TCP; TLS and Unix sockets to one server do not track yet"
                    .into(),
            ));
        };
        let mut slot = self.tracker.lock().await;
        if let Some(tracker) = slot.as_ref().filter(|t| t.running()) {
            return tracker.add(namespace).await.map(Some);
        }
        let (tracker, feed) = Tracker::start(
            &self.config,
            self.conn.clone(),
            tracking.cloned(),
            namespace,
        )
        .await?;
        *slot = Some(tracker);
        Ok(Some(feed))
    }
}

impl RedisStore {
    /// Whether `log` lives on this store's server, so its entries can go in the store's own
    /// scripts.
    fn beside(&self, log: &LogAppend) -> bool {
        self.conn.identity() == Some(log.server.as_str())
    }

    /// On a cluster, the stream `log` goes to when the log writes on this store's connection:
    /// the log's `WAIT` there follows this store's writes on the same socket.
    fn log_after<'l>(&self, log: Option<&'l LogAppend>) -> Option<&'l str> {
        log.filter(|log| self.conn.cluster_name() == Some(log.server.as_str()))
            .map(|log| log.stream.as_str())
    }

    /// The data key's bytes, lease records included.
    async fn get_raw(&self, data: &str) -> Result<Option<Vec<u8>>, Error> {
        redis::cmd("GET")
            .arg(data)
            .query_async(&mut self.conn.get())
            .await
            .map_err(|e| self.conn.failed(e))
    }

    /// `UNLINK`s one key; 1 if it existed.
    async fn unlink(&self, key: &str) -> Result<u64, Error> {
        redis::cmd("UNLINK")
            .arg(key)
            .query_async(&mut self.conn.get())
            .await
            .map_err(|e| self.conn.failed(e))
    }

    /// A write on a cluster: the tag indexes first (each in its slot, at once: a tag
    /// invalidated between them and the value deletes the lease record, which refuses a
    /// fill), then the value in its slot.
    async fn set_in_cluster(
        &self,
        namespace: &str,
        key: &str,
        value: Bytes,
        ttl: Duration,
        tags: &[String],
        mode: WriteMode,
    ) -> Result<(Written, Option<ReplicaWait>), Error> {
        let l = self.conn.layout();
        let data = l.data(namespace, key);
        let index = |tag: &String| {
            let mut conn = self.conn.get();
            let (tag, data) = (l.tag(namespace, tag), data.clone());
            async move {
                INDEX_TAG
                    .key(tag)
                    .arg(data)
                    .arg(ttl_ms(ttl))
                    .invoke_async::<()>(&mut conn)
                    .await
            }
        };
        futures_util::future::try_join_all(tags.iter().map(index))
            .await
            .map_err(|e| self.conn.failed(e))?;
        let (fence, lease, lease_ttl) = match mode {
            WriteMode::Fill {
                fence,
                lease,
                lease_ttl,
            } => (fence, lease, lease_ttl),
            WriteMode::Replace { log } => {
                self.plain_set(&data, &value, ttl).await?;
                // A write-through replaces what others may hold: it must outlive a failover.
                let written = Written {
                    stored: true,
                    logged: None,
                };
                let then = self.log_after(log.as_ref());
                return Ok((written, self.conn.replica_wait(&data, then).await?));
            }
        };
        // The tags are indexed: the fill itself touches only the data key here.
        if let Some(done) = self
            .fill_in_place(namespace, &data, &value, ttl, &fence, lease, lease_ttl)
            .await?
        {
            let written = Written {
                stored: self.finish_in_place(done, namespace, key).await?,
                logged: None,
            };
            return Ok((written, None));
        }
        let refresh = refresh_key(l, namespace, key, &data, lease);
        let keys = [(&data).into(), (&*refresh).into()];
        let mut scratch = FenceScratch::default();
        let args = self.fill_args(key, &value, ttl, &fence, &mut scratch, lease, lease_ttl);
        let (stored, waited): (u8, u8) = FILL_IN_SLOT
            .call(&mut self.conn.get(), &keys, &args)
            .await
            .map_err(|e| self.conn.failed(e))?;
        if waited == 1 {
            announce_filled(&self.conn, namespace, key).await?;
        }
        let written = Written {
            stored: stored == 1,
            logged: None,
        };
        Ok((written, None))
    }
}

/// Tells the instances waiting on `key`'s load that it ended (the namespace's filled stream
/// and channel, as the scripts do in the same step): after a fill on a cluster, or by
/// [`FILL_LEASED`](crate::scripts::FILL_LEASED). The channel's push is best effort, as the
/// scripts' `redis.pcall`: a user not allowed the channel still appends (its waiters read the
/// stream at their next poll).
pub(crate) async fn announce_filled(
    conn: &Connection,
    namespace: &str,
    key: &str,
) -> Result<(), Error> {
    let filled = conn.layout().filled(namespace);
    let mut append = redis::cmd("XADD");
    append
        .arg(&filled)
        .arg("MAXLEN")
        .arg("~")
        .arg(1000)
        .arg("*")
        .arg("k")
        .arg(key);
    let mut push = redis::cmd("SPUBLISH");
    push.arg(&filled).arg(key);
    let (mut one, mut other) = (conn.get(), conn.get());
    let (appended, _pushed) =
        futures_util::future::join(append.exec_async(&mut one), push.exec_async(&mut other)).await;
    appended.map_err(|e| conn.failed(e))
}
