//! Misses' fills on one server, sent together ("group commit").
//!
//! On Redis 7 a miss's fill is a script ([`FILL_LEASED`]), and entering a script costs the
//! server about a third of what the fill costs it. The fills of a busy cache overlap (under
//! W1 most find ten or more others still waiting for their answer), so they take turns: a
//! fill that finds fewer than [`LEADERS`] calls of fills on their way sends itself at once
//! and *leads*; those that come meanwhile queue. When its answer is in, a leader hands the
//! lead to the first fill queued, which sends every fill queued as one call (itself among
//! them) and, answered, hands the lead on in turn. So a fill waits for at most one call
//! before its own and is woken once (by its answer, or to lead), and no task is added: a
//! task between the fills and the connection, and a single call on its way, cost W5's fleet
//! more than they saved (a fill that waits keeps its lease record in the key, where other
//! instances' reads find it and wait too; BENCHMARKS.md). A queue as long as a call can
//! carry is sent at once by the fill that fills it, so throughput is not bound to the
//! leaders' round trips.
//!
//! Only on one server: on a cluster the keys of one call must share a slot.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use strata::Error;
use tokio::sync::oneshot;

use crate::connection::Connection;
use crate::resp::Arg;
use crate::scripts::FILL_LEASED;

/// Fills a call carries at most: the answer gives each two bits of an integer that Lua keeps
/// exactly (a double: 53 bits).
const MOST_FILLS: usize = 26;

/// Calls of fills on their way before fills queue. One gathers the most, but a fill that
/// waits keeps its lease record in the key longer, where other instances' reads find it and
/// wait in turn: with one, W5's fleet spent ~3–5 % more CPU; with two it spends what it did
/// without batching, and W1's fills still go ~5 a call.
const LEADERS: usize = 2;

/// Value bytes a call carries at most (its first fill goes whatever its size): the server
/// runs a script to its end before anything else, and copies each value twice on the way.
const MOST_BYTES: usize = 128 * 1024;

/// What a fill decided ([`FILL_LEASED`]'s answer for one key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Filled {
    /// Not stored: an invalidation, a write or another load got there first.
    Overtaken,
    /// Stored.
    Stored,
    /// Stored over the lease record another instance waited on: its end is still to be
    /// announced (the call did not carry the filled stream).
    StoredWaitedOn,
}

impl Filled {
    /// Key `index`'s part of [`FILL_LEASED`]'s answer.
    pub(crate) fn of(answer: u64, index: usize) -> Self {
        match (answer >> (2 * index)) & 3 {
            1 => Filled::Stored,
            2 => Filled::StoredWaitedOn,
            _ => Filled::Overtaken,
        }
    }
}

/// One fill: its namespace, key, value, TTL, lease record and the lease TTL, in
/// [`FILL_LEASED`]'s terms.
#[derive(Clone, Copy)]
struct Fill<'a> {
    namespace: &'a str,
    key: &'a str,
    value: &'a [u8],
    ttl_ms: u64,
    record: [u8; 12],
    lease_ttl_ms: u64,
}

/// A queued fill's copy, and how it is told its turn.
struct Queued {
    namespace: String,
    key: String,
    value: Vec<u8>,
    ttl_ms: u64,
    record: [u8; 12],
    lease_ttl_ms: u64,
    turn: oneshot::Sender<Turn>,
}

impl Queued {
    fn fill(&self) -> Fill<'_> {
        Fill {
            namespace: &self.namespace,
            key: &self.key,
            value: &self.value,
            ttl_ms: self.ttl_ms,
            record: self.record,
            lease_ttl_ms: self.lease_ttl_ms,
        }
    }
}

/// What a fill does next.
enum Step {
    /// Fewer than [`LEADERS`] calls on their way: send alone, and lead.
    Lead,
    /// Send with these, now.
    Send(Vec<Queued>),
    /// Queued: wait to be told.
    Wait(oneshot::Receiver<Turn>),
}

/// What a queued fill is told.
enum Turn {
    /// Sent with others: its answer.
    Answered(Result<Filled, Error>),
    /// Its turn to lead: to send what is queued.
    Lead,
}

#[derive(Default)]
struct Queue {
    /// Calls of fills on their way (their senders lead), at most [`LEADERS`].
    leaders: usize,
    queued: Vec<Queued>,
}

/// The fills of one connection, taking turns; on a cluster each alone.
#[derive(Clone)]
pub(crate) struct FillBatch {
    conn: Connection,
    /// Whether fills take turns: not on a cluster, where one call's keys must share a slot.
    together: bool,
    queue: Arc<Mutex<Queue>>,
}

