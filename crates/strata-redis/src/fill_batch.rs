//! Misses' fills on one server, sent together ("group commit").
//!
//! On Redis 7 a miss's fill is a script ([`FILL_LEASED`]), and entering a script costs the
//! server about a third of what the fill costs it. The fills of a busy cache overlap (under
//! W1 most find ten or more others still waiting for their answer), so they go through one
//! task: a fill that finds no batch on its way goes at once; those that come while one is on
//! its way wait for its answer and then go together, one script call. A fill waits for at
//! most one batch before its own; a full batch goes at once, so throughput is not bound to
//! one batch a round trip.
//!
//! Only on one server: on a cluster the keys of one call must share a slot.

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use strata::Error;
use tokio::sync::{mpsc, oneshot};

use crate::connection::Connection;
use crate::resp::Arg;
use crate::scripts::FILL_LEASED;

/// Fills a call carries at most: the answer gives each two bits of an integer that Lua keeps
/// exactly (a double: 53 bits).
const MOST_FILLS: usize = 26;

/// Value bytes a call carries at most (the first fill goes whatever its size): the server
/// runs a script to its end before anything else, and copies each value twice on the way.
const MOST_BYTES: usize = 128 * 1024;

/// What a fill decided ([`FILL_LEASED`]'s answer for one key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Filled {
    /// Not stored: an invalidation, a write or another load got there first.
    Overtaken,
    /// Stored.
    Stored,
    /// Stored over the lease record another instance waited on: its end must be announced.
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

/// One fill waiting for its batch.
struct Pending {
    key: String,
    value: Vec<u8>,
    ttl_ms: u64,
    record: [u8; 12],
    lease_ttl_ms: u64,
    answer: oneshot::Sender<Result<Filled, Error>>,
}

/// The fills of one connection: hands each to the task that sends them.
#[derive(Debug, Clone)]
pub(crate) struct FillBatch {
    queue: mpsc::UnboundedSender<Pending>,
}

impl FillBatch {
    /// Starts the task sending `conn`'s fills; it ends when the last clone of this is dropped.
    pub(crate) fn start(conn: Connection) -> Self {
        let (queue, fills) = mpsc::unbounded_channel();
        tokio::spawn(send_fills(conn, fills));
        FillBatch { queue }
    }

    /// Stores `value` in `key` for `ttl_ms` if the key holds `record`, this load's lease
    /// record; an overtaken fill puts back what it displaced (a lease record for at most
    /// `lease_ttl_ms`).
    pub(crate) async fn fill(
        &self,
        key: &str,
        value: &[u8],
        ttl_ms: u64,
        record: [u8; 12],
        lease_ttl_ms: u64,
    ) -> Result<Filled, Error> {
        let (answer, answered) = oneshot::channel();
        let pending = Pending {
            key: key.to_owned(),
            value: value.to_vec(),
            ttl_ms,
            record,
            lease_ttl_ms,
            answer,
        };
        let gone = || Error::unavailable(std::io::Error::other("the fills' task has stopped"));
        self.queue.send(pending).map_err(|_| gone())?;
        answered.await.map_err(|_| gone())?
    }
}

/// The task: sends what has queued whenever no batch is on its way, and any full batch at
/// once.
async fn send_fills(conn: Connection, mut fills: mpsc::UnboundedReceiver<Pending>) {
    let mut queued: Vec<Pending> = Vec::new();
    let mut on_their_way = FuturesUnordered::new();
    let mut open = true;
    while open || !queued.is_empty() || !on_their_way.is_empty() {
        tokio::select! {
            Some(()) = on_their_way.next(), if !on_their_way.is_empty() => {}
            fill = fills.recv(), if open => match fill {
                Some(fill) => queued.push(fill),
                None => open = false,
            },
            else => break,
        }
        while let Ok(fill) = fills.try_recv() {
            queued.push(fill);
        }
        while !queued.is_empty() && (on_their_way.is_empty() || queued.len() >= MOST_FILLS) {
            let batch = take_batch(&mut queued);
            on_their_way.push(send(conn.clone(), batch));
        }
    }
}

/// The next batch: the oldest fill, then those after it with the same lease TTL (one argument
/// for all), up to [`MOST_FILLS`] and [`MOST_BYTES`]; the others stay queued, in order.
fn take_batch(queued: &mut Vec<Pending>) -> Vec<Pending> {
    let lease_ttl_ms = queued[0].lease_ttl_ms;
    let (mut count, mut bytes) = (0, 0);
    let mut batch = Vec::new();
    let mut kept = Vec::new();
    for fill in queued.drain(..) {
        let fits = count == 0
            || (count < MOST_FILLS
                && fill.lease_ttl_ms == lease_ttl_ms
                && bytes + fill.value.len() <= MOST_BYTES);
        if fits {
            count += 1;
            bytes += fill.value.len();
            batch.push(fill);
        } else {
            kept.push(fill);
        }
    }
    *queued = kept;
    batch
}

/// One [`FILL_LEASED`] call for `batch`; each fill gets its part of the answer.
async fn send(conn: Connection, batch: Vec<Pending>) {
    let keys: Vec<Arg<'_>> = batch.iter().map(|fill| fill.key.as_str().into()).collect();
    let mut args: Vec<Arg<'_>> = Vec::with_capacity(3 * batch.len() + 1);
    for fill in &batch {
        args.extend([
            fill.value.as_slice().into(),
            Arg::Int(fill.ttl_ms),
            fill.record[..].into(),
        ]);
    }
    args.push(Arg::Int(batch[0].lease_ttl_ms));
    let answer: Result<u64, Error> = FILL_LEASED
        .call(&mut conn.get(), &keys, &args)
        .await
        .map_err(|e| conn.failed(e));
    drop((keys, args));
    for (index, fill) in batch.into_iter().enumerate() {
        let filled = answer.clone().map(|answer| Filled::of(answer, index));
        // A caller that stopped waiting does not need to know.
        let _ = fill.answer.send(filled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(lease_ttl_ms: u64, bytes: usize) -> Pending {
        Pending {
            key: String::new(),
            value: vec![0; bytes],
            ttl_ms: 1,
            record: [0; 12],
            lease_ttl_ms,
            answer: oneshot::channel().0,
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
    fn a_batch_keeps_to_its_bounds_and_its_lease_ttl() {
        let mut queued: Vec<Pending> = (0..30).map(|_| pending(5, 10)).collect();
        queued.insert(1, pending(7, 10));
        let batch = take_batch(&mut queued);
        assert_eq!(batch.len(), MOST_FILLS);
        assert!(batch.iter().all(|fill| fill.lease_ttl_ms == 5));
        assert_eq!(queued.len(), 5, "the other lease TTL and the rest stay");
        assert_eq!(queued[0].lease_ttl_ms, 7, "in order");

        let mut queued: Vec<Pending> = (0..4).map(|_| pending(5, MOST_BYTES)).collect();
        assert_eq!(
            take_batch(&mut queued).len(),
            1,
            "the first goes whatever its size"
        );
        assert_eq!(queued.len(), 3);
    }
}
