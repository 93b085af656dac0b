//! `Wire`: the engine's own connection to one server over TCP — commands written straight
//! into a shared buffer, gathered into one write, their replies read by one task.
//!
//! Why our own (and not the `redis` crate's multiplexed connection, which every other
//! connection of this crate still is): an L2 hit is one command, and the client's share of
//! it was mostly the transport — the command copied into a pipeline, sent over a channel to
//! the connection's driver, written, the reply parsed by parser combinators, handed back
//! through two channels (BENCHMARKS.md, "Our own connection"). Here a command is encoded
//! once, into the bytes that go out; replies are read in one pass ([`crate::resp`]) and
//! handed to their senders in order.
//!
//! **Gathering.** The first command of a batch wakes the writer task, which first goes once
//! to the back of its worker's run queue: what the tasks queued ahead of it send joins the
//! same write. Redis spends about as much on an event-loop turn that carries one command as
//! on one that carries ten (BENCHMARKS.md, "Auto-pipelining"). Why the back of the queue
//! and not Tokio's `yield_now`: [`crate::requeue`].
//!
//! **Failures.** A command waits at most the command timeout for its reply (a late reply
//! still arrives in order and is dropped). The reader task keeps that time for every command
//! with one timer, set to the oldest command's deadline (replies come in order, so no later
//! command is due before it), instead of a timer per command: a timer costs a registration
//! in Tokio's wheel and its removal, ~2 % of the bench process under W1 (BENCHMARKS.md, "A
//! flight's slot, one timer per connection, a smaller miss future"). A broken connection
//! fails every command in flight with the I/O error and is replaced by the next command, one
//! connection attempt at a time, as the `redis` crate's connection manager does with its
//! retries off: the cache's guard does the retrying and the breaking.
//!
//! **Tracking.** With [`Tracking`] set, every socket turns on server-assisted invalidation
//! for the namespaces' data keys as soon as it is authenticated (`CLIENT TRACKING ON
//! REDIRECT <receiver> BCAST PREFIX … NOLOOP`, see [`crate::tracking`]): it must be this
//! connection, the one the engine writes on, so that `NOLOOP` keeps our own writes from
//! coming back as invalidations.
//!
//! TLS and Unix-socket servers keep the `redis` crate's connection
//! ([`crate::autopipeline`]).

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use redis::{Cmd, ConnectionAddr, ErrorKind, Pipeline, RedisError, RedisResult, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, oneshot};
use tokio::task::AbortHandle;

use crate::client_tracking::{Tracking, TrackingSpec};
use crate::requeue::requeue;
use crate::resp;

/// What a read asks of the socket at least: most reads carry several replies.
const READ_CHUNK: usize = 64 * 1024;

/// A write buffer that grew past this for a burst is let go once written.
const KEEP_BUFFER: usize = 1024 * 1024;

/// Where and how to connect.
struct Target {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
    db: i64,
    connect_timeout: Duration,
    response_timeout: Duration,
}

/// The engine's connection to one server: reconnects on the next command after a failure.
pub(crate) struct Wire {
    target: Target,
    /// Server-assisted invalidation, when a cache asked for it (shared by the connections
    /// that replace this one).
    tracking: Option<Arc<Tracking>>,
    /// The socket of the moment (`None` before the first command).
    current: Mutex<Option<Arc<Socket>>>,
    /// Held while connecting: one attempt at a time.
    connecting: tokio::sync::Mutex<()>,
}

impl Wire {
    /// A connection to `client`'s server with these timeouts, connecting on first use; `None`
    /// if the server is reached over TLS or a Unix socket.
    pub(crate) fn new(
        client: &redis::Client,
        connect_timeout: Duration,
        response_timeout: Duration,
        tracking: Option<Arc<Tracking>>,
    ) -> Option<Arc<Self>> {
        let info = client.get_connection_info();
        let ConnectionAddr::Tcp(host, port) = info.addr() else {
            return None;
        };
        let settings = info.redis_settings();
        Some(Arc::new(Wire {
            target: Target {
                host: host.clone(),
                port: *port,
                username: settings.username().map(str::to_owned),
                password: settings.password().map(str::to_owned),
                db: settings.db(),
                connect_timeout,
                response_timeout,
            },
            tracking,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        }))
    }

