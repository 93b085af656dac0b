"""Acknowledged writes (``docs/protocol.md`` §4): each instance keeps a field of
``<namespace>#acks`` saying how far it applied each part of the log and until when it counts
as alive; a write returns once every other live instance's field covers its entry.

The same fields, format and rules as the Rust crate's ``acknowledged_writes``, so a write in
any language waits for the instances of every language.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.exceptions import RedisError

from .follower import now_ms
from .multiplex import as_dict

log = logging.getLogger("strata_cache")

#: Looks at ``#acks`` sent as soon as the last one returns, before looking every ``POLL``:
#: the acknowledgements come a round trip or two after the write.
QUICK_LOOKS = 8
POLL = 0.001

_ERRORS = (RedisError, OSError)

#: The longest ``close`` waits for the goodbye (a frozen server must not hold it up).
LEAVE_WAIT = 1.0

T = TypeVar("T")


async def bounded(aw: Awaitable[T], timeout: float) -> tuple[bool, T | None]:
    """``(True, result)`` if ``aw`` finishes within ``timeout`` seconds, else ``(False, None)``
    — and it is cancelled, not awaited: cancelling with ``wait_for`` a task that had just been
    woken could leave the caller waiting on it for good (seen on CPython 3.11)."""
    task = asyncio.ensure_future(aw)
    done, _ = await asyncio.wait({task}, timeout=max(0.0, timeout))
    if not done:
        task.cancel()
        # Its failure, should it end with one, is nobody's to report.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return False, None
    return True, task.result()


def ack_value(alive_until: int, applied: list[int]) -> str:
    """A field's value: ``<alive until, ms>:<applied s of part 0>,<of part 1>,…``."""
    return f"{alive_until}:{','.join(str(s) for s in applied)}"


def parse_ack(value: bytes | str, part: int) -> tuple[int, int] | None:
    """``(alive until, applied s of part)`` of a field's value (a part it does not list: 0);
    ``None`` if it is not one."""
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    alive, sep, seqs = text.partition(":")
    listed = seqs.split(",")
    seq = listed[part] if part < len(listed) else "0"
    if not sep or not _decimal(alive) or not _decimal(seq):
        return None
    return int(alive), int(seq)


def _decimal(text: str) -> bool:
    """Digits only, as the Rust crate parses a ``u64`` (no sign, no spaces)."""
    return text.isascii() and text.isdigit()


class Acker:
    """This instance's field: written whenever the followers apply more of the log, and at
    least every heartbeat (a sign of life); removed when the cache closes."""

    def __init__(
        self,
        run: Callable[..., Awaitable[Any]],
        key: str,
        instance_id: int,
        parts: int,
        heartbeat: float,
        on_error: Callable[[], None],
    ) -> None:
        self._command = run
        self._key = key
        self._field = str(instance_id)
        self._applied = [0] * parts
        self._heartbeat = heartbeat
        self._on_error = on_error
        self._advanced = asyncio.Event()
        self._leaving = False
        self._task: asyncio.Task[None] | None = None

    def record(self, part: int, seq: int) -> None:
        """A follower applied its part up to ``seq`` (a lost log may set it back)."""
        if self._applied[part] != seq:
            self._applied[part] = seq
            self._advanced.set()

    async def join(self) -> None:
        """The first acknowledgement, before the cache serves a read: no write may miss it.
        A failure is logged; the acker's next beat tries again."""
        try:
            await self._acknowledge()
        except _ERRORS as e:
            self._on_error()
            log.warning(
                "no acknowledgement went out yet (%s); others' writes may not wait for this "
                "instance at first",
                e,
            )
        self._task = asyncio.create_task(self._run(), name=f"strata acker {self._key}")

    async def leave(self) -> None:
        """Stops acknowledging and removes the field: the others stop waiting for it at once."""
        # Not cancelled mid-write: an `HSET` sent before the `HDEL` (on a cluster, on another
        # connection of redis-py's pool) could land after it and bring the field back.
        self._leaving = True
        self._advanced.set()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=LEAVE_WAIT)
        with contextlib.suppress(*_ERRORS):
            await bounded(self._command("HDEL", self._key, self._field), LEAVE_WAIT)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # The beat as a timer that sets the event, not a timeout that cancels the wait.
            beat = loop.call_later(self._heartbeat, self._advanced.set)
            await self._advanced.wait()
            beat.cancel()
            self._advanced.clear()
            if self._leaving:
                return
            try:
                await self._acknowledge()
            except _ERRORS as e:
                self._on_error()
                log.debug("acknowledgement failed: %s", e)

    async def _acknowledge(self) -> None:
        alive_until = now_ms() + round(3 * self._heartbeat * 1000)
        await self._command("HSET", self._key, self._field, ack_value(alive_until, self._applied))


class Looks:
    """The looks at ``#acks`` (``HGETALL``): one at a time, its answer shared by every write
    waiting meanwhile — without it, a burst of writes, or an instance slow to acknowledge,
    multiplied them."""

    def __init__(self, run: Callable[..., Awaitable[Any]], key: str) -> None:
        self._command = run
        self._key = key
        self._lock = asyncio.Lock()
        self._last: tuple[int, dict[Any, Any]] | None = None

    async def look(self) -> dict[Any, Any]:
        """The fields as a look begun after this call found them (not an older look's: a
        field it shows past its life may have been refreshed since, and is removed on its
        word)."""
        asked = time.monotonic_ns()
        async with self._lock:
            if self._last is not None and self._last[0] >= asked:
                return self._last[1]
            began = time.monotonic_ns()
            acks = as_dict(await self._command("HGETALL", self._key))
            self._last = (began, acks)
            return acks

    async def wait(self, origin: int, part: int, seq: int, within: float) -> bool:
        """Whether every other live instance acknowledged ``seq`` of ``part`` within
        ``within`` seconds; fields past their life are removed."""
        mine = (str(origin), str(origin).encode())
        # The bound kept by hand, each look bounded by `bounded`.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        looks = 0
        while True:
            if looks >= QUICK_LOOKS:
                await asyncio.sleep(min(POLL, max(0.0, deadline - loop.time())))
            left = deadline - loop.time()
            if left <= 0:
                return False
            looks += 1
            looked, acks = await bounded(self.look(), left)
            if not looked or acks is None:
                return False
            now = now_ms()
            done, gone = True, []
            for field, value in acks.items():
                if field in mine:
                    continue
                ack = parse_ack(value, part)
                if ack is not None and ack[0] < now:
                    gone.append(field)
                elif ack is None or ack[1] < seq:
                    done = False
            if gone:
                # Instances that stopped saying they are alive: no longer waited for.
                with contextlib.suppress(*_ERRORS):
                    await self._command("HDEL", self._key, *gone)
            if done:
                return True
