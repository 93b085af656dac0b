//! `RedisPubSub`: the invalidation backplane on Redis pub/sub.

use std::sync::Arc;
use std::time::Duration;

use crate::error::classify_log;
use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::{PushInfo, PushKind, RedisError, Value};
use strata::Error;
use strata::invalidation::{Invalidation, InvalidationLog, LogEvent, Position, Subscription};
use tokio::sync::{mpsc, oneshot};

use crate::config::RedisConfig;
use crate::connection::Connection;
use crate::layout::channel_probe;
use crate::reconnect::reconnect_backoff;

/// Invalidations over Redis pub/sub, one channel per namespace:
/// `strata:invalidate:<namespace>`, carrying [`Invalidation`]'s JSON wire form.
///
/// Pub/sub delivers only to connected subscribers, so each follower has its own connection and,
/// whenever it reconnects, emits [`LogEvent::Resync`]: the cache then drops its whole L1 rather
/// than risk serving a value whose invalidation it missed. The connection is probed every
/// second, so a stalled server is noticed without waiting for a message.
///
/// On a Redis Cluster the channel is sharded (`SPUBLISH`/`SSUBSCRIBE`): a message travels to
/// the master of the channel's slot and its replicas only, not over the whole cluster bus, and
/// the follower subscribes on that master — again after a failover or when the slot moves
/// (the server unsubscribes it, or answers its probe with `MOVED`), with a resync each time.
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
    async fn publish(
        &self,
        namespace: &str,
        invalidation: &Invalidation,
    ) -> Result<Option<Position>, Error> {
        // On a cluster, sharded: only the nodes of the channel's slot carry the message, not
        // every node of the cluster.
        let verb = if self.config.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        redis::cmd(verb)
            .arg(channel(namespace))
            .arg(invalidation.encode())
            .exec_async(&mut self.publisher.get())
            .await
            .map_err(|e| self.publisher.failed_log(e))?;
        // Pub/sub numbers nothing.
        Ok(None)
    }

    async fn follow(&self, namespace: &str) -> Result<Subscription, Error> {
        let decode =
            |payload: &[u8]| Invalidation::decode(payload).map(|i| Some(LogEvent::Apply(i)));
        let name = channel(namespace);
        let channel = Channel {
            sharded: self
                .config
                .is_cluster()
                .then(|| channel_probe(namespace, &name)),
            name,
        };
        subscribe(
            &self.config,
            self.publisher.clone(),
            channel,
            Arc::new(decode),
        )
        .await
    }
}

/// Turns a message into an event: `Ok(None)` for one to skip quietly, `Err` for a foreign one
/// (logged and skipped).
pub(crate) type Decode = Arc<dyn Fn(&[u8]) -> Result<Option<LogEvent>, Error> + Send + Sync>;

/// How often a subscription's connection is checked: a server that stalls or a slot that
/// moves away is noticed within this, not at the next message that never comes.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// A channel to follow: plain, or sharded (`SSUBSCRIBE`, on a cluster only) with the key its
/// subscriber probes (see [`channel_probe`]).
#[derive(Clone, Debug)]
pub(crate) struct Channel {
    pub(crate) name: String,
    pub(crate) sharded: Option<String>,
}

/// Subscribes to `channel` on a connection of its own, kept across disconnects (each
/// reconnect emits [`LogEvent::Resync`]: pub/sub loses what was sent meanwhile), each message
/// passed through `decode`. `topology` finds the node on a cluster. Returns once subscribed.
pub(crate) async fn subscribe(
    config: &RedisConfig,
    topology: Connection,
    channel: Channel,
    decode: Decode,
) -> Result<Subscription, Error> {
    let (tx, rx) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = oneshot::channel();
    let follower = Follower {
        config: config.clone(),
        topology,
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
    topology: Connection,
    channel: Channel,
    events: mpsc::UnboundedSender<LogEvent>,
    decode: Decode,
}

/// A live subscription: its connection (RESP3: it still answers commands, such as probes)
/// and what the server pushes on it.
pub(crate) struct Subscribed {
    pub(crate) conn: MultiplexedConnection,
    pub(crate) pushes: mpsc::UnboundedReceiver<PushInfo>,
}

impl Subscribed {
    /// Sends `subscribe` (a `SUBSCRIBE` or `SSUBSCRIBE` of some channels) on a connection of
    /// its own to the node of the moment for `channel` — resolved each time: with Sentinel the
    /// master may have moved; on a cluster, the slot of a `sharded` channel — all within the
    /// connect timeout. `Ok(Err(_))`: the server refused the subscription itself.
    pub(crate) async fn open(
        config: &RedisConfig,
        topology: &Connection,
        channel: &str,
        sharded: bool,
        attempt: usize,
        subscribe: &redis::Cmd,
    ) -> Result<Result<Subscribed, RedisError>, Error> {
        let connect = async {
            let node = topology
                .subscription_node(channel, sharded, attempt)
                .await?;
            let (tx, pushes) = mpsc::unbounded_channel();
            let mut conn = config
                .push_connection(node.as_ref().map(|(h, p)| (h.as_str(), *p)), tx)
                .await?;
            Ok(subscribe
                .exec_async(&mut conn)
                .await
                .map(|()| Subscribed { conn, pushes }))
        };
        match tokio::time::timeout(config.connect_timeout, connect).await {
            Ok(result) => result,
            Err(_) => Err(Error::unavailable(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "subscribing timed out",
            ))),
        }
    }
}

