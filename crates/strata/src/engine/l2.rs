//! How entries become L2 bytes and back, and the L2 calls that read and write them.
//! Failures on the read side are counted and read as misses, never surfaced.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::Engine;
use crate::codec::Codec;
use crate::envelope::{self, Header, Times};
use crate::error::{Error, Result};
use crate::stats::Counter;
use crate::store::{Read, ReplicaWait, WriteMode, Written};
use crate::value::{CacheValue, Found, Value};

/// What a flight's read of L2 found.
pub(crate) enum L2Read {
    /// An entry of this cache, fresh or not (decoded at the given time).
    Found(Found, u64),
    /// Bytes this cache cannot read (corrupt, foreign; counted): to be replaced.
    Unusable(Bytes),
    /// Nothing: this flight holds the key's load lease.
    Leased,
    /// Nothing yet: another instance holds the key's load lease (its record already marked
    /// waited on, or not).
    Loading {
        /// Whether the end of that load is already announced (see [`Read::Loading`]).
        waited_on: bool,
    },
    /// Nothing, and the store keeps no leases.
    Absent,
    /// L2 could not be read (counted).
    Failed,
}

/// The largest buffer a value's encoding starts with, whatever the last one was: a rare
/// large value does not make every later buffer large.
const MAX_SIZE_HINT: usize = 64 * 1024;

impl Engine {
    /// Encodes an entry for L2: an envelope (with a fresh stamp), or the bare value in raw mode.
    pub(crate) fn encode<T: CacheValue>(
        &self,
        key: &str,
        value: &Value,
        times: &Times,
        tags: &[String],
        load_ms: u32,
        codec: Option<Codec>,
    ) -> Result<Bytes> {
        // Raw mode stores bare JSON, readable by code that knows nothing of envelopes.
        let codec = if self.raw {
            Codec::Json
        } else {
            codec.unwrap_or(self.codec)
        };
        let typed: Option<&T> = value.as_ref().and_then(|v| v.downcast_ref::<T>());
        // Sized as the last value was (values of a cache are often alike): a 1 KiB value
        // grown from empty is copied five times on its way (and mostly into fresh pages).
        let hint = self.encoded_len.load(Ordering::Relaxed).min(MAX_SIZE_HINT);
        let mut out = Vec::with_capacity(hint);
        if !self.raw {
            let header = Header {
                codec,
                negative: value.is_none(),
                times: *times,
                stamp: fastrand::u64(..),
                load_ms,
            };
            envelope::write_header(&mut out, &header, tags)?;
        }
        // In raw mode a negative entry is JSON `null`; in an envelope, the flag says it all.
        let encoded = match typed {
            Some(v) => codec.encode(v, &mut out),
            None if self.raw => codec.encode(&(), &mut out),
            None => Ok(()),
        };
        encoded.map_err(|message| Error::Encode {
            key: key.to_owned(),
            message,
        })?;
        self.encoded_len.store(out.len(), Ordering::Relaxed);
        self.within_limit(key, out)
    }

    /// `value` in the codec-only form the write-behind queue carries (JSON, no envelope).
    pub(crate) fn encode_for_queue<T: CacheValue>(&self, key: &str, value: &T) -> Result<Bytes> {
        let mut out = Vec::new();
        Codec::Json
            .encode(value, &mut out)
            .map_err(|message| Error::Encode {
                key: key.to_owned(),
                message,
            })?;
        self.within_limit(key, out)
    }

    fn within_limit(&self, key: &str, out: Vec<u8>) -> Result<Bytes> {
        if out.len() > self.max_value_bytes {
            return Err(Error::ValueTooLarge {
                key: key.to_owned(),
                len: out.len(),
                max: self.max_value_bytes,
            });
        }
        Ok(out.into())
    }

    /// Decodes L2 bytes; `None` when they are not a value of `T` this cache can vouch for.
    fn decode<T: CacheValue>(&self, bytes: &[u8], now: u64) -> Result<Found> {
        if self.raw && !envelope::is_envelope(bytes) {
            // Raw values carry no timestamps: treat them as written now, with default options.
            let value: Option<T> = Codec::Json
                .decode(bytes)
                .map_err(|e| Error::Decode(format!("raw value: {e}")))?;
            return Ok(Found {
                value: value.map(|v| Arc::new(v) as _),
                times: self.defaults.times(now, false),
                tags: Vec::new(),
                load_ms: 0,
                size: encoded_size(bytes),
                stamp: None,
            });
        }
        let env = envelope::decode(bytes)?;
        let value = if env.header.negative {
            None
        } else {
            let v: T = env
                .header
                .codec
                .decode(env.payload)
                .map_err(Error::Decode)?;
            Some(Arc::new(v) as _)
        };
        Ok(Found {
            value,
            times: env.header.times,
            tags: env.tags,
            load_ms: env.header.load_ms,
            size: encoded_size(bytes),
            stamp: Some(env.header.stamp),
        })
    }

