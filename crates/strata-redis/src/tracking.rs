//! Server-assisted invalidation: the server reports every write to a namespace's data keys
//! that this store did not make — another instance's, or one made outside Strata's protocol
//! (a legacy service's `DEL`, `redis-cli`) — and the cache drops those keys from L1.
//!
//! How (Redis 6 on, `docs/protocol.md` §6):
//!
//! - a **receiver**, a RESP3 connection of its own, is told the invalidations as pushes —
//!   one per master on a cluster, each for the writes on its master;
//! - the engine's **own connection** (on one server every socket of it, see [`crate::wire`];
//!   on a cluster, the cluster connection's connection to each master) turns tracking on
//!   with `CLIENT TRACKING ON REDIRECT <receiver> BCAST PREFIX <namespace>: … NOLOOP`.
//!   `BCAST`: every write under the prefixes is reported, not only keys this client read
//!   (our reads are `SET … NX GET`, which tracking does not count as reads). `NOLOOP`: not
//!   the writes of the connection that turned it on — ours. That is why it is the engine's
//!   connection that tracks, and not the receiver.
//!
//! Whenever it cannot vouch that every write was reported — a receiver reconnected (its id
//! changed), the engine's connection opened a new socket, a probe every second finds a
//! connection no longer tracking (on a cluster: or the masters changed), the tracking was
//! turned off and on again to add a namespace, the server flushed the database — each
//! namespace gets a [`LogEvent::Resync`] and drops its L1, as after a gap in the log.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{PushInfo, PushKind, Value};
use strata::Error;
use strata::invalidation::{Invalidation, LogEvent, Subscription, Target};
use tokio::sync::{mpsc, oneshot, watch};

use crate::client_tracking::{Tracking, TrackingSpec};
use crate::config::RedisConfig;
use crate::connection::Connection;
use crate::error::classify;
use crate::reconnect::reconnect_backoff;

/// How often the receiver is probed: a server that stalls or a receiver killed by an
/// operator is noticed within this.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The name the receiver gives itself (`CLIENT LIST`).
const RECEIVER_NAME: &str = "strata:tracking";

/// The namespaces tracked through one store's connection, and its receivers.
pub(crate) struct Tracker {
    config: RedisConfig,
    conn: Connection,
    /// One server's: the sockets of the engine's connection (`None` on a cluster).
    tracking: Option<Arc<Tracking>>,
    state: Mutex<State>,
}

/// A server (`None`) or a cluster's master (its address).
type Node = Option<(String, u16)>;

#[derive(Default)]
struct State {
    /// Each node's receiver's client id, while they are connected.
    receivers: Vec<(Node, i64)>,
    feeds: Vec<Feed>,
}

/// One cache's feed: the keys under `prefix`, with it taken off.
struct Feed {
    prefix: String,
    events: mpsc::UnboundedSender<LogEvent>,
}

impl Tracker {
    /// Starts tracking through `conn` (on one server, its sockets share `tracking`) with a
    /// first feed for `namespace`; returns once the server reports to the receivers.
    pub(crate) async fn start(
        config: &RedisConfig,
        conn: Connection,
        tracking: Option<Arc<Tracking>>,
        namespace: &str,
    ) -> Result<(Arc<Self>, Subscription), Error> {
        let (events, feed) = mpsc::unbounded_channel();
        let tracker = Arc::new(Tracker {
            config: config.clone(),
            conn,
            tracking,
            state: Mutex::new(State {
                receivers: Vec::new(),
                feeds: vec![Feed {
                    prefix: prefix(namespace),
                    events,
                }],
            }),
        });
        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::spawn(tracker.clone().run(ready_tx));
        match ready_rx.await {
            Ok(Ok(())) => Ok((tracker, feed)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Config(
                "the write tracker stopped before it began".into(),
            )),
        }
    }

    /// Whether it still runs (it stops once every cache it served is gone).
    pub(crate) fn running(&self) -> bool {
        self.lock().feeds.iter().any(|f| !f.events.is_closed())
    }

