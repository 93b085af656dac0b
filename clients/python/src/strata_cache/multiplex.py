"""One connection for a cache's own commands: what a turn of the event loop asks for leaves
in one write, and the replies answer their callers in the order they were asked.

redis-py gives every command in flight a connection of its pool: with 64 reads in flight a
cache held 64 sockets to Redis, and each command paid a socket write, a pool checkout and a
timeout of its own — 46 % of the Python bench's time was spent in ``execute_command``
(BENCHMARKS.md, "The Python client on one connection"). Here the commands of one turn are
packed (by hiredis, in C) into one buffer that a callback queued for the next turn writes
with one ``send``; one reader parses every reply that arrived with hiredis and settles the
callers' futures.

The connection itself is made by the client's pool (``make_connection``), so TLS, AUTH/ACL,
the database, the client name and, through Sentinel, the master's address are redis-py's, as
for any other command. Replies and errors are what redis-py raises: a server's error reply
as its ``ResponseError`` class (``NoScriptError``, ``ReadOnlyError``, …), a lost connection
as ``ConnectionError`` for every command waiting on it (the next command connects again),
``socket_timeout`` (if set) as ``TimeoutError`` when a reply keeps the oldest command waiting
that long. One connection serves one server (or Sentinel's master); on a cluster
:class:`~strata_cache.routed.Routed` keeps one per master, made from the node's settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import hiredis
import redis.asyncio as aioredis
from redis._parsers import BaseParser
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import (
    ConnectionError,
    DataError,
    NoScriptError,
    ReadOnlyError,
    TimeoutError,
)

if TYPE_CHECKING:
    from .routed import Routed

#: What a read takes off the socket at most at once.
_CHUNK = 1 << 16


class Multiplexed:
    """Commands of one client on a single connection of their own, pipelined."""

    def __init__(
        self,
        client: aioredis.Redis | None = None,
        *,
        make_connection: Callable[[], AbstractConnection] | None = None,
    ) -> None:
        """On a connection made by ``client``'s pool, or by ``make_connection`` (a cluster
        node's)."""
        if make_connection is None:
            if client is None:
                raise TypeError("Multiplexed needs a client or a make_connection")
            make_connection = client.connection_pool.make_connection
        self._make_connection = make_connection
        self._link: _Link | None = None
        self._connecting: asyncio.Task[_Link] | None = None
        self._closed = False

    async def execute(self, *args: bytes | str | int | float) -> Any:
        """Sends one command and returns its reply (``bytes``, ``int``, ``list``, ``None``)."""
        link = self._link
        if link is None or link.broken:
            link = await self._connect()
        return await link.send(args)

    async def send(self, key: bytes | str, args: Sequence[bytes | str | int | float]) -> Any:
        """:meth:`execute` of ``args``, a command on ``key`` (one server serves every key; a
        cluster's :class:`~strata_cache.routed.Routed` routes by it)."""
        return await self.execute(*args)

    def script(self, source: str) -> Script:
        """``source`` run by its SHA-1 (``EVALSHA``), loaded first where the server lacks it."""
        return Script(self, source)

    async def close(self) -> None:
        """Closes the connection; commands still waiting fail with ``ConnectionError``."""
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        link, self._link = self._link, None
        if link is not None:
            await link.close(ConnectionError("the cache is closed"))

    async def _connect(self) -> _Link:
        if self._closed:
            raise ConnectionError("the cache is closed")
        # Everyone asking while it connects waits for the same connection.
        if self._connecting is None:
            self._connecting = asyncio.create_task(self._open())
        task = self._connecting
        try:
            return await asyncio.shield(task)
        finally:
            if task.done() and self._connecting is task:
                self._connecting = None

    async def _open(self) -> _Link:
        conn = self._make_connection()
        try:
            await conn.connect()
            link = _Link(conn)
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        self._link = link
        return link


class Script:
    """A Lua script called by ``EVALSHA`` on the server of its first key; where that server
    lacks it (``NOSCRIPT``: a restarted, new or promoted one) it is loaded there and called
    again. ``target`` is a :class:`Multiplexed` or, on a cluster, a
    :class:`~strata_cache.routed.Routed`."""

    def __init__(self, target: Multiplexed | Routed, source: str) -> None:
        self._target = target
        self._source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(
        self,
        keys: Sequence[str | bytes] = (),
        args: Sequence[bytes | str | int | float] = (),
    ) -> Any:
        command = ("EVALSHA", self.sha, len(keys), *keys, *args)
        key = keys[0] if keys else ""
        try:
            return await self._target.send(key, command)
        except NoScriptError:
            await self._target.send(key, ("SCRIPT", "LOAD", self._source))
            return await self._target.send(key, command)