impl FillBatch {
    /// The fills of `conn`, together only on one server (`together`).
    pub(crate) fn new(conn: Connection, together: bool) -> Self {
        FillBatch {
            conn,
            together,
            queue: Arc::default(),
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores `value` in `key` (of `namespace`) for `ttl_ms` if the key holds `record`, this
    /// load's lease record; an overtaken fill puts back what it displaced (a lease record for
    /// at most `lease_ttl_ms`).
    pub(crate) async fn fill(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
        ttl_ms: u64,
        record: [u8; 12],
        lease_ttl_ms: u64,
    ) -> Result<Filled, Error> {
        let fill = Fill {
            namespace,
            key,
            value,
            ttl_ms,
            record,
            lease_ttl_ms,
        };
        if !self.together {
            return self.send(fill, Vec::new()).await;
        }
        loop {
            let step = {
                let mut queue = self.queue();
                if queue.leaders < LEADERS {
                    queue.leaders += 1;
                    Step::Lead
                } else if queue.queued.len() + 1 >= MOST_FILLS
                    || bytes(&queue.queued) + value.len() >= MOST_BYTES
                {
                    Step::Send(take_batch(&mut queue.queued, &fill))
                } else {
                    let (turn, told) = oneshot::channel();
                    queue.queued.push(Queued {
                        namespace: namespace.to_owned(),
                        key: key.to_owned(),
                        value: value.to_vec(),
                        ttl_ms,
                        record,
                        lease_ttl_ms,
                        turn,
                    });
                    Step::Wait(told)
                }
            };
            match step {
                Step::Lead => return self.lead(fill, Vec::new()).await,
                // A call's worth queued: sent now, beside the one on its way.
                Step::Send(others) => return self.send(fill, others).await,
                Step::Wait(told) => match (Told { told, batch: self }).turn().await {
                    Ok(Turn::Answered(answer)) => return answer,
                    Ok(Turn::Lead) => {
                        let others = take_batch(&mut self.queue().queued, &fill);
                        return self.lead(fill, others).await;
                    }
                    // Its call was dropped before it was answered (its sender cancelled):
                    // again (a fill sent twice finds its own value the second time, and
                    // leaves it).
                    Err(_) => {}
                },
            }
        }
    }

    /// Sends `fill` with `others` as the leader, then hands the lead on — also if this is
    /// dropped before the answer is in.
    async fn lead(&self, fill: Fill<'_>, others: Vec<Queued>) -> Result<Filled, Error> {
        let handing = HandOn(self);
        let answer = self.send(fill, others).await;
        drop(handing);
        answer
    }

    /// One [`FILL_LEASED`] call for `fill` and `others`: each of the others is told its part
    /// of the answer; `fill`'s is returned.
    async fn send(&self, fill: Fill<'_>, others: Vec<Queued>) -> Result<Filled, Error> {
        let fills: Vec<Fill<'_>> = std::iter::once(fill)
            .chain(others.iter().map(Queued::fill))
            .collect();
        let mut keys: Vec<Arg<'_>> = fills.iter().map(|fill| fill.key.into()).collect();
        // The namespace's filled stream, so that the script announces the ends of loads other
        // instances waited on in the same step, a hop sooner than the caller could: on one
        // server (on a cluster it lives in another slot). The fills of a call share their
        // namespace.
        let filled = self
            .together
            .then(|| self.conn.layout().filled(fill.namespace));
        keys.extend(filled.as_deref().map(Arg::from));
        let mut args: Vec<Arg<'_>> = Vec::with_capacity(3 * fills.len() + 1);
        for fill in &fills {
            args.extend([
                fill.value.into(),
                Arg::Int(fill.ttl_ms),
                Arg::Bytes(&fill.record),
            ]);
        }
        args.push(Arg::Int(fill.lease_ttl_ms));
        let answer: Result<u64, Error> = FILL_LEASED
            .call(&mut self.conn.get(), &keys, &args)
            .await
            .map_err(|e| self.conn.failed(e));
        for (index, other) in others.into_iter().enumerate() {
            let filled = answer.clone().map(|answer| Filled::of(answer, index + 1));
            // A fill whose caller stopped waiting does not need to know.
            let _ = other.turn.send(Turn::Answered(filled));
        }
        answer.map(|answer| Filled::of(answer, 0))
    }

    /// The leader is done: the first fill queued (whose caller still waits) leads next, or
    /// nobody does.
    fn hand_on(&self) {
        let mut queue = self.queue();
        while !queue.queued.is_empty() {
            if queue.queued.remove(0).turn.send(Turn::Lead).is_ok() {
                return;
            }
        }
        queue.leaders -= 1;
    }
}

/// A queued fill's wait for its turn: dropped while told to lead, it hands the lead on (else
/// the lead, and with it every fill queued later, would be lost).
struct Told<'a> {
    told: oneshot::Receiver<Turn>,
    batch: &'a FillBatch,
}

impl Told<'_> {
    async fn turn(mut self) -> Result<Turn, oneshot::error::RecvError> {
        (&mut self.told).await
    }
}

