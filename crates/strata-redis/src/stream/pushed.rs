//! A part's follower fed by the server: every entry is pushed on the stream's sharded channel
//! as it is appended (`SPUBLISH` in the append script), and the stream is read only to catch
//! up — after a (re)connect, a gap in the pushed sequence, or a heartbeat that finds the log
//! ahead.
//!
//! Why (BENCHMARKS.md, "Invalidations pushed"): a blocking `XREAD` must be sent again after
//! every entry, by every follower, and the server pays for parsing it, serving it and blocking
//! it again; a push costs the server one write per follower. The stream stays the log of
//! record: its sequence numbers order the pushes, fill their gaps and let a follower that
//! was away resume.

use redis::aio::MultiplexedConnection;
use redis::{ErrorKind, PushInfo, PushKind, RedisError, ServerErrorKind, Value};
use strata::Error;
use strata::invalidation::LogEvent;

use super::{BATCH, Entry, Follower, Position, RawEntry, Stopped, apply, caught_up, lag_of};
use crate::error::classify_log;
use crate::pubsub::Subscribed;

/// A pushed entry, `<seq>:<id>:<entry>`.
struct Pushed<'a> {
    seq: u64,
    id: &'a str,
    entry: &'a [u8],
}

impl<'a> Pushed<'a> {
    fn parse(payload: &'a [u8]) -> Option<Pushed<'a>> {
        let mut parts = payload.splitn(3, |b| *b == b':');
        let seq = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
        let id = std::str::from_utf8(parts.next()?).ok()?;
        Some(Pushed {
            seq,
            id,
            entry: parts.next()?,
        })
    }
}

/// Whether stream entry id `a` (`<ms>-<n>`) comes after `b`. Ids grow with every entry of a
/// stream and, being the server's time, across a stream deleted and written again; a foreign
/// id reads as `0-0`.
fn newer(a: &str, b: &str) -> bool {
    let parse = |id: &str| {
        id.split_once('-')
            .and_then(|(ms, n)| Some((ms.parse::<u64>().ok()?, n.parse::<u64>().ok()?)))
            .unwrap_or((0, 0))
    };
    parse(a) > parse(b)
}

/// Whether the server refused the command itself (an unknown command before Redis 7.0, a
/// user not allowed the channel), rather than failing to answer.
fn refused(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Server(ServerErrorKind::ResponseError | ServerErrorKind::NoPerm)
            | ErrorKind::Extension
    )
}

impl Follower {
    /// A connection to the node of the part's slot, subscribed to its channels (the stream's,
    /// and for part 0 the lease-release announcements'). `Ok(None)` when the server refuses
    /// sharded pub/sub: the follower then reads the stream with a blocking `XREAD`.
    pub(super) async fn subscribe(&self, attempt: usize) -> Result<Option<Subscribed>, Error> {
        let mut ssubscribe = redis::cmd("SSUBSCRIBE");
        ssubscribe.arg(&self.stream);
        if let Some(filled) = &self.filled_stream {
            ssubscribe.arg(filled);
        }
        let config = &self.log.config;
        let publisher = &self.log.publisher;
        let mut sub = match Subscribed::open(
            config,
            publisher,
            &self.stream,
            true,
            attempt,
            &ssubscribe,
        )
        .await?
        {
            Ok(sub) => sub,
            Err(e) if refused(&e) => {
                tracing::warn!(stream = %self.stream, error = %e, "the server pushes no invalidations (it needs sharded pub/sub, Redis 7.0, and the channel in the user's ACL); reading the stream instead");
                return Ok(None);
            }
            Err(e) => return Err(classify_log(e)),
        };
        self.log
            .name(&mut sub.conn, &self.namespace, self.shard)
            .await?;
        Ok(Some(sub))
    }