    /// The database selected.
    pub(crate) fn db(&self) -> i64 {
        self.target.db
    }

    /// Connects now if not connected: to fail early on an unreachable server or bad
    /// credentials.
    pub(crate) async fn connect(&self) -> RedisResult<()> {
        self.socket().await.map(drop)
    }

    /// Turns tracking on as `spec` says on the socket of the moment (connecting if there is
    /// none), and on every socket opened after it: `OFF`, then `ON` (the server refuses a
    /// prefix given twice). Writes of others in between are not reported: the caller
    /// drops what they may have changed.
    pub(crate) async fn track(&self, spec: TrackingSpec) -> RedisResult<()> {
        let Some(tracking) = &self.tracking else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this connection does not track",
            )
            .into());
        };
        // Under the connect lock: a socket opening now applies either the old spec and then
        // this one, or this one alone.
        let _one = self.connecting.lock().await;
        tracking.set(spec.clone());
        let Some(socket) = self.live() else {
            // A new socket applies the spec as it opens.
            let socket = self.open().await?;
            if let Some(old) = lock(&self.current).replace(socket.clone()) {
                old.close();
            }
            return Ok(());
        };
        let mut pipe = redis::pipe();
        pipe.cmd("CLIENT").arg("TRACKING").arg("OFF");
        pipe.add_command(spec.command());
        for reply in self.pipeline_on(&socket, &pipe, 0, 2).await? {
            reply.extract_error()?;
        }
        Ok(())
    }

    /// Sends `cmd` with whatever else is sent meanwhile; its reply (a server error as
    /// [`Value::ServerError`], as the `redis` crate's connections give it).
    pub(crate) async fn send(&self, cmd: &Cmd) -> RedisResult<Value> {
        let socket = self.socket().await?;
        self.send_on(&socket, cmd).await
    }

    /// [`send`](Self::send) for a command of [`resp::Arg`]s, written straight into the
    /// socket's buffer.
    pub(crate) async fn send_args(&self, args: &[resp::Arg<'_>]) -> RedisResult<Value> {
        let socket = self.socket().await?;
        exchange(&socket, |out| resp::encode(args, out)).await
    }

    async fn send_on(&self, socket: &Socket, cmd: &Cmd) -> RedisResult<Value> {
        exchange(socket, |out| cmd.write_packed_command(out)).await
    }

    /// Sends a pipeline (in one write); of its `offset + count` replies, the last `count`
    /// (a transaction's `EXEC` after its `MULTI` and `QUEUED`s).
    pub(crate) async fn send_pipeline(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        if offset + count == 0 {
            return Ok(Vec::new());
        }
        let socket = self.socket().await?;
        self.pipeline_on(&socket, pipeline, offset, count).await
    }

    async fn pipeline_on(
        &self,
        socket: &Socket,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let (tx, rx) = oneshot::channel();
        let waiter = Waiter::Many {
            skip: offset,
            values: Vec::with_capacity(count),
            take: count,
            tx,
        };
        socket.enqueue(
            |out| out.extend_from_slice(&pipeline.get_packed_pipeline()),
            waiter,
        )?;
        reply(rx).await?
    }

    /// The connected socket, connecting if there is none or it failed.
    async fn socket(&self) -> RedisResult<Arc<Socket>> {
        if let Some(socket) = self.live() {
            return Ok(socket);
        }
        let _one = self.connecting.lock().await;
        if let Some(socket) = self.live() {
            return Ok(socket);
        }
        let socket = self.open().await?;
        if let Some(old) = lock(&self.current).replace(socket.clone()) {
            old.close();
        }
        Ok(socket)
    }

    fn live(&self) -> Option<Arc<Socket>> {
        lock(&self.current)
            .as_ref()
            .filter(|s| !s.failed.load(Ordering::Acquire))
            .cloned()
    }

    /// A new socket, authenticated and on its database.
    async fn open(&self) -> RedisResult<Arc<Socket>> {
        let t = &self.target;
        let stream = tokio::time::timeout(
            t.connect_timeout,
            TcpStream::connect((t.host.as_str(), t.port)),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connecting timed out"))??;
        stream.set_nodelay(true)?;
        let socket = Socket::start(stream, t.response_timeout);
        if let Err(e) = self.handshake(&socket).await {
            socket.close();
            return Err(e);
        }
        if let Some(tracking) = &self.tracking {
            tracking.opened_one();
        }
        Ok(socket)
    }

    /// `AUTH` (a refusal is an authentication failure, as the `redis` crate reports it) and
    /// `SELECT`, as the URL asks.
    async fn handshake(&self, socket: &Socket) -> RedisResult<()> {
        let t = &self.target;
        if let Some(password) = &t.password {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = &t.username {
                auth.arg(user);
            }
            auth.arg(password);
            self.send_on(socket, &auth)
                .await?
                .extract_error()
                .map_err(|e| {
                    RedisError::from((
                        ErrorKind::AuthenticationFailed,
                        "Password authentication failed",
                        e.to_string(),
                    ))
                })?;
        }
        if t.db != 0 {
            self.send_on(socket, redis::cmd("SELECT").arg(t.db))
                .await?
                .extract_error()?;
        }
        let spec = self.tracking.as_ref().and_then(|t| t.spec());
        if let Some(spec) = spec {
            // Refused (the receiver is gone, the ACL lacks `+client|tracking`): the socket
            // still serves; the receiver, told of the new socket, starts over.
            if let Err(e) = self.send_on(socket, &spec.command()).await?.extract_error() {
                tracing::warn!(error = %e, "CLIENT TRACKING refused on a new connection");
            }
        }
        Ok(())
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        if let Some(socket) = lock(&self.current).take() {
            socket.close();
        }
    }
}

/// Who waits for which replies, in the order their commands went into the stream.
enum Waiter {
    One(oneshot::Sender<RedisResult<Value>>),
    /// A pipeline: `skip` replies dropped, then `take` gathered.
    Many {
        skip: usize,
        values: Vec<Value>,
        take: usize,
        tx: oneshot::Sender<RedisResult<Vec<Value>>>,
    },
    /// Given up on (timed out): this many replies still to come are dropped.
    Expired(usize),
}

impl Waiter {
    /// Hands over `reply`; the waiter back if it wants more.
    fn give(self, reply: Value) -> Option<Self> {
        match self {
            Waiter::One(tx) => {
                // The caller may have given up (timed out, dropped): nothing to do then.
                let _ = tx.send(Ok(reply));
                None
            }
            Waiter::Many {
                mut skip,
                mut values,
                take,
                tx,
            } => {
                if skip > 0 {
                    skip -= 1;
                } else {
                    values.push(reply);
                }
                if skip > 0 || values.len() < take {
                    return Some(Waiter::Many {
                        skip,
                        values,
                        take,
                        tx,
                    });
                }
                let _ = tx.send(Ok(values));
                None
            }
            Waiter::Expired(left) => (left > 1).then(|| Waiter::Expired(left - 1)),
        }
    }

    /// Replies still to come for this waiter.
    fn left(&self) -> usize {
        match self {
            Waiter::One(_) => 1,
            Waiter::Many {
                skip, values, take, ..
            } => skip + take - values.len(),
            Waiter::Expired(left) => *left,
        }
    }

    fn fail(self, e: RedisError) {
        match self {
            Waiter::One(tx) => drop(tx.send(Err(e))),
            Waiter::Many { tx, .. } => drop(tx.send(Err(e))),
            Waiter::Expired(_) => {}
        }
    }
}

/// One TCP connection and its two tasks.
struct Socket {
    pending: Mutex<Pending>,
    /// Wakes the writer: a batch has begun.
    wake: Notify,
    /// Set once it failed or was closed: new commands go to a new socket.
    failed: AtomicBool,
    tasks: Mutex<Vec<AbortHandle>>,
    /// How long a command waits for its reply.
    timeout: Duration,
}

#[derive(Default)]
struct Pending {
    /// Encoded commands not yet written.
    out: Vec<u8>,
    /// In the order of their commands, each with its deadline.
    waiting: VecDeque<(Instant, Waiter)>,
    /// The writer was woken for what is in `out`.
    scheduled: bool,
    /// Why the socket failed: later commands fail with it at once.
    failed: Option<RedisError>,
}

impl Socket {
    fn start(stream: TcpStream, timeout: Duration) -> Arc<Self> {
        let (read, write) = stream.into_split();
        let socket = Arc::new(Socket {
            pending: Mutex::default(),
            wake: Notify::new(),
            failed: AtomicBool::new(false),
            tasks: Mutex::default(),
            timeout,
        });
        let reader = tokio::spawn(socket.clone().read(read)).abort_handle();
        let writer = tokio::spawn(socket.clone().write(write)).abort_handle();
        lock(&socket.tasks).extend([reader, writer]);
        if socket.failed.load(Ordering::Acquire) {
            // It failed before its tasks were registered: they are stopped here instead.
            for task in lock(&socket.tasks).drain(..) {
                task.abort();
            }
        }
        socket
    }

    /// Adds a command (`encode` writes its bytes) and its waiter to the next write.
    fn enqueue(&self, encode: impl FnOnce(&mut Vec<u8>), waiter: Waiter) -> RedisResult<()> {
        let wake = {
            let mut pending = lock(&self.pending);
            if let Some(e) = &pending.failed {
                return Err(e.clone());
            }
            encode(&mut pending.out);
            let deadline = Instant::now() + self.timeout;
            pending.waiting.push_back((deadline, waiter));
            !std::mem::replace(&mut pending.scheduled, true)
        };
        if wake {
            self.wake.notify_one();
        }
        Ok(())
    }

    async fn write(self: Arc<Self>, mut stream: OwnedWriteHalf) {
        let mut batch = Vec::new();
        loop {
            self.wake.notified().await;
            // The tasks queued now run first; what they send joins this write.
            requeue().await;
            {
                let mut pending = lock(&self.pending);
                pending.scheduled = false;
                std::mem::swap(&mut pending.out, &mut batch);
            }
            if let Err(e) = stream.write_all(&batch).await {
                return self.fail(e.into());
            }
            batch.clear();
            if batch.capacity() > KEEP_BUFFER {
                batch = Vec::new();
            }
        }
    }

    async fn read(self: Arc<Self>, mut stream: OwnedReadHalf) {
        let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
        let mut replies = Vec::new();
        // Set to the oldest command's deadline when it fires; it never needs to be earlier
        // (a command sent later is due later).
        let timer = tokio::time::sleep(self.timeout);
        let mut timer = std::pin::pin!(timer);
        loop {
            if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                buf.reserve(READ_CHUNK);
            }
            let read = tokio::select! {
                biased;
                read = stream.read_buf(&mut buf) => read,
                () = &mut timer => {
                    let next = self.expire();
                    timer.as_mut().reset(next.into());
                    continue;
                }
            };
            match read {
                Ok(0) => {
                    let closed = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    );
                    return self.fail(closed.into());
                }
                Ok(_) => {}
                Err(e) => return self.fail(e.into()),
            }
            let mut used = 0;
            loop {
                match resp::parse(&buf[used..]) {
                    Ok(Some((reply, len))) => {
                        replies.push(reply);
                        used += len;
                    }
                    Ok(None) => break,
                    Err(e) => return self.fail(e),
                }
            }
            buf.drain(..used);
            if !replies.is_empty() && !self.deliver(&mut replies) {
                let stray = io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the server sent a reply no command waits for",
                );
                return self.fail(stray.into());
            }
        }
    }

    /// Hands `replies` to their waiters, in order; false if there were more replies than
    /// waiters (the stream is out of step).
    fn deliver(&self, replies: &mut Vec<Value>) -> bool {
        let mut pending = lock(&self.pending);
        for reply in replies.drain(..) {
            let Some((deadline, waiter)) = pending.waiting.pop_front() else {
                return false;
            };
            if let Some(more) = waiter.give(reply) {
                pending.waiting.push_front((deadline, more));
            }
        }
        true
    }

    /// Times out the commands past their deadline (their replies, when they come, are
    /// dropped); when to look again: the next command's deadline, or a timeout from now.
    fn expire(&self) -> Instant {
        let now = Instant::now();
        let mut expired = Vec::new();
        let next = {
            let mut pending = lock(&self.pending);
            let mut next = None;
            for (deadline, waiter) in &mut pending.waiting {
                if matches!(waiter, Waiter::Expired(_)) {
                    continue;
                }
                if *deadline > now {
                    next = Some(*deadline);
                    break;
                }
                let left = waiter.left();
                expired.push(std::mem::replace(waiter, Waiter::Expired(left)));
            }
            next
        };
        for waiter in expired {
            waiter.fail(io::Error::new(io::ErrorKind::TimedOut, "no reply in time").into());
        }
        next.unwrap_or(now + self.timeout)
    }

    /// Fails every command in flight and later ones with `e`, and stops the tasks.
    fn fail(&self, e: RedisError) {
        self.failed.store(true, Ordering::Release);
        let waiting = {
            let mut pending = lock(&self.pending);
            pending.failed.get_or_insert(e.clone());
            std::mem::take(&mut pending.waiting)
        };
        for (_, waiter) in waiting {
            waiter.fail(e.clone());
        }
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }

    fn close(&self) {
        self.fail(
            io::Error::new(io::ErrorKind::NotConnected, "the connection was replaced").into(),
        );
    }
}

