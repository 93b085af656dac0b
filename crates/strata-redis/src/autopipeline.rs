//! Auto-pipelining: the commands that the engine's tasks send at about the same moment leave
//! in one write, as one pipeline, and come back in one read.
//!
//! Why: on a loopback or LAN Redis, the server's CPU goes to system calls and wake-ups far
//! more than to commands (a `perf` profile of redis-server under W1: ~60 % in `write`,
//! `epoll_wait` and scheduling, under 1 % in Lua). It spends about the same on an event-loop
//! turn that carries one command as on one that carries ten. The multiplexed connection
//! already writes whatever is queued when its driver runs, but its driver is woken by the
//! first command and runs as soon as that task yields, so turns carry few commands; an L1 in
//! front makes them fewer still (the naive cache-aside, sending every read, gets bigger
//! batches for free). Here the first command of a batch schedules a flush that first lets
//! every task already runnable on this worker run (`yield_now`): the commands they send join
//! the batch. The cost is that wait — one pass over the ready tasks, microseconds — against a
//! Redis round trip of tens of microseconds; what it saves is a server turn per command
//! gathered (measured in BENCHMARKS.md, "Auto-pipelining").
//!
//! Replies are handed back in order, each as the single command would have had it (a server
//! error stays that command's own). A batch is sent from a task of its own, so a caller that
//! gives up waiting (a timeout, a dropped future) never strands the others.

use std::sync::{Arc, Mutex};

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, Pipeline, RedisError, RedisResult, Value};
use tokio::sync::oneshot;

/// The most commands one write carries; a busier moment makes several batches.
const MAX_BATCH: usize = 512;

/// A connection manager whose single commands are gathered into pipelines.
pub(crate) struct AutoPipeline {
    manager: ConnectionManager,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    commands: Vec<Cmd>,
    replies: Vec<oneshot::Sender<RedisResult<Value>>>,
    /// A flush is on its way: later commands join its batch.
    scheduled: bool,
}

impl AutoPipeline {
    pub(crate) fn new(manager: ConnectionManager) -> Arc<Self> {
        Arc::new(AutoPipeline {
            manager,
            queue: Mutex::default(),
        })
    }

    /// The connection manager, for what does not go through a batch (pipelines of the
    /// caller's own, which already leave in one write).
    pub(crate) fn manager(&self) -> &ConnectionManager {
        &self.manager
    }

    /// Sends `cmd` with whatever else is sent meanwhile; its reply.
    pub(crate) async fn send(self: &Arc<Self>, cmd: &Cmd) -> RedisResult<Value> {
        let (tx, rx) = oneshot::channel();
        let flush = {
            let mut queue = self.lock();
            queue.commands.push(cmd.clone());
            queue.replies.push(tx);
            !std::mem::replace(&mut queue.scheduled, true)
        };
        if flush {
            tokio::spawn(self.clone().flush());
        }
        rx.await.unwrap_or_else(|_| Err(dropped()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn flush(self: Arc<Self>) {
        // The tasks runnable now run first; what they send joins this batch.
        tokio::task::yield_now().await;
        let (commands, replies) = {
            let mut queue = self.lock();
            queue.scheduled = false;
            (
                std::mem::take(&mut queue.commands),
                std::mem::take(&mut queue.replies),
            )
        };
        let mut manager = self.manager.clone();
        let mut replies = replies.into_iter();
        if let [cmd] = commands.as_slice() {
            let reply = manager.req_packed_command(cmd).await;
            if let Some(tx) = replies.next() {
                // The caller may have given up; nothing to do then.
                let _ = tx.send(reply);
            }
            return;
        }
        let mut commands = commands.into_iter();
        while commands.len() > 0 {
            let mut pipeline = Pipeline::with_capacity(commands.len().min(MAX_BATCH));
            for cmd in commands.by_ref().take(MAX_BATCH) {
                pipeline.add_command(cmd);
            }
            let count = pipeline.len();
            match manager.req_packed_commands(&pipeline, 0, count).await {
                Ok(values) => {
                    let mut values = values.into_iter();
                    for tx in replies.by_ref().take(count) {
                        let _ = tx.send(values.next().ok_or_else(short_reply));
                    }
                }
                Err(e) => {
                    for tx in replies.by_ref().take(count) {
                        let _ = tx.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}

fn dropped() -> RedisError {
    RedisError::from((
        redis::ErrorKind::Io,
        "the batch carrying this command was dropped",
    ))
}

fn short_reply() -> RedisError {
    RedisError::from((
        redis::ErrorKind::Parse,
        "a pipeline's reply held fewer values than it had commands",
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use redis::aio::ConnectionManager;
    use strata_testkit::RedisServer;

    use super::AutoPipeline;

    fn stat(redis: &RedisServer, name: &str) -> u64 {
        redis
            .cli(&["INFO", "stats"])
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
            .unwrap()
    }

    /// Many tasks at once: each gets its own reply (a server error stays the one command's),
    /// and the commands reach the server in far fewer writes than there are commands.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commands_share_writes_and_keep_their_replies() {
        const N: usize = 400;
        let redis = RedisServer::start();
        redis.cli(&["SET", "text", "not a number"]);
        let client = redis::Client::open(redis.url()).unwrap();
        let pipe = AutoPipeline::new(ConnectionManager::new(client).await.unwrap());
        let reads_before = stat(&redis, "total_reads_processed");
        let tasks: Vec<_> = (0..N)
            .map(|i| {
                let pipe = Arc::clone(&pipe);
                tokio::spawn(async move {
                    let key = if i == N / 2 {
                        "text".to_owned()
                    } else {
                        format!("n{i}")
                    };
                    let cmd = redis::cmd("INCRBY").arg(&key).arg(i).clone();
                    (i, pipe.send(&cmd).await)
                })
            })
            .collect();
        for task in tasks {
            let (i, reply) = task.await.unwrap();
            let reply = reply.and_then(redis::Value::extract_error);
            if i == N / 2 {
                assert!(
                    reply.is_err(),
                    "INCRBY of a string must fail alone: {reply:?}"
                );
            } else {
                let n: usize = redis::from_redis_value(reply.unwrap()).unwrap();
                assert_eq!(n, i, "reply of command {i}");
            }
        }
        let reads = stat(&redis, "total_reads_processed") - reads_before;
        assert!(
            reads <= (N / 4) as u64,
            "{N} commands took {reads} reads on the server: not gathered"
        );
    }
}