    /// Applies what was appended after `position`, then each pushed entry, until the
    /// subscription is lost or the cache gone. Every heartbeat it reads the stream's newest
    /// entry (on the same connection, so every push sent before is in hand): an entry appended
    /// by a writer that pushes nothing is applied then, and the follower reports itself caught
    /// up.
    pub(super) async fn follow_pushed(
        &self,
        sub: &mut Subscribed,
        position: &mut Position,
    ) -> Stopped {
        if let Err(stopped) = self.catch_up(&mut sub.conn, position).await {
            return stopped;
        }
        // Caught up as of the read: after a reconnect, L1 is trusted again from here.
        if !self.send(caught_up(None, self.delivered(position))) {
            return Stopped::Gone;
        }
        let every = self.log.heartbeat;
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                push = sub.pushes.recv() => {
                    let Some(push) = push else { return Stopped::Lost };
                    let mut lag = None;
                    let mut next = Some(push);
                    // Everything pushed so far, then one report.
                    while let Some(push) = next {
                        match self.take(&mut sub.conn, push, position).await {
                            Ok(applied) => lag = applied.or(lag),
                            Err(stopped) => return stopped,
                        }
                        next = sub.pushes.try_recv().ok();
                    }
                    if let Some(lag) = lag
                        && !self.send(caught_up(Some(lag), self.delivered(position)))
                    {
                        return Stopped::Gone;
                    }
                }
                _ = heartbeat.tick() => {
                    if let Err(stopped) = self.beat(sub, position).await {
                        return stopped;
                    }
                }
                () = self.events.closed() => return Stopped::Gone,
            }
        }
    }

    /// One push: a log entry (applied in order; a gap in the sequence is read from the
    /// stream), or a lease-release announcement. `Ok(Some(lag))` when entries were applied.
    async fn take(
        &self,
        conn: &mut MultiplexedConnection,
        push: PushInfo,
        position: &mut Position,
    ) -> Result<Option<std::time::Duration>, Stopped> {
        match push.kind {
            PushKind::SMessage | PushKind::Message => {}
            // The slot moved, or the connection dropped.
            PushKind::SUnsubscribe | PushKind::Unsubscribe | PushKind::Disconnection => {
                return Err(Stopped::Lost);
            }
            _ => return Ok(None),
        }
        let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
            (push.data.first(), push.data.get(1))
        else {
            return Ok(None);
        };
        if channel.as_slice() != self.stream.as_bytes() {
            // A lease-release announcement: the key (anything else is foreign, ignored).
            let sent = String::from_utf8(payload.clone())
                .map_or(true, |key| self.send(LogEvent::Filled(key)));
            return if sent { Ok(None) } else { Err(Stopped::Gone) };
        }
        let Some(pushed) = Pushed::parse(payload) else {
            tracing::warn!(stream = %self.stream, "ignoring a foreign message on the log's channel");
            return Ok(None);
        };
        if !newer(pushed.id, &position.id) {
            return Ok(None); // read already, while catching up
        }
        if pushed.seq != position.seq + 1 {
            // Entries were not pushed (a writer that pushes nothing), or the log started
            // over: the stream tells which, as it tells a reading follower.
            self.catch_up(conn, position).await?;
            return Ok(Some(lag_of(&position.id)));
        }
        let entry = Entry {
            seq: pushed.seq,
            data: pushed.entry,
        };
        let send = |event| self.send(event);
        if !apply(
            &send,
            &self.stream,
            position,
            pushed.id.to_owned(),
            Some(entry),
        ) {
            return Err(Stopped::Gone);
        }
        Ok(Some(lag_of(pushed.id)))
    }

    /// The heartbeat: the newest entry of the stream, read on the subscription's own
    /// connection — its answer comes after every push sent before it, so once those are
    /// taken, the entries up to it are either applied or read now from the stream (where a
    /// log that started over, or lost what we had not read, shows as a gap: a resync).
    async fn beat(&self, sub: &mut Subscribed, position: &mut Position) -> Result<(), Stopped> {
        let newest: Vec<RawEntry> = match redis::cmd("XREVRANGE")
            .arg(&self.stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut sub.conn)
            .await
        {
            Ok(newest) => newest,
            Err(e) => {
                tracing::warn!(stream = %self.stream, error = %e, "invalidation log heartbeat failed; reconnecting");
                return Err(Stopped::Lost);
            }
        };
        // Every push sent before the answer is in hand (and maybe some sent after it).
        while let Ok(push) = sub.pushes.try_recv() {
            self.take(&mut sub.conn, push, position).await?;
        }
        if newest
            .first()
            .is_some_and(|(id, _)| newer(id, &position.id))
        {
            self.catch_up(&mut sub.conn, position).await?;
        }
        if self.send(caught_up(None, self.delivered(position))) {
            Ok(())
        } else {
            Err(Stopped::Gone)
        }
    }

    /// Reads and applies the entries after `position` from the stream, in batches.
    async fn catch_up(
        &self,
        conn: &mut MultiplexedConnection,
        position: &mut Position,
    ) -> Result<(), Stopped> {
        loop {
            let entries: Vec<RawEntry> = match redis::cmd("XRANGE")
                .arg(&self.stream)
                .arg(format!("({}", position.id))
                .arg("+")
                .arg("COUNT")
                .arg(BATCH)
                .query_async(conn)
                .await
            {
                Ok(entries) => entries,
                Err(e) => {
                    tracing::warn!(stream = %self.stream, error = %e, "invalidation log read failed; reconnecting");
                    return Err(Stopped::Lost);
                }
            };
            let read = entries.len();
            for (id, fields) in entries {
                let send = |event| self.send(event);
                if !apply(&send, &self.stream, position, id, Entry::parse(&fields)) {
                    return Err(Stopped::Gone);
                }
            }
            if read < BATCH {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// What the append script pushes reads back as itself, whatever the entry holds
        /// (colons included).
        #[test]
        fn pushed_entries_read_back(
            seq in any::<u64>(),
            ms in any::<u64>(),
            n in any::<u64>(),
            entry in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let id = format!("{ms}-{n}");
            let mut payload = format!("{seq}:{id}:").into_bytes();
            payload.extend_from_slice(&entry);
            let pushed = Pushed::parse(&payload).unwrap();
            prop_assert_eq!((pushed.seq, pushed.id, pushed.entry), (seq, id.as_str(), &entry[..]));
        }

        /// Foreign bytes on the channel are refused or read, never a panic.
        #[test]
        fn foreign_messages_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            let _ = Pushed::parse(&bytes);
        }
    }

    #[test]
    fn ids_compare_as_numbers() {
        assert!(newer("1700000000000-10", "1700000000000-9"));
        assert!(newer("1700000000001-0", "1700000000000-9"));
        assert!(!newer("1700000000000-9", "1700000000000-9"));
        assert!(newer("1-0", "0-0"));
        assert!(!newer("foreign", "0-0"));
    }

    #[test]
    fn pushed_entries_parse_and_foreign_ones_are_refused() {
        let p = Pushed::parse(b"17:1700000000000-3:{\"k\":\"a:b\"}").unwrap();
        assert_eq!(
            (p.seq, p.id, p.entry),
            (17, "1700000000000-3", &b"{\"k\":\"a:b\"}"[..])
        );
        for bad in [&b""[..], b"17", b"17:1-0", b"x:1-0:{}", b"\xff:1-0:{}"] {
            assert!(Pushed::parse(bad).is_none(), "{bad:?}");
        }
    }
}
