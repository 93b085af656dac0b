//! `CompatChannel`: invalidations shared with services in other languages, over the plain
//! pub/sub JSON they already speak.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use strata::Error;
use strata::invalidation::{
    Invalidation, InvalidationLog, LogEvent, Position, Subscription, Target,
};
use tokio::sync::mpsc;

use crate::config::RedisConfig;
use crate::connection::Connection;
use crate::pubsub::{Channel, subscribe};

/// The channel other stacks' caches commonly use.
pub const DEFAULT_COMPAT_CHANNEL: &str = "cache:invalidate";

/// The message, as other stacks write it. `source` is ours: Strata instances get each other's
/// invalidations from their own log and skip the copies marked as theirs.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Message {
    service: String,
    key: String,
    #[serde(default)]
    timestamp: Option<serde_json::Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<String>,
}

const SOURCE: &str = "strata";

/// Wraps an invalidation log so that invalidations also travel as plain pub/sub JSON,
/// `{"service":"<namespace>","key":"<key>","timestamp":<ms since the epoch>}`, on a channel
/// shared with services written in other languages (default [`DEFAULT_COMPAT_CHANNEL`]).
///
/// - Strata → others: every key invalidation is published there too, the namespace as the
///   service (tags and clears have no equivalent in this format and are not sent).
/// - Others → Strata: a message whose `service` is the cache's namespace drops the key from
///   this instance's L1. (The sender is expected to have deleted or rewritten the L2 entry
///   itself, as cache-aside code does.) Messages for other services, and malformed ones, are
///   ignored; so are Strata's own copies, which carry `"source":"strata"` and reach Strata
///   instances through the wrapped log anyway.
///
/// Pub/sub keeps no history: the channel is followed on a connection of its own, and a
/// reconnect drops L1 ([`LogEvent::Resync`]), as with [`RedisPubSub`](crate::RedisPubSub).
#[derive(Clone)]
pub struct CompatChannel<L> {
    log: L,
    publisher: Connection,
    config: RedisConfig,
    channel: String,
}

impl<L: std::fmt::Debug> std::fmt::Debug for CompatChannel<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompatChannel")
            .field("log", &self.log)
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl<L: InvalidationLog> CompatChannel<L> {
    /// Wraps `log`, publishing and following [`DEFAULT_COMPAT_CHANNEL`] on the Redis of
    /// `config`.
    pub async fn wrap(log: L, config: &RedisConfig) -> Result<Self, Error> {
        let publisher = Connection::open_log(config).await?;
        Ok(CompatChannel {
            log,
            publisher,
            config: config.clone(),
            channel: DEFAULT_COMPAT_CHANNEL.to_owned(),
        })
    }

    /// Uses `channel` instead of the default.
    #[must_use]
    pub fn channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = channel.into();
        self
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The event a message carries for `namespace`, if any.
fn decode(namespace: &str, payload: &[u8]) -> Result<Option<LogEvent>, Error> {
    let message: Message = serde_json::from_slice(payload)
        .map_err(|e| Error::Decode(format!("compat invalidation: {e}")))?;
    if message.service != namespace || message.source.as_deref() == Some(SOURCE) {
        return Ok(None);
    }
    Ok(Some(LogEvent::Apply(Invalidation {
        // No Strata instance has this id (ids are random), so every instance applies it.
        origin: 0,
        target: Target::Key(message.key),
    })))
}

#[async_trait]
impl<L: InvalidationLog> InvalidationLog for CompatChannel<L> {
    async fn publish(
        &self,
        namespace: &str,
        invalidation: &Invalidation,
    ) -> Result<Option<Position>, Error> {
        let position = self.log.publish(namespace, invalidation).await?;
        let Target::Key(key) = &invalidation.target else {
            return Ok(position);
        };
        let message = Message {
            service: namespace.to_owned(),
            key: key.clone(),
            timestamp: Some(now_ms().into()),
            source: Some(SOURCE.to_owned()),
        };
        let payload = serde_json::to_vec(&message)
            .map_err(|e| Error::Decode(format!("compat invalidation: {e}")))?;
        redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(payload)
            .exec_async(&mut self.publisher.get())
            .await
            .map_err(|e| self.publisher.failed_log(e))?;
        Ok(position)
    }

    // Not `beside`: a store appending the entry itself would skip the plain channel.

    fn acknowledges(&self) -> bool {
        self.log.acknowledges()
    }

    fn announces_load_ends(&self) -> bool {
        self.log.announces_load_ends()
    }

    async fn acknowledge(
        &self,
        namespace: &str,
        instance: u64,
        applied: &[u64],
    ) -> Result<(), Error> {
        self.log.acknowledge(namespace, instance, applied).await
    }

    async fn await_acknowledged(
        &self,
        namespace: &str,
        origin: u64,
        position: Position,
        within: Duration,
    ) -> Result<bool, Error> {
        self.log
            .await_acknowledged(namespace, origin, position, within)
            .await
    }

    async fn follow(&self, namespace: &str) -> Result<Subscription, Error> {
        let mut own = self.log.follow(namespace).await?;
        let ns = namespace.to_owned();
        // Plain pub/sub, as the other stacks speak it (a cluster broadcasts it to every node).
        let channel = Channel {
            name: self.channel.clone(),
            sharded: None,
        };
        let mut compat = subscribe(
            &self.config,
            self.publisher.clone(),
            channel,
            std::sync::Arc::new(move |payload: &[u8]| decode(&ns, payload)),
        )
        .await?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    Some(e) = own.recv() => e,
                    Some(e) = compat.recv() => e,
                    () = tx.closed() => return,
                    else => return,
                };
                if tx.send(event).is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    fn heartbeat(&self) -> Option<Duration> {
        self.log.heartbeat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_messages_are_what_is_sent_and_read() {
        let lines = strata_testkit::protocol::example("compat");
        let sent = Message {
            service: "svc".into(),
            key: "user:1".into(),
            timestamp: Some(1_700_000_000_000_u64.into()),
            source: Some(SOURCE.into()),
        };
        assert_eq!(lines[0].as_bytes(), serde_json::to_vec(&sent).unwrap());
        let applied = Some(LogEvent::Apply(Invalidation {
            origin: 0,
            target: Target::Key("user:1".into()),
        }));
        assert_eq!(
            decode("svc", lines[0].as_bytes()).unwrap(),
            None,
            "our own copy"
        );
        for received in &lines[1..] {
            assert_eq!(decode("svc", received.as_bytes()).unwrap(), applied);
        }
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn messages_for_this_service_apply_others_do_not() {
        let apply = |k: &str| {
            Some(LogEvent::Apply(Invalidation {
                origin: 0,
                target: Target::Key(k.into()),
            }))
        };
        let ok = br#"{"service":"svc","key":"user:1","timestamp":1700000000000}"#;
        assert_eq!(decode("svc", ok).unwrap(), apply("user:1"));
        let float_ts = br#"{"service":"svc","key":"k","timestamp":1.7e12,"extra":true}"#;
        assert_eq!(decode("svc", float_ts).unwrap(), apply("k"));
        let other = br#"{"service":"billing","key":"k","timestamp":1}"#;
        assert_eq!(decode("svc", other).unwrap(), None);
        let ours = br#"{"service":"svc","key":"k","timestamp":1,"source":"strata"}"#;
        assert_eq!(decode("svc", ours).unwrap(), None);
        for bad in [
            &b"not json"[..],
            br#"{"service":"svc"}"#,
            br#"{"key":1}"#,
            b"",
        ] {
            assert!(decode("svc", bad).is_err());
        }
    }
}