class _Link:
    """One connection: the callers waiting on it in order, what this turn still has to send."""

    def __init__(self, conn: AbstractConnection) -> None:
        self._conn = conn
        # redis-py connected it (TLS, AUTH, HELLO, SELECT) and has read those replies; from
        # here on its streams are this link's alone.
        reader, writer = conn._reader, conn._writer
        if reader is None or writer is None:
            raise ConnectionError("the connection closed while it was made")
        self._writer = writer
        self._loop = asyncio.get_running_loop()
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._out = bytearray()
        self._flush_due = False
        self._timeout: float | None = conn.socket_timeout
        self._watch: asyncio.TimerHandle | None = None
        self._progress = 0.0
        self.broken: BaseException | None = None
        #: The connection's disconnect, once it broke or closed.
        self._closing: asyncio.Task[None] | None = None
        self._reader = self._loop.create_task(self._read(reader))

    def send(self, args: Sequence[bytes | str | int | float]) -> asyncio.Future[Any]:
        if self.broken is not None:
            raise _lost(self.broken)
        try:
            # hiredis's packer (C): ~2.3x quicker than the same RESP written in Python. (Its
            # stub types the tuple as one item long.)
            command = args if isinstance(args, tuple) else tuple(args)
            self._out += hiredis.pack_command(command)  # type: ignore[arg-type]
        except TypeError as err:
            raise DataError(f"a command argument cannot be sent: {err}") from None
        fut: asyncio.Future[Any] = self._loop.create_future()
        if not self._waiting:
            self._progress = self._loop.time()
            if self._timeout and self._watch is None:
                self._watch = self._loop.call_later(self._timeout, self._check)
        self._waiting.append(fut)
        if not self._flush_due:
            self._flush_due = True
            self._loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._flush_due = False
        if self.broken is not None or not self._out:
            return
        out, self._out = self._out, bytearray()
        try:
            self._writer.write(out)
        except Exception as err:
            self._break(err)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        # Error replies become the exceptions redis-py raises for them (its hiredis parser
        # passes the same mapping): NoScriptError, ReadOnlyError, NoPermissionError, …
        parser = hiredis.Reader(replyError=BaseParser.parse_error)
        waiting = self._waiting
        try:
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    raise ConnectionError("Connection closed by server.")
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    if not waiting:
                        raise ConnectionError("a reply no command asked for")
                    fut = waiting.popleft()
                    if isinstance(reply, Exception):
                        err = reply
                        if isinstance(err, ReadOnlyError):
                            # A master demoted by a failover: as redis-py's Sentinel
                            # connections do, connect again (through Sentinel: the new master).
                            waiting.appendleft(fut)
                            raise ConnectionError(f"the server is a replica now: {err}")
                        if not fut.done():
                            fut.set_exception(err)
                    elif not fut.done():  # else its caller gave up waiting
                        fut.set_result(reply)
                self._progress = self._loop.time()
        except asyncio.CancelledError:
            raise
        except Exception as err:
            self._break(err)

    def _check(self) -> None:
        """``socket_timeout``: the oldest command waited that long with no reply coming in."""
        self._watch = None
        if self.broken is not None or not self._waiting or self._timeout is None:
            return
        idle = self._loop.time() - self._progress
        if idle >= self._timeout:
            self._break(TimeoutError("Timeout reading from the socket"))
        else:
            self._watch = self._loop.call_later(self._timeout - idle, self._check)

    def _break(self, err: BaseException) -> None:
        if self.broken is not None:
            return
        self.broken = err
        self._fail_all(_lost(err))
        if asyncio.current_task() is not self._reader:
            self._reader.cancel()
        self._closing = self._loop.create_task(self._conn.disconnect(nowait=True))

    def _fail_all(self, err: BaseException) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        while self._waiting:
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_exception(err)
                fut.exception()  # retrieved: its caller may have stopped waiting

    async def close(self, err: BaseException) -> None:
        self._break(err)
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        if self._closing is not None:
            await self._closing


def as_dict(reply: Any) -> dict[Any, Any]:
    """A map as RESP3 answers it, or RESP2's field, value, … as sent, as a dict (an odd one
    out — foreign data — ignored)."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=False))


def _lost(err: BaseException) -> Exception:
    """What the callers of a lost connection get: redis-py's classes, for ``except RedisError``."""
    if isinstance(err, (ConnectionError, TimeoutError)):
        return err
    return ConnectionError(f"the connection to Redis was lost: {err}")
