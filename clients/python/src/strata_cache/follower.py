"""The log follower (``docs/protocol.md`` §4): applies other instances' invalidations to L1.

One task per part of the namespace's log, each on connections of its own. It starts at the
log's tail, applies entries in stream order, and drops the whole L1 (a *resync*) when it cannot
know what it missed: a gap in the sequence (entries trimmed while it lagged) or, after a
reconnect, a sequence behind its own (a Redis that lost its data). Part 0 also carries the ends
of waited-on loads (``#filled``).

Entries come *pushed* where the server allows it (``SSUBSCRIBE`` to the stream's channel, on
which the append script publishes every entry): the stream is read only to catch up — after
(re)subscribing, on a gap in the pushed sequence, and when the heartbeat's look at the stream's
newest entry finds it ahead (a writer that pushes nothing). A blocking ``XREAD`` per entry and
follower cost the server about twice a push (BENCHMARKS.md, "Invalidations pushed"). On a
cluster the subscription goes to the master of the log's slot. A server that refuses sharded
pub/sub (before Redis 7.0, or a user without the channel) is followed by reading: a blocking
``XREAD``, sent again after each answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError, ResponseError

from . import connection
from .layout import Layout
from .multiplex import Multiplexed, as_dict
from .routed import Routed

log = logging.getLogger("strata_cache")

BATCH = 512


@dataclass(frozen=True)
class Invalidation:
    """A log entry's ``d``: who wrote it, and what it drops."""

    origin: int
    op: str
    arg: str | None

    def wire(self) -> bytes:
        """As the log carries it: ``{"origin":"<16 hex>","op":…,"arg":…}``."""
        entry = {"origin": f"{self.origin:016x}", "op": self.op, "arg": self.arg}
        return json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode()

    @staticmethod
    def parse(data: bytes) -> Invalidation | None:
        """The entry in ``data``; ``None`` if it is not one (counted, never applied)."""
        try:
            d = json.loads(data)
        except ValueError:
            return None
        if not isinstance(d, dict) or not set(d) <= {"origin", "op", "arg"}:
            return None
        origin, op, arg = d.get("origin"), d.get("op"), d.get("arg")
        if not isinstance(origin, str) or len(origin) != 16:
            return None
        try:
            origin_id = int(origin, 16)
        except ValueError:
            return None
        if op in ("key", "tag") and isinstance(arg, str):
            return Invalidation(origin_id, op, arg)
        if op == "clear" and arg is None:
            return Invalidation(origin_id, op, None)
        return None


@dataclass
class Handlers:
    """What the follower does to the cache."""

    apply: Callable[[Invalidation], None]
    resync: Callable[[], None]
    filled: Callable[[str], None]
    caught_up: Callable[[int], None]
    #: The part was applied up to this sequence number (acknowledged writes report it).
    applied: Callable[[int, int], None]


