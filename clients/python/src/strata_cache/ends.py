"""Who waits on another load of which key.

The flights here that found a key's lease held are woken together when the end of that load is
announced (``#filled``) or when a change applied here deleted the lease record they wait on —
every waiter on the key, not only the last to register. (Two flights of one instance wait on
one key when a write here overtook the first; the one not woken slept until its 50 ms poll.)
"""

from __future__ import annotations

import asyncio


class LoadEnds:
    """The waiting flights' events, by key."""

    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Event]] = {}

    def join(self, key: str) -> asyncio.Event:
        """An event set at each announcement on ``key`` (cleared by its flight before each
        look at Redis, so that an announcement after the look is not missed)."""
        end = asyncio.Event()
        self._waiting.setdefault(key, set()).add(end)
        return end

    def leave(self, key: str, end: asyncio.Event) -> None:
        """The flight is done waiting on ``key``."""
        waiters = self._waiting.get(key)
        if waiters is not None:
            waiters.discard(end)
            if not waiters:
                del self._waiting[key]

    def announce(self, key: str) -> None:
        """The load of ``key`` ended, or its lease record is gone: wake every waiter on it."""
        for end in self._waiting.get(key, ()):
            end.set()

    def announce_all(self) -> None:
        """Every key's waiters: a change may have ended every load (a tag drop, a clear)."""
        for waiters in self._waiting.values():
            for end in waiters:
                end.set()