impl Follower {
    async fn run(self, ready: oneshot::Sender<Result<(), Error>>) {
        let mut ready = Some(ready);
        let mut backoff = reconnect_backoff();
        for attempt in 0.. {
            match self.subscribe(attempt).await {
                Ok(subscribed) => {
                    match ready.take() {
                        Some(ready) => {
                            let _ = ready.send(Ok(()));
                        }
                        // Whatever was published while we were away is lost: start over.
                        None => {
                            tracing::info!(channel = %self.channel.name, "invalidation subscription restored; dropping L1");
                            if self.events.send(LogEvent::Resync).is_err() {
                                return;
                            }
                        }
                    }
                    backoff = reconnect_backoff();
                    if !self.forward(subscribed).await {
                        return;
                    }
                    tracing::warn!(channel = %self.channel.name, "invalidation subscription lost; reconnecting");
                }
                Err(e) => {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Err(e));
                        return;
                    }
                    tracing::debug!(channel = %self.channel.name, error = %e, "invalidation subscription failed");
                }
            }
            let delay = backoff.next().unwrap_or(Duration::from_secs(5));
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.events.closed() => return,
            }
        }
    }

    /// A connection of its own, subscribed (see [`Subscribed::open`]).
    async fn subscribe(&self, attempt: usize) -> Result<Subscribed, Error> {
        let verb = match self.channel.sharded {
            Some(_) => "SSUBSCRIBE",
            None => "SUBSCRIBE",
        };
        Subscribed::open(
            &self.config,
            &self.topology,
            &self.channel.name,
            self.channel.sharded.is_some(),
            attempt,
            redis::cmd(verb).arg(&self.channel.name),
        )
        .await?
        .map_err(classify_log)
    }

    /// Forwards messages until the subscription is lost (`true`) or the cache is gone
    /// (`false`). Lost: the connection dropped, the server unsubscribed us (a sharded
    /// channel's slot moved), or a probe failed — for a sharded channel, `EXISTS` on a key
    /// in its slot, which a node that no longer serves the slot answers with `MOVED`.
    async fn forward(&self, mut subscribed: Subscribed) -> bool {
        let mut probe = tokio::time::interval(PROBE_EVERY);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let push = tokio::select! {
                push = subscribed.pushes.recv() => push,
                _ = probe.tick() => {
                    if let Err(e) = self.probe(&mut subscribed.conn).await {
                        tracing::debug!(channel = %self.channel.name, error = %e, "subscription probe failed");
                        return true;
                    }
                    continue;
                }
                () = self.events.closed() => return false,
            };
            let Some(push) = push else { return true };
            match push.kind {
                PushKind::Message | PushKind::SMessage => {
                    let payload = match push.data.get(1) {
                        Some(Value::BulkString(bytes)) => bytes.as_slice(),
                        _ => &[],
                    };
                    match (self.decode)(payload) {
                        Ok(Some(event)) => {
                            if self.events.send(event).is_err() {
                                return false;
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(channel = %self.channel.name, error = %e, "ignoring foreign message");
                        }
                    }
                }
                PushKind::Disconnection | PushKind::Unsubscribe | PushKind::SUnsubscribe => {
                    return true;
                }
                _ => {}
            }
        }
    }

    async fn probe(&self, conn: &mut MultiplexedConnection) -> Result<(), Error> {
        let probe = match &self.channel.sharded {
            Some(key) => redis::cmd("EXISTS").arg(key).clone(),
            None => redis::cmd("PING"),
        };
        probe.exec_async(conn).await.map_err(classify_log)
    }
}
