//! `RedisStore`: the L2 on Redis.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use strata::keys::namespace_patterns;
use strata::{Error, Generation, L2Store, Lease, LoadStart, WriteMode};

use crate::config::RedisConfig;
use crate::connection::Connection;
use crate::layout::Layout;
use crate::lease::RedisLease;
use crate::scripts::{
    BEGIN_LOAD, BEGIN_LOAD_IN_SLOT, DELETE_TAG, FILL, FILL_IN_SLOT, GENERATION_TTL_MS, INDEX_TAG,
    INVALIDATE, REPLACE,
};

/// Members of a tag invalidated at once on a cluster (each a script on its key's master).
const TAG_CONCURRENCY: usize = 64;

/// Strata's L2 on a Redis server: one multiplexed, auto-reconnecting connection, pipelined by
/// the client, with connect and command timeouts.
///
/// On a Redis Cluster (`redis+cluster://`) the same guarantees hold: what a script changes
/// together lives in one slot (see the crate documentation for the key layout); a tag's
/// index, in its own slot, is written before the value, and its members are invalidated
/// each in its own slot; the
/// namespace generation, in the namespace's slot, is checked after a fill, which is undone
/// if a clear ran meanwhile; multi-key reads (`MGET`) are split by slot by the client.
///
/// Keys follow [`strata::keys`]: `<namespace>:<key>` for values, `<namespace>#tag:<tag>` for
/// tag indexes (sets), so a namespace can be scanned, cleared and ACL-restricted by prefix.
#[derive(Clone)]
pub struct RedisStore {
    conn: Connection,
    config: RedisConfig,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to the Redis at `url` with default timeouts.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::connect_with(&RedisConfig::from_url(url)?).await
    }

    /// Connects with explicit settings. Fails if the server cannot be reached within the
    /// connect timeout or refuses the credentials.
    pub async fn connect_with(config: &RedisConfig) -> Result<Self, Error> {
        let conn = Connection::open(config).await?;
        Ok(RedisStore {
            conn,
            config: config.clone(),
        })
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

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[async_trait]
impl L2Store for RedisStore {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Bytes>, Error> {
        let value: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.conn.layout().data(namespace, key))
            .query_async(&mut self.conn.get())
            .await
            .map_err(|e| self.conn.failed(e))?;
        Ok(value.map(Bytes::from))
    }

    async fn generation(&self, namespace: &str, key: &str) -> Result<Generation, Error> {
        Ok(self.generations(namespace, &[key]).await?.remove(0))
    }

    async fn generations(&self, namespace: &str, keys: &[&str]) -> Result<Vec<Generation>, Error> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // On a cluster the client splits this by slot and puts the answers back in order.
        let mut cmd = redis::cmd("MGET");
        for key in keys {
            cmd.arg(self.conn.layout().generation(namespace, key));
        }
        cmd.arg(self.conn.layout().namespace_generation(namespace));
        let mut counters: Vec<Option<u64>> = cmd
            .query_async(&mut self.conn.get())
            .await
            .map_err(|e| self.conn.failed(e))?;
        let namespace_gen = counters.pop().flatten().unwrap_or(0);
        Ok(counters
            .into_iter()
            .map(|key| Generation {
                key: key.unwrap_or(0),
                namespace: namespace_gen,
            })
            .collect())
    }

    fn lease(&self) -> Option<Arc<dyn Lease>> {
        Some(Arc::new(RedisLease::on(self.conn.clone())))
    }

    async fn begin_load(
        &self,
        namespace: &str,
        key: &str,
        lease: Option<(u64, Duration)>,
        absent: bool,
    ) -> Result<LoadStart, Error> {
        let (token, ttl) = match lease {
            Some((token, ttl)) => (token.to_string(), ttl_ms(ttl)),
            None => (String::new(), 0),
        };
        let l = self.conn.layout();
        let (mut invocation, apart) = match l {
            Layout::Single => {
                let mut i = BEGIN_LOAD.key(l.generation(namespace, key));
                i.key(l.namespace_generation(namespace));
                (i, None)
            }
            // The namespace generation lives in another slot: read first, apart (a clear
            // after this read refuses the fill all the same).
            Layout::Cluster => {
                let namespace_generation: Option<u64> = redis::cmd("GET")
                    .arg(l.namespace_generation(namespace))
                    .query_async(&mut self.conn.get())
                    .await
                    .map_err(|e| self.conn.failed(e))?;
                (
                    BEGIN_LOAD_IN_SLOT.key(l.generation(namespace, key)),
                    Some(namespace_generation.unwrap_or(0)),
                )
            }
        };
        let (key_gen, ns_gen, taken, filled): (u64, u64, u8, Option<Vec<u8>>) = invocation
            .key(l.lease(namespace, key))
            .key(l.waiting(namespace, key))
            .key(l.data(namespace, key))
            .arg(token)
            .arg(ttl)
            .arg(if absent { "1" } else { "" })
            .invoke_async(&mut self.conn.get())
            .await
            .map_err(|e| self.conn.failed(e))?;
        let ns_gen = apart.unwrap_or(ns_gen);
        Ok(LoadStart {
            generation: Generation {
                key: key_gen,
                namespace: ns_gen,
            },
            lease_taken: taken == 1,
            filled: filled.map(Bytes::from),
        })
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
        Ok(values.into_iter().map(|v| v.map(Bytes::from)).collect())
    }

    async fn set(
        &self,
        namespace: &str,
        key: &str,
        value: Bytes,
        ttl: Duration,
        tags: &[String],
        mode: WriteMode,
    ) -> Result<bool, Error> {
        let l = self.conn.layout();
        if l == Layout::Cluster {
            return self
                .set_in_cluster(namespace, key, value, ttl, tags, mode)
                .await;
        }
        // One server: one script (value, generations, lease, tags).
        let mut invocation = match mode {
            WriteMode::Fill { read, lease } => {
                let mut i = FILL.key(l.data(namespace, key));
                i.key(l.generation(namespace, key))
                    .key(l.namespace_generation(namespace))
                    .key(l.lease(namespace, key))
                    .key(l.waiting(namespace, key))
                    .key(l.filled(namespace));
                i.arg(value.as_ref())
                    .arg(ttl_ms(ttl))
                    .arg(read.key)
                    .arg(read.namespace)
                    .arg(lease.map(|t| t.to_string()).unwrap_or_default())
                    .arg(key);
                i
            }
            WriteMode::Replace => {
                let mut i = REPLACE.key(l.data(namespace, key));
                i.key(l.generation(namespace, key));
                i.arg(value.as_ref())
                    .arg(ttl_ms(ttl))
                    .arg(GENERATION_TTL_MS);
                i
            }
        };
        for tag in tags {
            invocation.key(l.tag(namespace, tag));
        }
        let stored: u8 = invocation
            .invoke_async(&mut self.conn.get())
            .await
            .map_err(|e| self.conn.failed(e))?;
        Ok(stored == 1)
    }

    async fn delete(&self, namespace: &str, key: &str) -> Result<(), Error> {
        self.invalidate(namespace, key).await.map(drop)
    }

    async fn delete_by_tag(&self, namespace: &str, tag: &str) -> Result<u64, Error> {
        let index = self.conn.layout().tag(namespace, tag);
        if self.conn.layout() == Layout::Single {
            return DELETE_TAG
                .key(index)
                .arg(namespace)
                .arg(GENERATION_TTL_MS)
                .invoke_async(&mut self.conn.get())
                .await
                .map_err(|e| self.conn.failed(e));
        }
        // A cluster: the members live in other slots. Each is invalidated in its own slot
        // (deleted, generation bumped: a load that read it before is refused), many at once,
        // then acknowledged once replicated — one `WAIT` per master — and removed from the
        // index: only those, so members added meanwhile stay.
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&index)
            .query_async(&mut self.conn.get())
            .await
            .map_err(|e| self.conn.failed(e))?;
        let prefix = format!("{namespace}:");
        // Owned keys: a stream of borrowing closures is not `Send` enough for `async_trait`.
        let keys: Vec<String> = members
            .iter()
            .filter_map(|m| m.strip_prefix(&prefix).map(str::to_owned))
            .collect();
        let removed = futures_util::stream::iter(keys)
            .map(|key| async move { self.invalidate_unacknowledged(namespace, &key).await })
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
        // First: loads that read the namespace before the clear are refused from here on.
        let generation = self.conn.layout().namespace_generation(namespace);
        redis::cmd("INCR")
            .arg(&generation)
            .exec_async(&mut self.conn.get())
            .await
            .map_err(|e| self.conn.failed(e))?;
        self.conn.replicated(&generation).await?;
        let mut removed = 0;
        for pattern in namespace_patterns(namespace) {
            removed += self.unlink_matching(&pattern).await?;
        }
        Ok(removed)
    }
}

