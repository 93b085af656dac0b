"""``HybridCache``: an in-process L1 in front of Redis, sharing a namespace with Strata
instances in any language (protocol v1, ``docs/protocol.md``)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import json
import logging
import os
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar, overload

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError, ResponseError

from . import connection, envelope
from .acks import Acker, Looks
from .ends import LoadEnds
from .envelope import DecodeError, Times
from .errors import (
    ConfigError,
    KeyTooLongError,
    LoaderError,
    LoaderTimeoutError,
    NotFoundError,
    UnavailableError,
    ValueTooLargeError,
)
from .follower import Follower, Handlers, Invalidation, now_ms
from .l1 import L1, Fence, L1Entry
from .layout import MAX_LOG_SHARDS, Layout
from .multiplex import Multiplexed
from .options import EntryOptions, ms
from .replicas import Command, Replicated
from .routed import Routed
from .stats import Stats

T = TypeVar("T")

log = logging.getLogger("strata_cache")

_SCRIPTS: dict[str, str] = json.loads(
    importlib.resources.files("strata_cache").joinpath("scripts.json").read_text()
)

# While another instance holds a key's load lease: first and longest pause between reads of
# Redis (the end of its load is announced on `#filled`, which wakes the waiter first).
_POLL = (0.05, 0.2)
#: Fills sent ahead of their callers' answer at most at once (then a caller waits for its own).
_MAX_LANDING = 64
#: The longest ``close`` waits for those fills to land (a frozen server must not hold it up).
_LAND_WAIT = 1.0

#: The version of the protocol (``docs/protocol.md``) this client speaks.
PROTOCOL_VERSION = 1

_Found = tuple[L1Entry, bytes]  # an entry read from Redis, and its raw bytes


class _Missing:
    """A read found nothing usable."""


class _Random64:
    """Lease tokens and stamps from the OS's random source, read 512 at a time: ``secrets``
    reads it once per number (a system call each, ~4 % of the W1 bench's time, two per miss)."""

    _AT_ONCE = 512

    def __init__(self) -> None:
        self._reset()
        # A forked child draws its own: tokens shared with its parent would fence each other.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._pool: list[int] = []

    def __call__(self) -> int:
        if not self._pool:
            self._pool = list(struct.unpack(f"<{self._AT_ONCE}Q", os.urandom(8 * self._AT_ONCE)))
        return self._pool.pop()


_random64 = _Random64()


def _version(text: Any) -> tuple[int, int]:
    """``major.minor`` of a version string from ``INFO server``; ``(0, 0)`` if unreadable."""
    parts = str(text or "").split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return 0, 0


class HybridCache:
    """A namespace's cache: an in-process L1 in front of Redis, coherent with every other
    instance of the namespace — Rust, Python or Node — through its invalidation log.

    Build it with :meth:`connect` and close it with :meth:`close` (or ``async with``)::

        cache = await HybridCache.connect("redis://localhost:6379", "catalog")
        product = await cache.get_or_load("product:42", lambda: db.product(42))
    """

    #: The namespace this cache shares with its other instances.
    namespace: str
    #: The entry options of calls that give none.
    defaults: EntryOptions
    #: This instance's id in the log (it skips its own entries).
    instance_id: int
    _layout: Layout
    _codec: int
    _raw: bool
    _max_staleness: int | None
    _lease_ttl: float
    _log_max_len: int
    _parts: int
    _max_key_bytes: int
    _max_value_bytes: int
    _l1: L1
    _fence: Fence
    _flights: dict[str, asyncio.Future[tuple[L1Entry, str]]]
    #: How many callers joined each flight of ``_flights`` (a lone caller may be answered first).
    _joined: dict[asyncio.Future[tuple[L1Entry, str]], int]
    #: Fills sent ahead of their caller's answer (`run_pending_tasks`).
    _landing: set[asyncio.Task[bool]]
    _ends: LoadEnds
    _background: set[asyncio.Task[Any]]
    _stats: Stats
    _redis: connection.Client
    _scripts: dict[str, Callable[..., Awaitable[Any]]]
    #: Sends one command, answers its reply as the server gave it.
    _run: Callable[..., Awaitable[Any]]
    #: The cache's own connections: one to the server, or one to each master of a cluster.
    _mux: Multiplexed | Routed | None
    _set_nx_get: bool
    _set_ifeq: bool
    _caught_up: list[int]
    _followers: list[Follower]
    _acker: Acker | None
    _looks: Looks | None
    _ack_within: float
    _replicated: Replicated | None

    def __init__(self) -> None:
        raise TypeError("use `await HybridCache.connect(url, namespace)`")

    @classmethod
    async def connect(
        cls,
        url: str,
        namespace: str,
        *,
        defaults: EntryOptions | None = None,
        l1_capacity: int = 10_000,
        codec: Literal["json", "msgpack"] = "json",
        raw_values: bool = False,
        max_staleness: float | None = None,
        lease_ttl: float = 10.0,
        log_max_len: int = 10_000,
        log_shards: int = 1,
        heartbeat: float = 1.0,
        acknowledged_writes: bool = False,
        replica_wait: float = 0.05,
        max_key_bytes: int = 1024,
        max_value_bytes: int = 16 * 1024 * 1024,
        **redis_kwargs: Any,
    ) -> HybridCache:
        """Connects to Redis at ``url`` — ``redis://``, ``rediss://`` (TLS), or a cluster as
        ``redis+cluster://h1:p1,h2:p2``, the master of a Sentinel-managed group as
        ``redis+sentinel://s1:p1,s2:p2/<master>[/<db>]`` (followed across a failover;
        ``sentinel_kwargs=`` for the sentinels' own settings); credentials in the URL — and
        starts following the namespace's log.

        - ``l1_capacity``: entries kept in process (0: no L1);
        - ``codec``: how values are written (every instance reads either);
        - ``raw_values``: write bare JSON without the envelope (a namespace's instances must
          agree; such entries have no soft TTL, fail-safe or stamp);
        - ``max_staleness``: serve L1 only while the log vouched for it within this many
          seconds (at least two heartbeats); otherwise read Redis;
        - ``log_shards``: parts the namespace's log is split into (all instances agree);
        - ``acknowledged_writes``: a write returns once every other live instance — in any
          language — has applied it (each keeps a field of ``<namespace>#acks``, refreshed as
          it applies the log and every ``heartbeat``); one that cannot answer holds writes up
          for at most ``max_staleness`` (one second without it), and writes it held up are
          counted in ``writes_unacknowledged``. Every instance of the namespace enables it;
        - ``replica_wait``: on a cluster, how long a write waits (``WAIT 1``) for a replica of
          its master to have it, so that a failover keeps it — an invalidation lost with its
          master would leave the old value in Redis; masters without a replica are not waited on;
        - ``redis_kwargs``: passed to ``redis.asyncio.Redis.from_url``.
        """
        self = object.__new__(cls)
        self._layout = Layout(namespace, connection.is_cluster(url))
        if not 1 <= log_shards <= MAX_LOG_SHARDS:
            raise ConfigError(f"log_shards {log_shards}: 1 to {MAX_LOG_SHARDS}")
        if max_staleness is not None and max_staleness < 2 * heartbeat:
            raise ConfigError(
                f"max_staleness {max_staleness}s must leave room for two heartbeats ({heartbeat}s)"
            )
        self.namespace = namespace
        self.defaults = defaults or EntryOptions()
        self._codec = envelope.CODECS[codec]
        self._raw = raw_values
        self._max_staleness = ms(max_staleness) if max_staleness is not None else None
        self._lease_ttl = lease_ttl
        self._log_max_len = log_max_len
        self._parts = log_shards
        self._max_key_bytes = max_key_bytes
        self._max_value_bytes = max_value_bytes
        self.instance_id = _random64()
        self._followers = []
        self._acker, self._looks = None, None
        self._l1 = L1(l1_capacity)
        self._fence = Fence()
        self._flights = {}
        self._joined = {}
        self._landing = set()
        self._ends = LoadEnds()
        self._background = set()
        self._stats = Stats()
        self._redis = connection.connect(url, **redis_kwargs)
        self._replicated = (
            Replicated(self._redis, replica_wait, _SCRIPTS)
            if isinstance(self._redis, RedisCluster)
            else None
        )
        if isinstance(self._redis, RedisCluster):
            # Routed by its key's slot to that master's connection, pipelined there; what
            # redis-py's slot map got wrong goes through its client (`routed`).
            self._mux = Routed(self._redis)
            self._run = self._mux.execute
            self._scripts = {name: self._mux.script(source) for name, source in _SCRIPTS.items()}
        else:
            # One server (or Sentinel's master): the cache's commands share one connection.
            self._mux = Multiplexed(self._redis)
            self._run = self._mux.execute
            self._scripts = {name: self._mux.script(source) for name, source in _SCRIPTS.items()}
        try:
            info: Any = await self._redis.info("server")
            if "redis_version" not in info:  # a cluster: one answer per node
                info = next(iter(info.values()), {})
            redis_version = _version(info.get("redis_version"))
            valkey_version = info.get("valkey_version")
            self._set_nx_get = redis_version >= (7, 0)
            # SET … IFEQ: Valkey 8.1, Redis 8.4 on (Valkey reports itself as Redis 7.2).
            self._set_ifeq = (
                _version(valkey_version) >= (8, 1)
                if valkey_version is not None
                else redis_version >= (8, 4)
            )
            agree = (
                [self._layout.log_shards(), self._layout.protocol()],
                [log_shards, PROTOCOL_VERSION],
            )
            if self._replicated is None:
                parts, protocol = await self._scripts["AGREE"](keys=agree[0], args=agree[1])
            else:
                # What the first instance stores, every later one checks: kept through a failover.
                step = self._replicated.script("AGREE", *agree)
                [(parts, protocol)] = await self._replicated.write([step], agree[0][0])
            if protocol is not None and int(protocol) != PROTOCOL_VERSION:
                raise ConfigError(
                    f"namespace {namespace!r} is written with protocol version {int(protocol)}; "
                    f"this client speaks version {PROTOCOL_VERSION}: upgrade it to join"
                )
            if parts is not None and int(parts) != log_shards:
                raise ConfigError(
                    f"namespace {namespace!r}: its log is in {int(parts)} parts, "
                    f"this instance is configured with {log_shards}"
                )
            self._caught_up = [now_ms()] * log_shards
            handlers = Handlers(
                apply=self._apply,
                resync=self._resync,
                filled=self._ends.announce,
                caught_up=self._mark_caught_up,
                applied=self._applied,
            )
            self._followers = [
                Follower(
                    url,
                    self._layout,
                    part,
                    log_shards,
                    heartbeat,
                    _SCRIPTS["LOG_TAIL"],
                    handlers,
                    redis_kwargs,
                )
                for part in range(log_shards)
            ]
            self._ack_within = max_staleness if max_staleness is not None else 1.0
            if acknowledged_writes:
                key = self._layout.acks()
                self._acker = Acker(
                    self._run, key, self.instance_id, log_shards, heartbeat, self._log_error
                )
                self._looks = Looks(self._run, key)
            for follower in self._followers:
                await follower.start()
            if self._acker is not None:
                # Counted by the others before it serves a read: no write may miss it.
                await self._acker.join()
        except BaseException:
            for follower in self._followers:
                await follower.stop()
            await self._disconnect()
            raise
        return self

    async def close(self) -> None:
        """Lands the fills on their way (for a second at most), stops following the log and
        closes the connections."""
        if self._landing:
            await asyncio.wait(set(self._landing), timeout=_LAND_WAIT)
        for task in list(self._background):
            task.cancel()
        if self._acker is not None:
            await self._acker.leave()
        for follower in self._followers:
            await follower.stop()
        await self._disconnect()
        for task in self._landing:
            task.cancel()  # a fill the server never answered: nothing waits for it now
        await asyncio.gather(*self._landing, return_exceptions=True)

    async def _disconnect(self) -> None:
        if self._mux is not None:
            await self._mux.close()
        await connection.close(self._redis)

    async def __aenter__(self) -> HybridCache:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def stats(self) -> Stats:
        """A snapshot of the counters (the Rust crate's names)."""
        return self._stats.copy()

    # ---------------------------------------------------------------- reads

    async def get_or_load(
        self,
        key: str,
        loader: Callable[[], Awaitable[T]],
        *,
        options: EntryOptions | None = None,
        decode: Callable[[Any], T] | None = None,
    ) -> T:
        """The value of ``key``: from L1, else Redis, else ``loader`` — called once across
        every instance of the namespace for concurrent misses (the key's load lease), and
        stored only if no write or invalidation overtook it (the fenced fill).

        ``decode`` turns the data read from Redis (JSON/MessagePack values) into ``T`` — for
        example ``Product.model_validate``; values the loader returns are cached as they are.
        Raises :class:`NotFoundError` for a cached "not found"
        (see :meth:`get_or_load_optional`).
        """
        entry = await self._fetch(key, loader, options or self.defaults)
        if entry.negative:
            raise NotFoundError(key)
        return self._typed(key, entry, decode)

    async def get_or_load_optional(
        self,
        key: str,
        loader: Callable[[], Awaitable[T | None]],
        *,
        options: EntryOptions | None = None,
        decode: Callable[[Any], T] | None = None,
    ) -> T | None:
        """Like :meth:`get_or_load` for a loader that may find nothing: ``None`` is cached too,
        for ``negative_ttl``."""
        entry = await self._fetch(key, loader, options or self.defaults)
        return None if entry.negative else self._typed(key, entry, decode)

    @overload
    async def get(self, key: str) -> Any: ...

    @overload
    async def get(self, key: str, *, decode: Callable[[Any], T]) -> T | None: ...

    async def get(self, key: str, *, decode: Callable[[Any], T] | None = None) -> Any:
        """The value of ``key`` if L1 or Redis holds a fresh one (``None`` if not); never
        loads."""
        self._check_key(key)
        now = now_ms()
        e = self._l1.get(key)
        if e is not None and now < min(e.l1_until, e.times.fresh_until) and not e.fail_safe:
            if self._trusted(now):
                self._stats.l1_hits += 1
                return None if e.negative else self._typed(key, e, decode)
            self._stats.l1_bypassed += 1
        seen = self._fence.read(key)
        try:
            raw = await self._run("GET", self._layout.data(key))
        except RedisError as err:
            self._stats.l2_errors += 1
            log.debug("L2 read of %s failed: %s", key, err)
            return None
        if not isinstance(raw, bytes) or envelope.lease_holder(raw) is not None:
            return None  # nothing, or a load in progress
        found = self._decode(key, raw, now)
        if isinstance(found, _Missing) or now >= found[0].times.fresh_until:
            return None
        self._stats.l2_hits += 1
        self._insert_unless(key, found[0], seen)
        return None if found[0].negative else self._typed(key, found[0], decode)

    def _typed(self, key: str, entry: L1Entry, decode: Callable[[Any], T] | None) -> T:
        """The entry's value as ``T``: data read from Redis goes through ``decode`` once, and
        L1 keeps the decoded value."""
        if decode is None or not entry.from_l2:
            value: T = entry.value
            return value
        typed = decode(entry.value)
        if self._l1.get(key) is entry:
            self._l1.insert(key, entry.decoded(typed))
        return typed

    async def _fetch(
        self, key: str, loader: Callable[[], Awaitable[Any]], options: EntryOptions
    ) -> L1Entry:
        self._check_key(key)
        now = now_ms()
        stale: L1Entry | None = None
        e = self._l1.get(key)
        if e is not None:
            if now < e.l1_until:
                if not self._trusted(now):
                    self._stats.l1_bypassed += 1
                elif e.fail_safe:
                    self._stats.stale_served += 1
                    return e
                elif now < e.times.fresh_until:
                    self._stats.l1_hits += 1
                    return e
                else:
                    self._stats.stale_served += 1
                    self._refresh_behind(key, loader, options, e)
                    return e
            if e.alive(now):
                stale = e
        while (flight := self._flights.get(key)) is not None:
            self._joined[flight] = self._joined.get(flight, 0) + 1
            try:
                entry, source = await asyncio.shield(flight)
            except asyncio.CancelledError:
                if flight.cancelled():
                    continue  # its leader was cancelled: lead a new flight
                raise
            if source == "stale":
                self._stats.stale_served += 1
            else:
                self._stats.waited += 1
            return entry
        fut: asyncio.Future[tuple[L1Entry, str]] = asyncio.get_running_loop().create_future()
        self._flights[key] = fut
        try:
            entry, source = await self._load_through(key, loader, options, stale, fut)
        except BaseException as err:
            if isinstance(err, asyncio.CancelledError):
                fut.cancel()
            elif not fut.done():
                fut.set_exception(err)
                fut.exception()  # retrieved: there may be no one waiting
            raise
        finally:
            self._joined.pop(fut, None)
            if self._flights.get(key) is fut:
                del self._flights[key]
        if source == "soft":
            # Served from a soft-expired entry in Redis: refresh it behind, once.
            self._refresh_behind(key, loader, options, entry)
            source = "stale"
        if not fut.done():
            fut.set_result((entry, source))
        if source == "l2":
            self._stats.l2_hits += 1
        elif source == "loaded":
            self._stats.misses += 1
        elif source == "stale":
            self._stats.stale_served += 1
        else:
            self._stats.waited += 1
        return entry

    async def _load_through(
        self,
        key: str,
        loader: Callable[[], Awaitable[Any]],
        options: EntryOptions,
        stale: L1Entry | None,
        flight: asyncio.Future[tuple[L1Entry, str]],
    ) -> tuple[L1Entry, str]:
        """The leader of this instance's flight: Redis, then (in turn across instances) the
        loader. Returns the entry and where it came from."""
        seen = self._fence.read(key)
        token = _random64()
        record = envelope.lease_record(token)
        data_key = self._layout.data(key)
        fence: tuple[str, bytes] | None
        refresh_token = ""
        deadline = time.monotonic() + self._lease_ttl
        pause = _POLL[0]
        # Set once another instance's load is waited on (the lease record marked): its fill
        # announces itself on `#filled`, which sets this.
        end: asyncio.Event | None = None
        mark = False  # the next read marks the holder's lease record waited on
        try:
            while True:
                if end is not None:
                    end.clear()  # before the read: an announcement after it is not missed
                try:
                    raw = await self._read(data_key, record, mark=mark)
                except RedisError as err:
                    self._stats.l2_errors += 1
                    log.debug("L2 read of %s failed: %s", key, err)
                    fence = None  # nothing to fence with: the fill leaves Redis alone
                    break
                marked, mark = mark, False
                if raw is None:
                    fence = ("L", record)  # the key was empty: our lease is in it now
                    break
                holder = envelope.lease_holder(raw)
                if holder == token:
                    fence = ("L", record)
                    break
                if holder is None:
                    found = self._decode(key, raw, now_ms())
                    if isinstance(found, _Missing):
                        fence = ("B", raw)  # unreadable: replaced only if still these bytes
                        break
                    entry = found[0]
                    now = now_ms()
                    if now < entry.times.fresh_until:
                        self._insert_unless(key, entry, seen)
                        return entry, ("waited" if end is not None else "l2")
                    if stale is None or stale.times.created < entry.times.created:
                        stale = entry
                    if now < entry.times.expires and stale is entry:
                        # Soft-expired in Redis: serve it, refresh behind (one instance).
                        self._insert_unless(key, entry, seen)
                        return entry, "soft"
                    fence = ("S", envelope.stamp_of(raw))
                    if await self._take_refresh_lease(key, token):
                        refresh_token = str(token)
                        break
                # Another instance loads the key: wait for its fill, bounded by the lease TTL.
                # The fill announces itself once the holder's record is marked waited on (13
                # bytes): by another waiter, or by this read. Marking takes a script, so only
                # a record found unmarked gets it; other reads are the plain `SET`.
                unmarked = holder is not None and not envelope.lease_waited(raw) and not marked
                if end is None:
                    end = self._ends.join(key)
                    self._stats.lease_waits += 1
                    mark = unmarked
                    continue  # read again at once: an announcement before joining was missed
                if unmarked:
                    mark = True
                    continue  # a new holder's record: mark it at once
                left = deadline - time.monotonic()
                if left <= 0:
                    fence = None  # waited the lease's whole life: load, leave Redis alone
                    break
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(end.wait(), min(pause, left))
                pause = min(pause * 2, _POLL[1])
        finally:
            if end is not None:
                self._ends.leave(key, end)
        return await self._load(key, loader, options, stale, fence, refresh_token, seen, flight)

    async def _read(self, data_key: str, record: bytes, mark: bool) -> bytes | None:
        """The data key's bytes, taking the load lease if it was empty (one round trip)."""
        ttl = max(1, ms(self._lease_ttl))
        if not mark and self._set_nx_get:
            raw = await self._run("SET", data_key, record, "NX", "GET", "PX", ttl)
        else:
            raw = await self._scripts["READ"](
                keys=[data_key], args=[record, ttl, "1" if mark else ""]
            )
        return raw if isinstance(raw, bytes) else None

    async def _take_refresh_lease(self, key: str, token: int) -> bool:
        try:
            held = await self._scripts["ACQUIRE_LEASE"](
                keys=[self._layout.lease(key)], args=[str(token), max(1, ms(self._lease_ttl))]
            )
        except RedisError:
            self._stats.l2_errors += 1
            return True  # the fill is fenced by the entry all the same
        return bool(held == 1)

    async def _load(
        self,
        key: str,
        loader: Callable[[], Awaitable[Any]],
        options: EntryOptions,
        stale: L1Entry | None,
        fence: tuple[str, bytes] | None,
        refresh_token: str,
        seen: tuple[int, int],
        flight: asyncio.Future[tuple[L1Entry, str]] | None = None,
    ) -> tuple[L1Entry, str]:
        """Calls the loader and fills Redis (fenced) and L1 (unless overtaken). ``flight``:
        the caller's, whose lone caller may have its answer before the fill lands."""
        self._stats.loader_calls += 1
        started = time.monotonic()
        try:
            if options.hard_timeout is not None:
                value = await asyncio.wait_for(loader(), options.hard_timeout)
            else:
                value = await loader()
        except Exception as err:
            timed_out = isinstance(err, TimeoutError)
            if timed_out:
                self._stats.loader_timeouts += 1
            else:
                self._stats.loader_errors += 1
            await self._release(key, fence, refresh_token)
            now = now_ms()
            if stale is not None and now < stale.times.stale_until:
                # Fail-safe: the stale value, and no new attempt for a throttle period.
                entry = stale.as_fail_safe(now + ms(options.fail_safe_throttle))
                self._insert_unless(key, entry, seen)
                return entry, "stale"
            if timed_out:
                raise LoaderTimeoutError(f"loader of {key!r} timed out") from err
            raise LoaderError(f"loader of {key!r} failed: {err}") from err
        load_ms = round((time.monotonic() - started) * 1000)
        now = now_ms()
        negative = value is None
        times = options.times(now, negative)
        tags = tuple(options.tags)
        stamp = _random64()
        entry = L1Entry(value, negative, times, options.l1_until(now, times), tags, stamp)
        payload = self._encode(key, value, negative, times, stamp, load_ms, tags, options)
        if payload is None:
            await self._release(key, fence, refresh_token)
            return entry, "loaded"
        if fence is not None and self._fence.overtakes(seen, tags):
            # A tag of the value (or everything) was dropped here while it loaded.
            self._stats.fills_fenced += 1
            await self._release(key, fence, refresh_token)
            return entry, "loaded"
        if fence is None:
            self._insert_unless(key, entry, seen)
            return entry, "loaded"
        fill = (key, payload, times, tags, fence, refresh_token)
        if (
            flight is not None
            and not self._joined.get(flight)
            and len(self._landing) < _MAX_LANDING
            and now_ms() < entry.l1_until
            and self._fence.read(key) == seen
        ):
            # A caller alone on the key is answered once L1 holds the value and its fill is on
            # its way (the Rust and Node clients' order, docs/protocol.md "When a client may
            # answer"): reads here find L1, other instances find the lease record and wait
            # for the fill as for the load. A crowd waits for the fill, so that its wake-up
            # does not hold the fill back from the instances waiting on it (W2's stampede).
            # The task sends it on the loop's next turn; whatever this caller does meanwhile
            # (a write of the key) reaches Redis first and is what refuses it, as for any
            # fill an invalidation overtakes.
            self._l1.insert(key, entry)
            if self._l1.peek(key) is entry:
                landing = asyncio.ensure_future(self._land(fill, seen, entry))
                self._landing.add(landing)
                landing.add_done_callback(self._landing.discard)
                return entry, "loaded"
        if await self._land(fill, seen, None):
            self._insert_unless(key, entry, seen)
        return entry, "loaded"

    async def _land(
        self,
        fill: tuple[str, bytes, Times, tuple[str, ...], tuple[str, bytes], str],
        seen: tuple[int, int],
        early: L1Entry | None,
    ) -> bool:
        """Fills Redis; ``False`` if the fill was refused or undone. ``early``: the copy already
        put in L1, taken out again if so (only while it is still the one there)."""
        key, tags = fill[0], fill[3]
        kept = await self._fill(*fill)
        if kept and self._fence.overtakes(seen, tags):
            # A tag dropped here while the fill was on its way: that drop may have read the
            # tag's index before the fill put the key there (docs/protocol.md, "After the
            # fill"). It was recorded first, so it shows now: undo the fill.
            await self._unfill(key)
            kept = False
        if not kept:
            self._stats.fills_fenced += 1
            if early is not None and self._l1.peek(key) is early:
                self._l1.remove(key)
        return kept

    async def run_pending_tasks(self) -> None:
        """Waits until every fill sent ahead of its caller's answer has landed (tests,
        shutdown)."""
        while self._landing:
            await asyncio.gather(*self._landing, return_exceptions=True)

    async def _unfill(self, key: str) -> None:
        """Deletes a fill that a tag drop may have missed."""
        try:
            await self._run("UNLINK", self._layout.data(key))
        except RedisError as err:
            self._stats.l2_errors += 1
            log.debug("undoing the fill of %s failed: %s", key, err)

    async def _fill(
        self,
        key: str,
        payload: bytes,
        times: Times,
        tags: tuple[str, ...],
        fence: tuple[str, bytes],
        refresh_token: str,
    ) -> bool:
        px = max(1, (times.expires if self._raw else times.stale_until) - times.created)
        kind, arg = fence
        args: list[bytes | str | int] = [
            payload,
            px,
            kind,
            arg,
            key,
            refresh_token,
            "1" if self._set_nx_get else "",
            max(1, ms(self._lease_ttl)),
        ]
        data, lease = self._layout.data(key), self._layout.lease(key)
        # A miss's fill that needs no more than its lease record compared: in one step with the
        # fewest arguments where the server allows it (docs/protocol.md, §5).
        in_place = kind == "L" and not refresh_token and not tags
        try:
            if in_place and self._set_ifeq:
                # The server compares (docs/protocol.md, "Without a script"): the record →
                # stored; the record waited on → the script stores and announces it; else
                # overtaken, nothing changed. (Tags go through the script, or on a cluster
                # through their indexes first.)
                old = await self._run("SET", data, payload, "IFEQ", arg, "GET", "PX", px)
                if old == arg:
                    return True
                if old != arg + b"W":
                    return False
            elif in_place and self._set_nx_get:
                # Redis 7: the small script with the fewest arguments ("With the small
                # script"). Over a record waited on it stored, and announced the end itself on
                # one server; on a cluster, where the filled stream lives in another slot, the
                # end is announced here.
                lean = [payload, px, arg, max(1, ms(self._lease_ttl))]
                keys = [data] if self._layout.cluster else [data, self._layout.filled()]
                outcome = await self._scripts["FILL_LEASED"](keys=keys, args=lean)
                if outcome == 2:
                    await self._announce_filled(key)
                return bool(outcome != 0)
            if not self._layout.cluster:
                tag_keys = [self._layout.tag(t) for t in tags]
                keys = [data, self._layout.filled(), lease, *tag_keys]
                return bool(await self._scripts["FILL"](keys=keys, args=args) == 1)
            # On a cluster the script stays in the value's slot: tags first, each in its own
            # slot; the end of a waited-on load is announced after.
            await self._index_tags(data, tags, px)
            stored, waited = await self._scripts["FILL_IN_SLOT"](keys=[data, lease], args=args)
            if waited == 1:
                await self._announce_filled(key)
            return bool(stored == 1)
        except RedisError as err:
            self._stats.l2_errors += 1
            log.debug("fill of %s failed: %s", key, err)
            return True  # nothing stored, nothing overtaken: L1 may keep the value

    async def _index_tags(self, data: str, tags: tuple[str, ...], px: int) -> None:
        """On a cluster: adds ``data`` to each tag's index, apart from the value's slot."""
        for tag in tags:
            await self._scripts["INDEX_TAG"](keys=[self._layout.tag(tag)], args=[data, px])

    async def _announce_filled(self, key: str) -> None:
        """``key``'s load ended, for reading followers on the stream and for pushed ones on its
        channel: after a fill on a cluster or by ``FILL_LEASED`` (``FILL`` does it itself)."""
        filled = self._layout.filled()

        async def push() -> None:
            # As the scripts' `redis.pcall`: a user not allowed the channel still announces.
            with contextlib.suppress(ResponseError):
                await self._redis.spublish(filled, key)

        await asyncio.gather(
            self._redis.xadd(filled, {"k": key}, maxlen=1000, approximate=True), push()
        )

    async def _release(self, key: str, fence: tuple[str, bytes] | None, refresh_token: str) -> None:
        """Gives back what a failed load held, so others load instead of waiting it out."""
        try:
            if fence is not None and fence[0] == "L" and not self._layout.cluster:
                await self._scripts["RELEASE_RECORD"](
                    keys=[self._layout.data(key), self._layout.filled()], args=[fence[1], key]
                )
            elif fence is not None and fence[0] == "L":
                _, waited = await self._scripts["RELEASE_RECORD_IN_SLOT"](
                    keys=[self._layout.data(key)], args=[fence[1]]
                )
                if waited == 1:
                    await self._announce_filled(key)
            if refresh_token:
                await self._scripts["RELEASE_LEASE"](
                    keys=[self._layout.lease(key)], args=[refresh_token]
                )
        except RedisError:
            self._stats.l2_errors += 1  # the lease expires by itself

    def _refresh_behind(
        self,
        key: str,
        loader: Callable[[], Awaitable[Any]],
        options: EntryOptions,
        stale: L1Entry,
    ) -> None:
        """One background refresh of a soft-expired entry (stale-while-revalidate)."""
        if key in self._flights:
            return
        fut: asyncio.Future[tuple[L1Entry, str]] = asyncio.get_running_loop().create_future()
        self._flights[key] = fut
        self._stats.background_refreshes += 1

        async def refresh() -> None:
            try:
                seen = self._fence.read(key)
                token = _random64()
                if not await self._take_refresh_lease(key, token):
                    fut.set_result((stale, "stale"))
                    return
                fence = ("S", stale.stamp.to_bytes(8, "little")) if stale.stamp else ("N", b"")
                result = await self._load(key, loader, options, stale, fence, str(token), seen)
                fut.set_result(result)
            except Exception as err:
                log.warning("background refresh of %s failed: %s", key, err)
                fut.set_result((stale, "stale"))
            finally:
                if self._flights.get(key) is fut:
                    del self._flights[key]

        task = asyncio.create_task(refresh())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---------------------------------------------------------------- writes

    async def set(self, key: str, value: Any, *, options: EntryOptions | None = None) -> None:
        """Stores ``value`` in Redis and L1 (write-through) and tells every other instance to
        drop its copy, in one round trip. Raises :class:`UnavailableError` if Redis cannot be
        reached (nothing is written then)."""
        self._check_key(key)
        options = options or self.defaults
        now = now_ms()
        times = options.times(now, False)
        tags = tuple(options.tags)
        stamp = _random64()
        payload = self._encode(key, value, False, times, stamp, 0, tags, options)
        if payload is None:
            raise ValueTooLargeError(f"the value of {key!r} is over {self._max_value_bytes} bytes")
        part = self._layout.part_of(key, self._parts)
        px = max(1, (times.expires if self._raw else times.stale_until) - now)
        self._overtake(key)
        data = self._layout.data(key)
        try:
            if not self._layout.cluster:
                seq = await self._scripts["REPLACE"](
                    keys=[data, *self._log_keys(part), *(self._layout.tag(t) for t in tags)],
                    args=[payload, px, self._log_max_len, self._entry("key", key)],
                )
            else:
                # The log lives in another slot: the value first, then its entry.
                await self._index_tags(data, tags, px)
                seq = await self._logged([("SET", data, payload, "PX", px)], data, part, "key", key)
        except RedisError as err:
            self._l1.remove(key)
            raise UnavailableError(f"set {key!r}: {err}") from err
        # Marked again now that Redis has the value: a read here that took the old one from
        # Redis in the meantime must not put it in L1 over this one.
        self._overtake(key)
        self._stats.invalidations_sent += 1
        entry = L1Entry(value, False, times, options.l1_until(now, times), tags, stamp)
        self._l1.insert(key, entry)
        await self._acknowledged(part, seq)

    async def invalidate(self, key: str) -> None:
        """Drops ``key`` from Redis and from every instance's L1; a load in flight for it (here
        or anywhere) will not store its value. Returns once Redis has the change."""
        self._check_key(key)
        part = self._layout.part_of(key, self._parts)
        data = self._layout.data(key)
        try:
            if not self._layout.cluster:
                seq = await self._scripts["INVALIDATE"](
                    keys=[data, *self._log_keys(part)],
                    args=[self._log_max_len, self._entry("key", key)],
                )
            else:
                seq = await self._logged([("UNLINK", data)], data, part, "key", key)
        except RedisError as err:
            self._drop(key)
            raise UnavailableError(f"invalidate {key!r}: {err}") from err
        # Dropped once Redis has the change, as the Rust crate does: dropped before, a read
        # here in between would take the old value from Redis and put it back in L1.
        self._drop(key)
        self._stats.invalidations_sent += 1
        await self._acknowledged(part, seq)

    async def invalidate_tag(self, tag: str) -> None:
        """Drops every entry tagged ``tag``, in Redis and in every instance's L1."""
        # Marked before the indexes are deleted, so a load of this instance that began earlier
        # stores nothing (docs/protocol.md §6); L1 cleared after, of what reads put there
        # meanwhile too.
        self._overtake_tag(tag)
        part = self._layout.part_of(tag, self._parts)
        try:
            index = self._layout.tag(tag)
            if not self._layout.cluster:
                await self._scripts["DELETE_TAG"](keys=[index])
            else:
                # Each member in its own slot, confirmed by a replica of its master; then only
                # those leave the index (members added meanwhile stay).
                members = list(await self._redis.smembers(index))
                await self._unlink_replicated(members)
                if members:
                    await self._redis.srem(index, *members)
            self._drop_tag(tag)
            seq = await self._append(part, "tag", tag)
        except RedisError as err:
            raise UnavailableError(f"invalidate tag {tag!r}: {err}") from err
        self._stats.invalidations_sent += 1
        await self._acknowledged(part, seq)

    async def clear(self) -> None:
        """Drops every entry of the namespace, in Redis and in every instance's L1."""
        try:
            for pattern in (f"{self.namespace}:*", f"{self.namespace}#tag:*"):
                batch: list[bytes] = []
                async for k in self._redis.scan_iter(match=pattern, count=1000):
                    batch.append(k)
                    if len(batch) >= 500:
                        await self._redis.unlink(*batch)
                        batch = []
                if batch:
                    await self._redis.unlink(*batch)
            # Dropped once Redis has the change, as an invalidation is.
            self._drop_all()
            seq = await self._append(0, "clear", None)
        except RedisError as err:
            self._drop_all()
            raise UnavailableError(f"clear {self.namespace!r}: {err}") from err
        self._stats.invalidations_sent += 1
        await self._acknowledged(0, seq)

    async def _append(self, part: int, op: str, arg: str | None) -> Any:
        """Appends an entry to ``part`` of the log; returns its sequence number."""
        return await self._logged([], self._log_keys(part)[0], part, op, arg)

    async def _logged(
        self, steps: list[Command], key: str, part: int, op: str, arg: str | None
    ) -> Any:
        """``steps`` (writes to ``key``'s slot), then their entry in ``part`` of the log; the
        entry's sequence number. On a cluster each is confirmed by a replica (``Replicated``):
        in one round trip and one ``WAIT`` where the log shares their master, else the steps
        and their ``WAIT`` first, then the entry and its own — never the entry before the
        steps are done."""
        keys = self._log_keys(part)
        args: list[int | bytes] = [self._log_max_len, self._entry(op, arg)]
        r = self._replicated
        if r is None:
            return await self._scripts["APPEND_LOG"](keys=keys, args=args)
        append = r.script("APPEND_LOG", keys, args)
        if steps and not r.same_master(key, keys[0]):
            await r.write(steps, key)
            steps = []
        return (await r.write([*steps, append], keys[0]))[-1]

    async def _unlink_replicated(self, keys: list[bytes | str]) -> None:
        """On a cluster: unlinks ``keys``, one pipeline and one ``WAIT`` per master."""
        r = self._replicated
        assert r is not None
        by_master: dict[str, list[bytes | str]] = {}
        for k in keys:
            master = r.master(k)
            by_master.setdefault(master.name if master else "", []).append(k)
        await asyncio.gather(
            *(r.write([("UNLINK", k) for k in ks], ks[0]) for ks in by_master.values())
        )

    def _log_keys(self, part: int) -> list[str]:
        """A part of the log: its stream and its sequence counter."""
        return [self._layout.log(part, self._parts), self._layout.log_seq(part, self._parts)]

    def _entry(self, op: str, arg: str | None) -> bytes:
        return Invalidation(self.instance_id, op, arg).wire()

    # ---------------------------------------------------------------- L1 and the log

    def _trusted(self, now: int) -> bool:
        return self._max_staleness is None or now - min(self._caught_up) <= self._max_staleness

    def _insert_unless(self, key: str, entry: L1Entry, seen: tuple[int, int]) -> None:
        """Puts ``entry`` in L1 unless an invalidation of the key was applied since ``seen``."""
        if self._fence.read(key) != seen:
            self._stats.fills_fenced += 1
            return
        self._l1.insert(key, entry)

    def _overtake(self, key: str) -> None:
        """Loads in flight for ``key`` neither fill L1 nor take in new callers."""
        self._fence.bump(key)
        self._flights.pop(key, None)
        # The change deleted or replaced the key in Redis first, and with it any lease record a
        # flight here waits on: that wait is over (the Rust crate's rule).
        self._ends.announce(key)

    def _drop(self, key: str) -> None:
        self._overtake(key)
        self._l1.remove(key)

    def _overtake_tag(self, tag: str) -> None:
        """Loads in flight check their tags against the drop and take in no new callers."""
        self._fence.bump_all(tag)
        self._flights.clear()
        self._ends.announce_all()

    def _drop_tag(self, tag: str) -> None:
        self._overtake_tag(tag)
        self._l1.remove_tag(tag)

    def _drop_all(self) -> None:
        self._fence.bump_all()
        self._flights.clear()
        self._ends.announce_all()
        self._l1.clear()

    def _apply(self, inv: Invalidation) -> None:
        if inv.origin == self.instance_id:
            return
        self._stats.invalidations_received += 1
        if inv.op == "key" and inv.arg is not None:
            self._drop(inv.arg)
        elif inv.op == "tag" and inv.arg is not None:
            self._drop_tag(inv.arg)
        else:
            self._drop_all()

    def _resync(self) -> None:
        self._stats.resyncs += 1
        self._stats.invalidations_received += 1
        self._drop_all()

    def _mark_caught_up(self, part: int) -> None:
        self._caught_up[part] = now_ms()

    def _applied(self, part: int, seq: int) -> None:
        if self._acker is not None:
            self._acker.record(part, seq)

    def _log_error(self) -> None:
        self._stats.log_errors += 1

    async def _acknowledged(self, part: int, seq: Any) -> None:
        """With acknowledged writes: returns once every other live instance applied entry
        ``seq`` of ``part`` (or the wait's bound passed: counted)."""
        if self._looks is None or seq is None:
            return
        try:
            done = await self._looks.wait(self.instance_id, part, int(seq), self._ack_within)
        except (RedisError, OSError):
            done = False
        if not done:
            self._stats.writes_unacknowledged += 1

    # ---------------------------------------------------------------- bytes

    def _check_key(self, key: str) -> None:
        if len(key.encode()) > self._max_key_bytes:
            raise KeyTooLongError(f"key of {len(key.encode())} bytes, over {self._max_key_bytes}")

    def _encode(
        self,
        key: str,
        value: Any,
        negative: bool,
        times: Times,
        stamp: int,
        load_ms: int,
        tags: tuple[str, ...],
        options: EntryOptions,
    ) -> bytes | None:
        """The bytes to store, or ``None`` when over the size limit (counted, not cached)."""
        if self._raw:
            payload = envelope.encode_value(value, envelope.JSON)
        else:
            codec = envelope.CODECS[options.codec] if options.codec else self._codec
            payload = envelope.encode(
                value,
                negative=negative,
                times=times,
                stamp=stamp,
                load_ms=load_ms,
                tags=tags,
                codec=codec,
            )
        if len(payload) > self._max_value_bytes:
            self._stats.oversized += 1
            log.warning("value of %s is %d bytes: not cached", key, len(payload))
            return None
        return payload

    def _decode(self, key: str, raw: bytes, now: int) -> _Found | _Missing:
        """The entry in ``raw``; unreadable bytes are counted and read as a miss."""
        try:
            if self._raw and not envelope.is_envelope(raw):
                value = envelope.decode_value(raw, envelope.JSON)
                times = self.defaults.times(now, False)
                entry = L1Entry(
                    value, value is None, times, self.defaults.l1_until(now, times), (), None, True
                )
                return entry, raw
            env = envelope.decode(raw)
        except DecodeError as err:
            self._stats.decode_errors += 1
            log.warning("undecodable L2 entry %s treated as a miss: %s", key, err)
            return _Missing()
        entry = L1Entry(
            env.value,
            env.negative,
            env.times,
            self.defaults.l1_until(now, env.times),
            env.tags,
            env.stamp,
            True,
        )
        return entry, raw
