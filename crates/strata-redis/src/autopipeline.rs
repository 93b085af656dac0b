//! Auto-pipelining over the `redis` crate's connection manager, for servers reached over TLS
//! or a Unix socket (over TCP the engine has its own connection, [`crate::wire`], which
//! gathers the same way at less cost): the commands that the engine's tasks send at about
//! the same moment leave in one write, as one pipeline, and come back in one read.
//!
//! Why: on a loopback or LAN Redis, the server's CPU goes to system calls and wake-ups far
//! more than to commands (a `perf` profile of redis-server under W1: ~60 % in `write`,
//! `epoll_wait` and scheduling, under 1 % in Lua). It spends about the same on an event-loop
//! turn that carries one command as on one that carries ten. The multiplexed connection
//! already writes whatever is queued when its driver runs, but its driver is woken by the
//! first command and runs as soon as that task yields, so turns carry few commands; an L1 in
//! front makes them fewer still (the naive cache-aside, sending every read, gets bigger
//! batches for free). Here the first command of a batch schedules a flush that first goes to
//! the back of its worker's run queue ([`crate::requeue`]): the commands the tasks queued
//! ahead of it send join the batch. The cost is that wait — one pass over the ready tasks,
//! microseconds — against a Redis round trip of tens of microseconds; what it saves is a
//! server turn per command gathered (measured in BENCHMARKS.md, "Auto-pipelining").
//!
//! Replies are handed back in order, each as the single command would have had it (a server
//! error stays that command's own). A batch is sent from a task of its own, so a caller that
//! gives up waiting (a timeout, a dropped future) never strands the others.

use std::sync::{Arc, Mutex};

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, Pipeline, RedisError, RedisResult, Value};
use tokio::sync::oneshot;

use crate::requeue::requeue;

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
        // The tasks queued now run first; what they send joins this batch.
        requeue().await;
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
        // A burst beyond one batch goes out as several pipelines at once, not one after
        // another's reply.
        let mut commands = commands.into_iter();
        let mut batches = Vec::new();
        while commands.len() > 0 {
            let mut pipeline = Pipeline::with_capacity(commands.len().min(MAX_BATCH));
            for cmd in commands.by_ref().take(MAX_BATCH) {
                pipeline.add_command(cmd);
            }
            let answers: Vec<_> = replies.by_ref().take(pipeline.len()).collect();
            let mut manager = manager.clone();
            batches.push(async move {
                let reply = manager
                    .req_packed_commands(&pipeline, 0, pipeline.len())
                    .await;
                match reply {
                    Ok(values) => {
                        let mut values = values.into_iter();
                        for tx in answers {
                            let _ = tx.send(values.next().ok_or_else(short_reply));
                        }
                    }
                    Err(e) => {
                        for tx in answers {
                            let _ = tx.send(Err(e.clone()));
                        }
                    }
                }
            });
        }
        futures_util::future::join_all(batches).await;
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

    /// Many tasks at once, more than two batches' worth (the pipelines of one flush go out
    /// together): each gets its own reply, and a server error stays the one command's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commands_share_writes_and_keep_their_replies() {
        const N: usize = 1_200;
        let redis = RedisServer::start();
        redis.cli(&["SET", "text", "not a number"]);
        let client = redis::Client::open(redis.url()).unwrap();
        let pipe = AutoPipeline::new(ConnectionManager::new(client).await.unwrap());
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
    }
}

#[cfg(test)]
mod gathering {
    use std::sync::Arc;

    use redis::aio::{ConnectionLike, ConnectionManager};
    use strata_testkit::RedisServer;

    use super::AutoPipeline;

    fn reads(redis: &RedisServer) -> u64 {
        redis
            .cli(&["INFO", "stats"])
            .lines()
            .find_map(|l| {
                l.strip_prefix("total_reads_processed:")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap()
    }

    /// 64 tasks, each sending 50 commands one after another with a little work between: the
    /// server's reads for the same traffic, straight through the manager and gathered.
    async fn traffic(redis: &RedisServer, gathered: bool) -> u64 {
        let client = redis::Client::open(redis.url()).unwrap();
        let manager = ConnectionManager::new(client).await.unwrap();
        let pipe = AutoPipeline::new(manager.clone());
        let before = reads(redis);
        let tasks: Vec<_> = (0..64)
            .map(|t| {
                let (pipe, mut manager) = (Arc::clone(&pipe), manager.clone());
                tokio::spawn(async move {
                    for i in 0..50 {
                        let cmd = redis::cmd("INCR").arg(format!("k{t}:{i}")).clone();
                        let reply = if gathered {
                            pipe.send(&cmd).await
                        } else {
                            manager.req_packed_command(&cmd).await
                        };
                        reply.unwrap();
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        reads(redis) - before
    }

    /// The point of the module: the same traffic reaches the server in fewer reads (measured
    /// here 0.46–0.51 of the direct path's; without the flush's turn at the back of the queue the
    /// two are alike).
    /// Three alternated rounds, summed, and a bound of 0.85: one round on a busy machine (the
    /// other unit tests run beside this one) once came out at 0.70.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gathered_commands_take_fewer_server_reads_than_direct_ones() {
        let redis = RedisServer::start();
        let (mut direct, mut gathered) = (0, 0);
        for _ in 0..3 {
            direct += traffic(&redis, false).await;
            gathered += traffic(&redis, true).await;
        }
        assert!(
            gathered * 100 <= direct * 85,
            "gathered {gathered} server reads, direct {direct}: not gathered"
        );
    }
}