/// Sends one command (`encode` writes it) on `socket`; its reply.
async fn exchange(socket: &Socket, encode: impl FnOnce(&mut Vec<u8>)) -> RedisResult<Value> {
    let (tx, rx) = oneshot::channel();
    socket.enqueue(encode, Waiter::One(tx))?;
    reply(rx).await?
}

/// The reply `rx` brings: the socket's reader hands it over, or its timeout (see
/// [`Socket::expire`]) or the connection's failure.
async fn reply<T>(rx: oneshot::Receiver<RedisResult<T>>) -> RedisResult<RedisResult<T>> {
    rx.await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "the connection was closed before the reply",
        )
        .into()
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Duration;

    use redis::Value;
    use strata_testkit::RedisServer;

    use super::Wire;
    use crate::connection::{Link, RedisConnection};
    use crate::requeue::requeue;

    fn wire(redis: &RedisServer, response: Duration) -> Arc<Wire> {
        let client = redis::Client::open(redis.url()).unwrap();
        Wire::new(&client, Duration::from_secs(2), response, None).expect("a TCP server")
    }

    /// Many tasks at once: each gets its own reply, in whatever writes they were gathered
    /// into, and a server error stays the one command's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commands_keep_their_replies() {
        const N: usize = 1_200;
        let redis = RedisServer::start();
        redis.cli(&["SET", "text", "not a number"]);
        let wire = wire(&redis, Duration::from_secs(5));
        let tasks: Vec<_> = (0..N)
            .map(|i| {
                let wire = wire.clone();
                tokio::spawn(async move {
                    let key = if i == N / 2 {
                        "text".into()
                    } else {
                        format!("n{i}")
                    };
                    (i, wire.send(redis::cmd("INCRBY").arg(&key).arg(i)).await)
                })
            })
            .collect();
        for task in tasks {
            let (i, reply) = task.await.unwrap();
            let reply = reply.and_then(Value::extract_error);
            if i == N / 2 {
                assert!(reply.is_err(), "INCRBY of a string fails alone: {reply:?}");
            } else {
                assert_eq!(reply.unwrap(), Value::Int(i as i64), "reply of command {i}");
            }
        }
    }

    /// The writer waits for the tasks queued ahead of it, not for its worker to run out of
    /// work: on a worker that never idles (a task always runnable, 100 µs a poll; I/O is
    /// looked at every 61 polls), a command's reply comes at the first look after its round
    /// trip — not a whole interval later, as with Tokio's `yield_now`, which held the write
    /// back to the next look (~120 polls a command; the fewest of five is asserted).
    #[tokio::test]
    async fn a_worker_that_never_idles_does_not_hold_a_write_back() {
        let redis = RedisServer::start();
        let wire = wire(&redis, Duration::from_secs(5));
        let ping = redis::cmd("PING");
        wire.send(&ping).await.unwrap(); // connected
        let (polls, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let busy = tokio::spawn({
            let (polls, stop) = (polls.clone(), stop.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let started = std::time::Instant::now();
                    while started.elapsed() < Duration::from_micros(100) {
                        std::hint::spin_loop();
                    }
                    polls.fetch_add(1, Ordering::Relaxed);
                    requeue().await;
                }
            }
        });
        // Sent from a task (the test's own future is looked at once an interval, too).
        let fewest = tokio::spawn({
            let polls = polls.clone();
            async move {
                let mut fewest = u64::MAX;
                for _ in 0..5 {
                    let before = polls.load(Ordering::Relaxed);
                    wire.send(&ping).await.unwrap();
                    fewest = fewest.min(polls.load(Ordering::Relaxed) - before);
                }
                fewest
            }
        })
        .await
        .unwrap();
        stop.store(true, Ordering::Relaxed);
        busy.await.unwrap();
        assert!(
            fewest < 90,
            "a command took {fewest} polls of a busy task: its write waited for the worker to idle"
        );
    }

    /// Pipelines and transactions (whose `MULTI` and `QUEUED` replies are skipped) answer as
    /// on the `redis` crate's connections.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipelines_and_transactions_answer_their_own_values() {
        let redis = RedisServer::start();
        let mut conn = RedisConnection(Link::Wire(wire(&redis, Duration::from_secs(5))));
        let (set, got): (String, String) = redis::pipe()
            .set("k", "v")
            .get("k")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!((set.as_str(), got.as_str()), ("OK", "v"));
        let (a, b): (u64, u64) = redis::pipe()
            .atomic()
            .incr("n", 1)
            .incr("n", 2)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!((a, b), (1, 3));
        let empty: Vec<u64> = redis::pipe().query_async(&mut conn).await.unwrap();
        assert!(empty.is_empty());
    }

    /// The database the URL names is the one written to.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn it_selects_the_database_of_the_url() {
        let redis = RedisServer::start();
        let client = redis::Client::open(format!("{}/3", redis.url())).unwrap();
        let wire = Wire::new(
            &client,
            Duration::from_secs(2),
            Duration::from_secs(5),
            None,
        )
        .unwrap();
        assert_eq!(wire.db(), 3);
        wire.send(redis::cmd("SET").arg("k").arg("in 3"))
            .await
            .unwrap();
        assert_eq!(redis.cli(&["-n", "3", "GET", "k"]).trim(), "in 3");
        assert_eq!(redis.cli(&["GET", "k"]).trim(), "");
    }

    /// A killed connection fails what was in flight, and the next command goes out on a new
    /// one; a frozen server times commands out, and they answer again once it thaws.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn it_reconnects_after_a_kill_and_times_out_on_a_frozen_server() {
        let redis = RedisServer::start();
        let wire = wire(&redis, Duration::from_millis(300));
        let ping = || async { wire.send(&redis::cmd("PING")).await };
        assert_eq!(ping().await.unwrap(), Value::SimpleString("PONG".into()));
        redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
        strata_testkit::eventually(
            "a PONG on a new connection",
            Duration::from_secs(5),
            || async { matches!(ping().await, Ok(Value::SimpleString(_))) },
        )
        .await;
        redis.freeze();
        let frozen = ping().await.unwrap_err();
        redis.thaw();
        assert!(frozen.is_timeout(), "{frozen:?}");
        strata_testkit::eventually("a reply once thawed", Duration::from_secs(5), || async {
            ping().await.is_ok()
        })
        .await;
    }

    /// Commands timed out on a frozen server (one alone, a pipeline, several in one write)
    /// get their errors; their replies, arriving once it thaws, go to nobody: each later
    /// command gets its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replies_to_timed_out_commands_are_dropped_in_order() {
        let redis = RedisServer::start();
        let wire = wire(&redis, Duration::from_millis(300));
        let echo = |text: &'static str| {
            let wire = wire.clone();
            async move { wire.send(redis::cmd("ECHO").arg(text)).await }
        };
        let pair = |a: &'static str, b: &'static str| {
            let wire = wire.clone();
            async move {
                let mut pipe = redis::pipe();
                pipe.cmd("ECHO").arg(a).cmd("ECHO").arg(b);
                wire.send_pipeline(&pipe, 0, 2).await
            }
        };
        assert_eq!(echo("up").await.unwrap(), Value::BulkString(b"up".to_vec()));
        redis.freeze();
        let (one, two, both) =
            tokio::join!(echo("late 1"), echo("late 2"), pair("late 3", "late 4"));
        redis.thaw();
        for e in [one.unwrap_err(), two.unwrap_err(), both.unwrap_err()] {
            assert!(e.is_timeout(), "{e:?}");
        }
        assert_eq!(echo("b").await.unwrap(), Value::BulkString(b"b".to_vec()));
        assert_eq!(
            pair("c", "d").await.unwrap(),
            vec![
                Value::BulkString(b"c".to_vec()),
                Value::BulkString(b"d".to_vec())
            ]
        );
    }
}