    /// A feed for one more namespace. Tracking is turned off and on again with its prefix
    /// added: the other feeds resync (the writes in between went unreported).
    pub(crate) async fn add(&self, namespace: &str) -> Result<Subscription, Error> {
        let (events, feed) = mpsc::unbounded_channel();
        let connected = {
            let mut state = self.lock();
            state.feeds.push(Feed {
                prefix: prefix(namespace),
                events,
            });
            !state.receivers.is_empty()
        };
        // No receivers now: they apply every prefix when they are back, and resync all.
        if connected {
            self.apply().await?;
            self.resync_all(Some(namespace));
        }
        Ok(feed)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Turns tracking on for every prefix on every node, reported to its receiver.
    async fn apply(&self) -> Result<(), Error> {
        let (receivers, prefixes) = {
            let state = self.lock();
            let mut prefixes: Vec<String> = state.feeds.iter().map(|f| f.prefix.clone()).collect();
            prefixes.sort();
            prefixes.dedup();
            (state.receivers.clone(), prefixes)
        };
        for (node, redirect) in receivers {
            let spec = TrackingSpec {
                redirect,
                prefixes: prefixes.clone(),
            };
            self.conn
                .track(node.as_ref(), spec)
                .await
                .map_err(classify)?;
        }
        Ok(())
    }

    /// Every feed (but `except`'s) drops its L1.
    fn resync_all(&self, except: Option<&str>) {
        let skip = except.map(prefix);
        for feed in &self.lock().feeds {
            if skip.as_ref() != Some(&feed.prefix) {
                let _ = feed.events.send(LogEvent::Resync);
            }
        }
    }

    /// Keeps the receivers connected and tracking applied until every feed is gone.
    async fn run(self: Arc<Self>, ready: oneshot::Sender<Result<(), Error>>) {
        let mut ready = Some(ready);
        let mut backoff = reconnect_backoff();
        // Told of every socket the engine's connection opens from now on (one server).
        let mut opened = self.tracking.as_ref().map(|t| t.opened());
        loop {
            match self.connect(&mut opened).await {
                Ok((conns, pushes)) => {
                    match ready.take() {
                        Some(ready) => drop(ready.send(Ok(()))),
                        None => {
                            tracing::info!("write tracking restored; dropping L1");
                            self.resync_all(None);
                        }
                    }
                    backoff = reconnect_backoff();
                    let lost = self.forward(conns, pushes, &mut opened).await;
                    self.lock().receivers.clear();
                    if !lost {
                        return;
                    }
                    // Writes from now on go unreported until the receiver is back.
                    tracing::warn!("write tracking lost; dropping L1 and reconnecting");
                    self.resync_all(None);
                }
                Err(e) => {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Err(e));
                        return;
                    }
                    tracing::debug!(error = %e, "write tracking failed to reconnect");
                }
            }
            if !self.running() {
                return;
            }
            let delay = backoff.next().unwrap_or(Duration::from_secs(5));
            tokio::time::sleep(delay).await;
        }
    }

    /// A receiver on each node (one server — with Sentinel, the master of the moment — or
    /// each master of a cluster), and tracking turned on towards them, within the connect
    /// timeout.
    async fn connect(
        &self,
        opened: &mut Option<watch::Receiver<u64>>,
    ) -> Result<
        (
            Vec<MultiplexedConnection>,
            mpsc::UnboundedReceiver<PushInfo>,
        ),
        Error,
    > {
        let connect = async {
            let (tx, pushes) = mpsc::unbounded_channel();
            let mut conns = Vec::new();
            let mut receivers = Vec::new();
            for node in self.conn.tracked_nodes().await? {
                let at = node.as_ref().map(|(h, p)| (h.as_str(), *p));
                let mut conn = self.config.push_connection(at, tx.clone()).await?;
                let (_, id): ((), i64) = redis::pipe()
                    .cmd("CLIENT")
                    .arg("SETNAME")
                    .arg(RECEIVER_NAME)
                    .cmd("CLIENT")
                    .arg("ID")
                    .query_async(&mut conn)
                    .await
                    .map_err(classify)?;
                conns.push(conn);
                receivers.push((node, id));
            }
            self.lock().receivers = receivers;
            self.apply().await?;
            // Sockets opened before this applied the old receiver (or none): this one is what
            // counts from now on.
            if let Some(opened) = opened {
                opened.borrow_and_update();
            }
            Ok((conns, pushes))
        };
        match tokio::time::timeout(self.config.connect_timeout, connect).await {
            Ok(result) => result,
            Err(_) => Err(Error::unavailable(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connecting the write tracker timed out",
            ))),
        }
    }

    /// Hands reported writes to the feeds until tracking is lost (`true`) or every feed is
    /// gone (`false`).
    async fn forward(
        &self,
        mut conns: Vec<MultiplexedConnection>,
        mut pushes: mpsc::UnboundedReceiver<PushInfo>,
        opened: &mut Option<watch::Receiver<u64>>,
    ) -> bool {
        let mut probe = tokio::time::interval(PROBE_EVERY);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let reopened = async {
                match opened {
                    Some(opened) => opened.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                push = pushes.recv() => {
                    let Some(push) = push else { return true };
                    match push.kind {
                        PushKind::Invalidate => self.dispatch(&push.data),
                        PushKind::Disconnection => return true,
                        _ => {}
                    }
                }
                still = reopened => {
                    if !still {
                        return false;
                    }
                    // A new socket of the engine's: writes between the old one's end and
                    // its tracking went unreported.
                    tracing::info!("the tracking connection reconnected; dropping L1");
                    self.resync_all(None);
                }
                _ = probe.tick() => {
                    if !self.running() {
                        return false;
                    }
                    if let Err(e) = self.probe(&mut conns).await {
                        tracing::debug!(error = %e, "write tracker probe failed");
                        return true;
                    }
                }
            }
        }
    }

    /// Every receiver answers, the nodes are the same (on a cluster: the masters), and the
    /// engine's connection to each still tracks towards its receiver.
    async fn probe(&self, conns: &mut [MultiplexedConnection]) -> Result<(), Error> {
        for conn in conns.iter_mut() {
            redis::cmd("PING")
                .query_async::<()>(conn)
                .await
                .map_err(classify)?;
        }
        let lost = || {
            Error::unavailable(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "a connection no longer tracks, or the masters changed",
            ))
        };
        let receivers = self.lock().receivers.clone();
        let mut nodes = self.conn.tracked_nodes().await?;
        let mut tracked: Vec<Node> = receivers.iter().map(|(n, _)| n.clone()).collect();
        nodes.sort();
        tracked.sort();
        if nodes != tracked {
            return Err(lost());
        }
        for (node, redirect) in &receivers {
            if !self
                .conn
                .still_tracks(node.as_ref(), *redirect)
                .await
                .map_err(classify)?
            {
                return Err(lost());
            }
        }
        Ok(())
    }

    /// One `invalidate` push: the keys written (each to the feeds whose prefix it has), or
    /// nil when the server flushed the database.
    fn dispatch(&self, data: &[Value]) {
        if data.iter().any(|v| matches!(v, Value::Nil)) {
            return self.resync_all(None);
        }
        let keys = data.iter().flat_map(|value| match value {
            Value::Array(items) | Value::Set(items) => items.as_slice(),
            other => std::slice::from_ref(other),
        });
        let state = self.lock();
        for key in keys {
            let Value::BulkString(key) = key else {
                continue;
            };
            for feed in &state.feeds {
                let Some(rest) = key.strip_prefix(feed.prefix.as_bytes()) else {
                    continue;
                };
                // Not UTF-8: no cache key of ours; nothing of it can be in L1.
                if let Ok(rest) = std::str::from_utf8(rest) {
                    let _ = feed.events.send(LogEvent::Apply(Invalidation {
                        origin: Invalidation::FOREIGN,
                        target: Target::Key(rest.to_owned()),
                    }));
                }
            }
        }
    }
}

/// The prefix of a namespace's data keys (`<namespace>:`; no other key of ours has it, and
/// no other namespace's keys: a namespace has no `:`).
fn prefix(namespace: &str) -> String {
    strata::keys::data_key(namespace, "")
}
