//! `RedisStore`: the L2 on Redis.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use strata::keys::{
    data_key, filled_key, generation_key, lease_key, namespace_generation_key, namespace_patterns,
    tag_key, waiting_key,
};
use strata::{Error, Generation, L2Store, Lease, LoadStart, WriteMode};

use crate::config::RedisConfig;
use crate::connection::Connection;
use crate::lease::RedisLease;
use crate::scripts::{BEGIN_LOAD, DELETE_TAG, FILL, GENERATION_TTL_MS, INVALIDATE, REPLACE};

/// Strata's L2 on a Redis server: one multiplexed, auto-reconnecting connection, pipelined by
/// the client, with connect and command timeouts.
///
/// Every command goes through `redis::aio::ConnectionLike`, the interface the `redis` crate's
/// cluster and sentinel connections share, so those deployments slot in behind this type.
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

    async fn unlink_matching(&self, pattern: &str) -> Result<u64, Error> {
        let mut conn = self.conn.get();
        let mut cursor: u64 = 0;
        let mut removed = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.conn.failed(e))?;
            if !keys.is_empty() {
                let n: u64 = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| self.conn.failed(e))?;
                removed += n;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[async_trait]
impl L2Store for RedisStore {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Bytes>, Error> {
        let value: Option<Vec<u8>> = redis::cmd("GET")
            .arg(data_key(namespace, key))
            .query_async(&mut self.conn.get())
            .await
            .map_err(|e| self.conn.failed(e))?;
        Ok(value.map(Bytes::from))
    }

    async fn generation(&self, namespace: &str, key: &str) -> Result<Generation, Error> {
        let (key_gen, ns_gen): (Option<u64>, Option<u64>) = redis::cmd("MGET")
            .arg(generation_key(namespace, key))
            .arg(namespace_generation_key(namespace))
            .query_async(&mut self.conn.get())
            .await
            .map_err(|e| self.conn.failed(e))?;
        Ok(Generation {
            key: key_gen.unwrap_or(0),
            namespace: ns_gen.unwrap_or(0),
        })
    }

    async fn generations(&self, namespace: &str, keys: &[&str]) -> Result<Vec<Generation>, Error> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("MGET");
        for key in keys {
            cmd.arg(generation_key(namespace, key));
        }
        cmd.arg(namespace_generation_key(namespace));
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
        let (key_gen, ns_gen, taken, filled): (u64, u64, u8, Option<Vec<u8>>) = BEGIN_LOAD
            .key(generation_key(namespace, key))
            .key(namespace_generation_key(namespace))
            .key(lease_key(namespace, key))
            .key(waiting_key(namespace, key))
            .key(data_key(namespace, key))
            .arg(token)
            .arg(ttl)
            .arg(if absent { "1" } else { "" })
            .invoke_async(&mut self.conn.get())
            .await
            .map_err(|e| self.conn.failed(e))?;
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
        let full: Vec<String> = keys.iter().map(|k| data_key(namespace, k)).collect();
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
        let mut invocation = match mode {
            WriteMode::Fill { read, lease } => {
                let mut i = FILL.key(data_key(namespace, key));
                i.key(generation_key(namespace, key))
                    .key(namespace_generation_key(namespace))
                    .key(lease_key(namespace, key))
                    .key(waiting_key(namespace, key))
                    .key(filled_key(namespace));
                i.arg(value.as_ref())
                    .arg(ttl_ms(ttl))
                    .arg(read.key)
                    .arg(read.namespace)
                    .arg(lease.map(|t| t.to_string()).unwrap_or_default())
                    .arg(key);
                i
            }
            WriteMode::Replace => {
                let mut i = REPLACE.key(data_key(namespace, key));
                i.key(generation_key(namespace, key));
                i.arg(value.as_ref())
                    .arg(ttl_ms(ttl))
                    .arg(GENERATION_TTL_MS);
                i
            }
        };
        for tag in tags {
            invocation.key(tag_key(namespace, tag));
        }
        let stored: u8 = invocation
            .invoke_async(&mut self.conn.get())
            .await
            .map_err(|e| self.conn.failed(e))?;
        Ok(stored == 1)
    }

    async fn delete(&self, namespace: &str, key: &str) -> Result<(), Error> {
        INVALIDATE
            .key(data_key(namespace, key))
            .key(generation_key(namespace, key))
            .arg(GENERATION_TTL_MS)
            .invoke_async::<()>(&mut self.conn.get())
            .await
            .map_err(|e| self.conn.failed(e))
    }

    async fn delete_by_tag(&self, namespace: &str, tag: &str) -> Result<u64, Error> {
        DELETE_TAG
            .key(tag_key(namespace, tag))
            .arg(namespace)
            .arg(GENERATION_TTL_MS)
            .invoke_async(&mut self.conn.get())
            .await
            .map_err(|e| self.conn.failed(e))
    }

    async fn clear(&self, namespace: &str) -> Result<u64, Error> {
        // First: loads that read the namespace before the clear are refused from here on.
        redis::cmd("INCR")
            .arg(namespace_generation_key(namespace))
            .exec_async(&mut self.conn.get())
            .await
            .map_err(|e| self.conn.failed(e))?;
        let mut removed = 0;
        for pattern in namespace_patterns(namespace) {
            removed += self.unlink_matching(&pattern).await?;
        }
        Ok(removed)
    }
}