impl RedisStore {
    /// Deletes `key` and bumps its generation (acknowledged once replicated, on a cluster);
    /// 1 if it existed.
    async fn invalidate(&self, namespace: &str, key: &str) -> Result<u64, Error> {
        let existed = self.invalidate_unacknowledged(namespace, key).await?;
        self.conn
            .replicated(&self.conn.layout().data(namespace, key))
            .await?;
        Ok(existed)
    }

    /// [`invalidate`](Self::invalidate) before the replica's acknowledgement.
    async fn invalidate_unacknowledged(&self, namespace: &str, key: &str) -> Result<u64, Error> {
        INVALIDATE
            .key(self.conn.layout().data(namespace, key))
            .key(self.conn.layout().generation(namespace, key))
            .arg(GENERATION_TTL_MS)
            .invoke_async(&mut self.conn.get())
            .await
            .map_err(|e| self.conn.failed(e))
    }

    /// A write on a cluster: the tag indexes first (each in its slot: a tag invalidated
    /// between them and the value bumps the key's generation, which refuses a fill), then
    /// the value in its slot; a fill then checks the namespace generation and undoes itself
    /// if a clear ran since the load began.
    async fn set_in_cluster(
        &self,
        namespace: &str,
        key: &str,
        value: Bytes,
        ttl: Duration,
        tags: &[String],
        mode: WriteMode,
    ) -> Result<bool, Error> {
        let l = self.conn.layout();
        let data = l.data(namespace, key);
        // The indexes at once (each in its own slot, on whichever master), all before the value.
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
        let WriteMode::Fill { read, lease } = mode else {
            let stored: u8 = REPLACE
                .key(&data)
                .key(l.generation(namespace, key))
                .arg(value.as_ref())
                .arg(ttl_ms(ttl))
                .arg(GENERATION_TTL_MS)
                .invoke_async(&mut self.conn.get())
                .await
                .map_err(|e| self.conn.failed(e))?;
            // A write-through replaces what others may hold: it must outlive a failover.
            self.conn.replicated(&data).await?;
            return Ok(stored == 1);
        };
        let (stored, waited): (u8, u8) = FILL_IN_SLOT
            .key(&data)
            .key(l.generation(namespace, key))
            .key(l.lease(namespace, key))
            .key(l.waiting(namespace, key))
            .arg(value.as_ref())
            .arg(ttl_ms(ttl))
            .arg(read.key)
            .arg(lease.map(|t| t.to_string()).unwrap_or_default())
            .invoke_async(&mut self.conn.get())
            .await
            .map_err(|e| self.conn.failed(e))?;
        if waited == 1 {
            announce_filled(&self.conn, namespace, key).await?;
        }
        if stored == 0 {
            return Ok(false);
        }
        let ns_gen: Option<u64> = redis::cmd("GET")
            .arg(l.namespace_generation(namespace))
            .query_async(&mut self.conn.get())
            .await
            .map_err(|e| self.conn.failed(e))?;
        if ns_gen.unwrap_or(0) != read.namespace {
            // A clear ran while this load did: what it loaded may predate the clear.
            self.delete(namespace, key).await?;
            return Ok(false);
        }
        Ok(true)
    }
}

/// Tells the instances waiting on `key`'s lease that it was released (the namespace's
/// filled stream, as the scripts do on one server).
pub(crate) async fn announce_filled(
    conn: &Connection,
    namespace: &str,
    key: &str,
) -> Result<(), Error> {
    redis::cmd("XADD")
        .arg(conn.layout().filled(namespace))
        .arg("MAXLEN")
        .arg("~")
        .arg(1000)
        .arg("*")
        .arg("k")
        .arg(key)
        .exec_async(&mut conn.get())
        .await
        .map_err(|e| conn.failed(e))
}