    /// Reads and decodes `key` from L2. Failures are counted and read as a miss.
    pub(crate) async fn read_l2<T: CacheValue>(&self, key: &str, now: u64) -> Option<Found> {
        match self.l2.get(&self.namespace, key).await {
            Ok(Some(bytes)) => self.decode_found::<T>(key, &bytes, now),
            Ok(None) => None,
            Err(e) => {
                self.l2_read_failed(key, &e);
                None
            }
        }
    }

    /// Reads `key` from L2 for a flight, taking the key's load lease under `token` if nothing
    /// is there (one round trip); with `wait`, marks another's lease waited on.
    pub(crate) async fn begin_read<T: CacheValue>(
        &self,
        key: &str,
        token: u64,
        wait: bool,
    ) -> L2Read {
        let lease = Some((token, self.lease_ttl));
        match self.l2.read(&self.namespace, key, lease, wait).await {
            Ok(read) => self.interpret::<T>(key, read),
            Err(e) => {
                self.l2_read_failed(key, &e);
                L2Read::Failed
            }
        }
    }

    /// What a store's [`Read`] of `key` is to this cache (its value decoded).
    pub(crate) fn interpret<T: CacheValue>(&self, key: &str, read: Read) -> L2Read {
        match read {
            Read::Value(bytes) => {
                let now = self.clock.now_ms();
                match self.decode_found::<T>(key, &bytes, now) {
                    Some(found) => L2Read::Found(found, now),
                    None => L2Read::Unusable(bytes),
                }
            }
            Read::Leased => L2Read::Leased,
            Read::Loading { waited_on } => L2Read::Loading { waited_on },
            Read::Absent => L2Read::Absent,
        }
    }

    pub(crate) fn decode_found<T: CacheValue>(
        &self,
        key: &str,
        bytes: &[u8],
        now: u64,
    ) -> Option<Found> {
        match self.decode::<T>(bytes, now) {
            Ok(found) => Some(found),
            Err(e) => {
                self.counters.incr(Counter::decode_errors);
                tracing::warn!(namespace = %self.namespace, key, error = %e, "undecodable L2 entry treated as a miss");
                None
            }
        }
    }

    fn l2_read_failed(&self, key: &str, e: &Error) {
        self.counters.incr(Counter::l2_errors);
        tracing::debug!(namespace = %self.namespace, key, error = %e, "L2 read failed");
    }

    /// Writes to L2 and waits for the write's replica (a cluster's), if it has one.
    pub(crate) async fn write_l2(
        &self,
        key: &str,
        bytes: Bytes,
        times: &Times,
        tags: &[String],
        mode: WriteMode,
    ) -> Result<Written> {
        match self.write_l2_apart(key, bytes, times, tags, mode).await {
            (Ok(written), wait) => self.note_l2(ReplicaWait::finish((written, wait)).await),
            (Err(e), _) => Err(e),
        }
    }

    /// Writes to L2 and hands back the write's replica wait (a cluster's) for the caller to
    /// run beside the log's append. Counts a fill its fence refused, and a failure.
    pub(crate) async fn write_l2_apart(
        &self,
        key: &str,
        bytes: Bytes,
        times: &Times,
        tags: &[String],
        mode: WriteMode,
    ) -> (Result<Written>, Option<ReplicaWait>) {
        let written = self
            .l2
            .set_apart(&self.namespace, key, bytes, self.l2_ttl(times), tags, mode)
            .await;
        match self.note_l2(written) {
            Ok((written, wait)) => {
                if !written.stored {
                    self.counters.incr(Counter::fills_fenced);
                }
                (Ok(written), wait)
            }
            Err(e) => (Err(e), None),
        }
    }

    /// How long L2 keeps an entry with `times`: raw values carry no timestamps, so L2 keeps
    /// them only until they expire.
    fn l2_ttl(&self, times: &Times) -> std::time::Duration {
        let until = if self.raw {
            times.expires
        } else {
            times.stale_until
        };
        std::time::Duration::from_millis(until.saturating_sub(times.created).max(1))
    }

    /// Counts an L2 failure and passes the result on.
    pub(crate) fn note_l2<R>(&self, result: Result<R>) -> Result<R> {
        if result.is_err() {
            self.counters.incr(Counter::l2_errors);
        }
        result
    }
}

/// A byte length as an L1 weight.
pub(crate) fn encoded_size(bytes: &[u8]) -> u32 {
    u32::try_from(bytes.len()).unwrap_or(u32::MAX)
}
