"""L1: the in-process copies, bounded, and the fence that keeps an invalidated value out.

A fill of L1 notes the key's fence before it reads Redis and goes in only if no invalidation
of the key was applied since (checked again after the insert, as the Rust crate does): a
load that raced an invalidation never puts the old value back.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, replace
from typing import Any

from .envelope import Times

# Tag drops remembered: far more than happen during one load.
_DROPS_KEPT = 1024
_STRIPES = 4096


@dataclass(frozen=True)
class L1Entry:
    """An in-process copy; ``negative`` for "known not to exist"."""

    value: Any
    negative: bool
    times: Times
    l1_until: int
    tags: tuple[str, ...]
    stamp: int | None
    #: The value is data read from Redis, not yet through the caller's ``decode``.
    from_l2: bool = False
    fail_safe: bool = False

    def alive(self, now: int) -> bool:
        """Whether it can still serve: fresh or stale until ``l1_until``, as a fail-safe
        fallback until ``stale_until``."""
        return now < max(self.l1_until, self.times.stale_until)

    def as_fail_safe(self, until: int) -> L1Entry:
        return replace(self, fail_safe=True, l1_until=until)

    def decoded(self, value: Any) -> L1Entry:
        return replace(self, value=value, from_l2=False)


class Fence:
    """Counters bumped by invalidations: a key's stripe, and one for the whole namespace
    (every tag drop and clear), with what each of those dropped."""

    def __init__(self) -> None:
        self._stripes = [0] * _STRIPES
        self._all = 0
        # (the namespace counter after the drop, the tag; None: everything), newest last.
        self._drops: deque[tuple[int, str | None]] = deque(maxlen=_DROPS_KEPT)

    def read(self, key: str) -> tuple[int, int]:
        return self._stripes[hash(key) % _STRIPES], self._all

    def bump(self, key: str) -> None:
        self._stripes[hash(key) % _STRIPES] += 1

    def bump_all(self, tag: str | None = None) -> None:
        """A drop of ``tag``'s entries, or (``None``) of everything."""
        self._all += 1
        self._drops.append((self._all, tag))

    def overtakes(self, seen: tuple[int, int], tags: tuple[str, ...]) -> bool:
        """Whether a tag drop or clear since ``seen`` concerns a value tagged ``tags``: a load
        of it must not fill Redis (its key was in no index when the tag's were deleted). A
        record too short to tell says yes."""
        since = seen[1]
        if self._all == since:
            return False
        if not self._drops or self._drops[0][0] > since + 1:
            return True
        return any(tag is None or tag in tags for n, tag in self._drops if n > since)


class L1:
    """At most ``capacity`` entries, least recently used out first (0: no L1)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, L1Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> L1Entry | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def insert(self, key: str, entry: L1Entry) -> None:
        if self.capacity <= 0:
            return
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def remove(self, key: str) -> None:
        self._entries.pop(key, None)

    def remove_tag(self, tag: str) -> None:
        for key in [k for k, e in self._entries.items() if tag in e.tags]:
            del self._entries[key]

    def clear(self) -> None:
        self._entries.clear()