impl Drop for Told<'_> {
    fn drop(&mut self) {
        if let Ok(Turn::Lead) = self.told.try_recv() {
            self.batch.hand_on();
        }
    }
}

/// Hands the lead on when the leader is done, answered or dropped.
struct HandOn<'a>(&'a FillBatch);

impl Drop for HandOn<'_> {
    fn drop(&mut self) {
        self.0.hand_on();
    }
}

fn bytes(queued: &[Queued]) -> usize {
    queued.iter().map(|fill| fill.value.len()).sum()
}

/// The fills queued that go with `sender`'s call (one lease TTL argument for all), in order,
/// up to [`MOST_FILLS`] and [`MOST_BYTES`] with the sender's own; the others stay queued.
fn take_batch(queued: &mut Vec<Queued>, sender: &Fill<'_>) -> Vec<Queued> {
    let (mut count, mut total) = (1, sender.value.len());
    let (batch, kept) = std::mem::take(queued).into_iter().partition(|fill| {
        let fits = count < MOST_FILLS
            && fill.lease_ttl_ms == sender.lease_ttl_ms
            && fill.namespace == sender.namespace
            && total + fill.value.len() <= MOST_BYTES;
        if fits {
            count += 1;
            total += fill.value.len();
        }
        fits
    });
    *queued = kept;
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(lease_ttl_ms: u64, bytes: usize) -> Queued {
        Queued {
            namespace: "catalog".to_owned(),
            key: String::new(),
            value: vec![0; bytes],
            ttl_ms: 1,
            record: [0; 12],
            lease_ttl_ms,
            turn: oneshot::channel().0,
        }
    }

    #[test]
    fn each_key_reads_its_own_two_bits() {
        let answer = 1 + (2 << 2) + (1 << 50);
        let read: Vec<Filled> = (0..MOST_FILLS).map(|i| Filled::of(answer, i)).collect();
        assert_eq!(read[0], Filled::Stored);
        assert_eq!(read[1], Filled::StoredWaitedOn);
        assert_eq!(read[2], Filled::Overtaken);
        assert_eq!(read[25], Filled::Stored);
    }

    #[test]
    fn a_batch_keeps_to_its_bounds_its_lease_ttl_and_its_namespace() {
        static VALUES: [u8; 16] = [0; 16];
        let sender = |lease_ttl_ms, bytes: usize| Fill {
            namespace: "catalog",
            key: "",
            value: &VALUES[..bytes],
            ttl_ms: 1,
            record: [0; 12],
            lease_ttl_ms,
        };
        let mut waiting: Vec<Queued> = (0..30).map(|_| queued(5, 10)).collect();
        waiting.insert(1, queued(7, 10));
        waiting[2].namespace = "orders".to_owned();
        let batch = take_batch(&mut waiting, &sender(5, 10));
        assert_eq!(batch.len(), MOST_FILLS - 1, "with the fill that sends it");
        assert!(batch.iter().all(|fill| fill.lease_ttl_ms == 5));
        assert!(batch.iter().all(|fill| fill.namespace == "catalog"));
        assert_eq!(
            waiting.len(),
            6,
            "another lease TTL or namespace, and the rest, stay"
        );
        assert_eq!(waiting[0].lease_ttl_ms, 7, "in order");
        assert_eq!(waiting[1].namespace, "orders");

        let mut waiting: Vec<Queued> = (0..4).map(|_| queued(5, MOST_BYTES / 2)).collect();
        assert_eq!(take_batch(&mut waiting, &sender(5, 0)).len(), 2);
        assert_eq!(waiting.len(), 2);
        assert_eq!(
            take_batch(&mut waiting, &sender(5, 1)).len(),
            1,
            "the sender's value counts"
        );
    }
}
