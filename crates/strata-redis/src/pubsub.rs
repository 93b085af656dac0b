//! `RedisPubSub`: the invalidation backplane on Redis pub/sub.

use std::sync::Arc;
use std::time::Duration;

use crate::error::classify_log;
use async_trait::async_trait;
use futures_util::StreamExt;
use strata::Error;
use strata::invalidation::{Invalidation, InvalidationLog, LogEvent, Subscription};
use tokio::sync::{mpsc, oneshot};

use crate::config::RedisConfig;
use crate::connection::Connection;
use crate::reconnect::reconnect_backoff;

/// Invalidations over Redis pub/sub, one channel per namespace:
/// `strata:invalidate:<namespace>`, carrying [`Invalidation`]'s JSON wire form.
///
/// Pub/sub delivers only to connected subscribers, so each follower has its own connection and,
/// whenever it reconnects, emits [`LogEvent::Resync`]: the cache then drops its whole L1 rather
/// than risk serving a value whose invalidation it missed.
#[derive(Clone)]
pub struct RedisPubSub {
    publisher: Connection,
    config: RedisConfig,
}

impl std::fmt::Debug for RedisPubSub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPubSub")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The channel of a namespace.
pub fn channel(namespace: &str) -> String {
    format!("strata:invalidate:{namespace}")
}

impl RedisPubSub {
    /// Connects to the Redis at `url` with default timeouts.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::connect_with(&RedisConfig::from_url(url)?).await
    }

    /// Connects with explicit settings.
    pub async fn connect_with(config: &RedisConfig) -> Result<Self, Error> {
        let publisher = Connection::open_log(config).await?;
        Ok(RedisPubSub {
            publisher,
            config: config.clone(),
        })
    }
}

#[async_trait]
impl InvalidationLog for RedisPubSub {
    async fn publish(&self, namespace: &str, invalidation: &Invalidation) -> Result<(), Error> {
        redis::cmd("PUBLISH")
            .arg(channel(namespace))
            .arg(invalidation.encode())
            .exec_async(&mut self.publisher.get())
            .await
            .map_err(|e| self.publisher.failed_log(e))
    }

    async fn follow(&self, namespace: &str) -> Result<Subscription, Error> {
        let decode =
            |payload: &[u8]| Invalidation::decode(payload).map(|i| Some(LogEvent::Apply(i)));
        subscribe(&self.config, channel(namespace), Arc::new(decode)).await
    }
}

/// Turns a message into an event: `Ok(None)` for one to skip quietly, `Err` for a foreign one
/// (logged and skipped).
pub(crate) type Decode = Arc<dyn Fn(&[u8]) -> Result<Option<LogEvent>, Error> + Send + Sync>;

/// Subscribes to `channel` on a connection of its own, kept across disconnects (each
/// reconnect emits [`LogEvent::Resync`]: pub/sub loses what was sent meanwhile), each message
/// passed through `decode`. Returns once subscribed.
pub(crate) async fn subscribe(
    config: &RedisConfig,
    channel: String,
    decode: Decode,
) -> Result<Subscription, Error> {
    let (tx, rx) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = oneshot::channel();
    let follower = Follower {
        config: config.clone(),
        channel,
        events: tx,
        decode,
    };
    tokio::spawn(follower.run(ready_tx));
    match ready_rx.await {
        Ok(Ok(())) => Ok(rx),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::Config(
            "invalidation follower stopped before subscribing".into(),
        )),
    }
}

/// One subscription, kept alive across disconnects until its receiver is dropped.
struct Follower {
    config: RedisConfig,
    channel: String,
    events: mpsc::UnboundedSender<LogEvent>,
    decode: Decode,
}

impl Follower {
    async fn run(self, ready: oneshot::Sender<Result<(), Error>>) {
        let mut ready = Some(ready);
        let mut backoff = reconnect_backoff();
        loop {
            match self.subscribe().await {
                Ok(pubsub) => {
                    match ready.take() {
                        Some(ready) => {
                            let _ = ready.send(Ok(()));
                        }
                        // Whatever was published while we were away is lost: start over.
                        None => {
                            tracing::info!(channel = %self.channel, "invalidation subscription restored; dropping L1");
                            if self.events.send(LogEvent::Resync).is_err() {
                                return;
                            }
                        }
                    }
                    backoff = reconnect_backoff();
                    if !self.forward(pubsub).await {
                        return;
                    }
                    tracing::warn!(channel = %self.channel, "invalidation subscription lost; reconnecting");
                }
                Err(e) => {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Err(e));
                        return;
                    }
                    tracing::debug!(channel = %self.channel, error = %e, "invalidation subscription failed");
                }
            }
            let delay = backoff.next().unwrap_or(Duration::from_secs(5));
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.events.closed() => return,
            }
        }
    }

    async fn subscribe(&self) -> Result<redis::aio::PubSub, Error> {
        let connect = async {
            // Resolved each time: with Sentinel, the master may have moved.
            let client = self.config.resolve().await?;
            let mut pubsub = client.get_async_pubsub().await.map_err(classify_log)?;
            pubsub
                .subscribe(&self.channel)
                .await
                .map_err(classify_log)?;
            Ok::<_, Error>(pubsub)
        };
        match tokio::time::timeout(self.config.connect_timeout, connect).await {
            Ok(result) => result,
            Err(_) => Err(Error::unavailable(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "subscribing timed out",
            ))),
        }
    }

    /// Forwards messages until the connection ends (`true`) or the cache is gone (`false`).
    async fn forward(&self, mut pubsub: redis::aio::PubSub) -> bool {
        let mut messages = pubsub.on_message();
        loop {
            let message = tokio::select! {
                m = messages.next() => m,
                () = self.events.closed() => return false,
            };
            let Some(message) = message else { return true };
            match (self.decode)(message.get_payload_bytes()) {
                Ok(Some(event)) => {
                    if self.events.send(event).is_err() {
                        return false;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(channel = %self.channel, error = %e, "ignoring foreign message")
                }
            }
        }
    }
}