class Follower:
    """Follows one part of a namespace's log until :meth:`stop`."""

    def __init__(
        self,
        url: str,
        layout: Layout,
        part: int,
        parts: int,
        heartbeat: float,
        log_tail: str,
        handlers: Handlers,
        connect_kwargs: dict[str, Any],
    ) -> None:
        self._url = url
        self._layout = layout
        self._part = part
        self._heartbeat = heartbeat
        self._log_tail_source = log_tail
        self._on = handlers
        self._connect_kwargs = connect_kwargs
        self._stream = layout.log(part, parts)
        self._seq_key = layout.log_seq(part, parts)
        self._filled = layout.filled() if part == 0 else None
        self._id = b"0-0"
        self._seq = 0
        self._filled_id = b"0-0"
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._conn: connection.Client | None = None
        #: Its commands, on its connection's own pipelined link (on a cluster, to the log's
        #: master): a blocking read through redis-py cost ~50 µs of its own, and on a cluster a
        #: `COMMAND GETKEYS` round trip before each `XREAD`.
        self._reads: Multiplexed | Routed | None = None
        #: ``None`` until it subscribes; ``False`` once the server refused (it reads then).
        self._pushed: bool | None = None
        self._backoff = 0.05

    async def start(self) -> None:
        """Connects and reads where the log stands now; follows from there in a task."""
        self._conn = self._connect()
        await self._tail()
        self._on.caught_up(self._part)
        self._on.applied(self._part, self._seq)
        self._task = asyncio.create_task(self._run(), name=f"strata follower {self._stream}")

    async def stop(self) -> None:
        # The flag as well as the cancellation: a cancellation that lands as a read times out
        # can come back as the client's TimeoutError (Python < 3.12), which the loop retries.
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            _, pending = await asyncio.wait({self._task}, timeout=5)
            if pending:
                log.warning("invalidation log %s: follower did not stop in 5 s", self._stream)
        await self._disconnect()

    def _connect(self) -> connection.Client:
        # Its reads block for a heartbeat: a reply may take that plus the command's own time.
        given = self._connect_kwargs.get("socket_timeout") or 5.0
        kwargs = {**self._connect_kwargs, "socket_timeout": self._heartbeat + given}
        conn = connection.connect(self._url, **kwargs)
        self._reads = Routed(conn) if isinstance(conn, RedisCluster) else Multiplexed(conn)
        return conn

    async def _disconnect(self) -> None:
        if self._reads is not None:
            await self._reads.close()
        if self._conn is not None:
            await connection.close(self._conn)

    async def _command(self, *args: bytes | str | int) -> Any:
        assert self._reads is not None
        return await self._reads.execute(*args)

    async def _read(self) -> Any:
        """The next entries of the log (and ``#filled``) after ours, as ``[(stream, [(id,
        fields)])]``; waits up to a heartbeat for some."""
        streams: dict[Any, Any] = {self._stream: self._id}
        if self._filled is not None:
            streams[self._filled] = self._filled_id
        block = max(1, round(self._heartbeat * 1000))
        assert self._reads is not None
        # On a cluster both streams share the namespace's slot: the log's key routes it.
        raw = await self._reads.send(
            self._stream,
            ("XREAD", "COUNT", BATCH, "BLOCK", block, "STREAMS", *streams, *streams.values()),
        )
        # RESP3 (redis-py's default) answers a map of streams, RESP2 a list of pairs; a read
        # redirected through redis-py's cluster client comes back parsed (fields as a dict,
        # which `as_dict` takes as it is).
        streams_read = raw.items() if isinstance(raw, dict) else raw or []
        return [
            (name, [(entry_id, as_dict(fields or [])) for entry_id, fields in entries])
            for name, entries in streams_read
        ]

    async def _tail(self) -> None:
        assert self._reads is not None
        script: Callable[..., Awaitable[Any]] = self._reads.script(self._log_tail_source)
        reply: Any = await script(keys=[self._stream, self._seq_key])
        newest, seq = reply
        self._id = newest[0][0] if newest else b"0-0"
        self._seq = int(seq) if seq is not None else 0
        if self._filled is not None:
            last: Any = await self._command("XREVRANGE", self._filled, "+", "-", "COUNT", 1)
            self._filled_id = last[0][0] if last else b"0-0"

    async def _run(self) -> None:
        while not self._stopped:
            assert self._conn is not None
            try:
                sub = await self._subscribe() if self._pushed is not False else None
                if sub is None:
                    self._take(await self._read())
                    self._backoff = 0.05
                    continue
                try:
                    await self._follow_pushed(sub)
                finally:
                    with contextlib.suppress(RedisError, OSError):
                        await sub.aclose()  # a broken connection's close may fail: gone anyway
            except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as e:
                if self._stopped:
                    return
                log.warning("invalidation log %s: read failed (%s); reconnecting", self._stream, e)
                await self._reconnect(self._backoff)
                self._backoff = min(self._backoff * 2, 2.0)
            except Exception as e:
                # An answer it cannot use (the key is no stream, an ACL refuses the read, a
                # reply of another shape): what it did not apply may be in L1. Following ends
                # only with stop(), or L1 would serve what others invalidated.
                if self._stopped:
                    return
                log.error("invalidation log %s: %r; dropping L1, reading again", self._stream, e)
                self._on.resync()
                await asyncio.sleep(self._backoff)
                self._backoff = min(self._backoff * 2, 2.0)

    # ------------------------------------------------------------------ pushed

    async def _subscribe(self) -> PubSub | None:
        """A connection subscribed to the part's channel (and part 0's ``#filled``); ``None``
        where the server refuses (entries are read instead)."""
        if isinstance(self._reads, Routed):
            sub = await self._reads.pubsub(self._stream)  # the channel is the log's master's
        else:
            assert isinstance(self._conn, aioredis.Redis)
            sub = self._conn.pubsub()
        channels = [self._stream] + ([self._filled] if self._filled is not None else [])
        try:
            await sub.ssubscribe(*channels)
            for _ in channels:
                await self._reply(sub, "ssubscribe")
        except ResponseError as e:
            await sub.aclose()
            log.warning(
                "invalidation log %s: the server pushes no entries (%s; sharded pub/sub needs "
                "Redis 7.0 and the channel in the user's ACL); reading the stream instead",
                self._stream,
                e,
            )
            self._pushed = False
            return None
        except BaseException:
            await sub.aclose()
            raise
        self._pushed = True
        return sub

    async def _reply(self, sub: PubSub, kind: str) -> None:
        """Takes pushes in hand until the reply of ``kind`` (a subscription's, ``pong``)."""
        deadline = time.monotonic() + self._timeout()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise aioredis.TimeoutError(f"no {kind} reply on {self._stream}'s subscription")
            message = await sub.get_message(timeout=left)
            if message is None:
                continue
            if message["type"] == kind:
                return
            await self._take_one(message)

    async def _follow_pushed(self, sub: PubSub) -> None:
        """Reads what was appended since the position, then applies pushes until an error;
        every heartbeat it looks at the stream's newest entry."""
        await self._catch_up()
        self._on.applied(self._part, self._seq)
        self._on.caught_up(self._part)
        self._backoff = 0.05
        beat = time.monotonic() + self._heartbeat
        while not self._stopped:
            message = await sub.get_message(timeout=max(0.0, beat - time.monotonic()))
            if message is not None:
                seq = self._seq
                while message is not None:
                    await self._take_one(message)
                    message = await sub.get_message(timeout=0)
                self._report(seq)
            if time.monotonic() >= beat:
                await self._beat(sub)
                beat = time.monotonic() + self._heartbeat

    async def _beat(self, sub: PubSub) -> None:
        """The heartbeat: the stream's newest entry, then a ``PING`` on the subscription —
        whose answer comes after every push sent before the look — and the stream read if
        the newest entry is still past the position."""
        newest: Any = await self._command("XREVRANGE", self._stream, "+", "-", "COUNT", 1)
        seq = self._seq
        await sub.ping()
        await self._reply(sub, "pong")
        if newest and _newer(newest[0][0], self._id):
            await self._catch_up()
        self._report(seq)

    def _report(self, since: int) -> None:
        """Tells the cache the new position, if it moved past ``since``, and that this part is
        caught up."""
        if self._seq != since:
            self._on.applied(self._part, self._seq)
        self._on.caught_up(self._part)

    async def _take_one(self, message: dict[str, Any]) -> None:
        """A log entry pushed as ``<s>:<id>:<entry>`` (applied in order; a gap in the
        sequence is read from the stream), or a waited-on load's end."""
        if message["type"] == "sunsubscribe":
            # The server ended the subscription (on a cluster, the slot moved): subscribe again.
            raise aioredis.ConnectionError(f"{self._stream}'s subscription was ended")
        if message["type"] != "smessage":
            return
        channel, data = message["channel"], message["data"]
        if channel != self._stream.encode():
            self._on.filled(data.decode(errors="replace"))
            return
        parts = data.split(b":", 2)
        if len(parts) != 3 or not parts[0].isdigit():
            log.warning("invalidation log %s: ignoring a foreign message", self._stream)
            return
        seq, entry_id, entry = int(parts[0]), parts[1], parts[2]
        if not _newer(entry_id, self._id):
            return  # read already, while catching up
        if seq != self._seq + 1:
            # Entries were not pushed (a writer that pushes nothing), or the log started
            # over: the stream tells which, as it tells a reading follower.
            await self._catch_up()
            return
        self._apply(entry_id, {b"s": parts[0], b"d": entry})

    async def _catch_up(self) -> None:
        """Applies what the stream holds after the position, in batches."""
        while True:
            entries: Any = await self._command(
                "XRANGE", self._stream, b"(" + self._id, "+", "COUNT", BATCH
            )
            for entry_id, fields in entries or []:
                self._apply(entry_id, as_dict(fields or []))
            if len(entries or []) < BATCH:
                return

    def _timeout(self) -> float:
        return float(self._connect_kwargs.get("socket_timeout") or 5.0)

    def _take(self, reply: Any) -> None:
        """Applies what a read brought: log entries in order, and ``#filled``'s load ends."""
        read = 0
        for name, entries in reply or []:
            is_log = name == self._stream.encode()
            for entry_id, fields in entries:
                if is_log:
                    read += 1
                    self._apply(entry_id, fields)
                else:
                    self._filled_id = entry_id
                    key = fields.get(b"k")
                    if key is not None:
                        self._on.filled(key.decode(errors="replace"))
        if read:
            self._on.applied(self._part, self._seq)
        if read < BATCH:
            self._on.caught_up(self._part)

    def _apply(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        self._id = entry_id
        seq_raw, data = fields.get(b"s"), fields.get(b"d")
        if seq_raw is None or data is None:
            return  # foreign: skipped
        try:
            seq = int(seq_raw)
        except ValueError:
            return
        if seq != self._seq + 1:
            # Entries we never read were trimmed away: whatever they dropped may be in L1.
            self._on.resync()
        self._seq = seq
        invalidation = Invalidation.parse(data)
        if invalidation is not None:
            self._on.apply(invalidation)

    async def _reconnect(self, pause: float) -> None:
        """A new connection; resumes after our position unless the log lost entries."""
        while not self._stopped:
            await asyncio.sleep(pause)
            await self._disconnect()
            self._conn = self._connect()
            try:
                raw = await self._command("GET", self._seq_key)
                exists = await self._command("EXISTS", self._stream)
            except (aioredis.ConnectionError, aioredis.TimeoutError, OSError):
                pause = min(pause * 2, 2.0)
                continue
            seq = int(raw) if raw is not None else 0
            if seq < self._seq or (self._seq > 0 and not exists):
                # Redis lost the log (a restart without persistence, a failover to a replica
                # that lagged): what we had not read is gone with it.
                log.warning("invalidation log %s was lost: dropping L1", self._stream)
                self._on.resync()
                await self._tail()
                self._on.applied(self._part, self._seq)
            return


def _newer(a: bytes, b: bytes) -> bool:
    """Whether stream entry id ``a`` (``<ms>-<n>``) comes after ``b``; a foreign id reads as
    ``0-0``."""

    def parse(entry_id: bytes) -> tuple[int, int]:
        ms, _, n = entry_id.partition(b"-")
        return (int(ms), int(n)) if ms.isdigit() and n.isdigit() else (0, 0)

    return parse(a) > parse(b)


def now_ms() -> int:
    return time.time_ns() // 1_000_000
