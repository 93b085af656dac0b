//! A task's turn at the back of its worker's run queue: how the engine's connections gather
//! the commands that the tasks queued ahead of them send into one write.
//!
//! Not Tokio's `yield_now`, which holds a task back until its worker has nothing else to run
//! (or the worker's next maintenance tick, every 61 polls): on a service whose workers are
//! busy, every command then waited for that tick, and an L2 hit took 2.2–2.4× the `redis`
//! crate's own `GET` (BENCHMARKS.md, "The writer's turn"; tokio-rs/tokio#5223 made
//! `yield_now` so). A task woken from inside its own poll is put at the back of the queue
//! instead, behind what is runnable now — Tokio's scheduling, not its promise: the test
//! `wire::tests::a_worker_that_never_idles_does_not_hold_a_write_back` fails if it changes.
//! Past ~61 runnable tasks per worker a pass over the queue outlasts the tick, and a command
//! waits its turn like those tasks rather than jumping the queue (measured there too).

use std::future::Future;
use std::task::Poll;

/// Pending once, woken from inside its own poll: the task runs again after the tasks queued
/// ahead of it on its worker.
pub(crate) fn requeue() -> impl Future<Output = ()> {
    let mut queued = false;
    std::future::poll_fn(move |cx| {
        if std::mem::replace(&mut queued, true) {
            return Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    })
}
