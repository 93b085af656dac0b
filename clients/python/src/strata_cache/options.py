"""How one entry is cached: the same options, and the same times in the envelope, as the Rust
crate's ``EntryOptions``."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Literal

from .envelope import Times


def ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


@dataclass(frozen=True)
class EntryOptions:
    """The life of an entry, from its creation (durations in seconds)::

        created     fresh_until          expires               stale_until
           |── fresh ──|── stale-while-revalidate ──|── fail-safe only ──|
                      (soft_ttl)               (ttl)          (ttl + fail_safe)

    - ``ttl``: hard expiry; ``jitter`` adds up to ``jitter × ttl`` at random, so entries
      written together do not expire together;
    - ``soft_ttl``: after it the entry is served at once while one background load refreshes it;
    - ``fail_safe``: expired entries are kept this much longer, served when the loader fails or
      times out (then the loader is retried at most once per ``fail_safe_throttle``);
    - ``l1_ttl``: how long the in-process copy lives before Redis is asked again;
    - ``hard_timeout``: give up on the loader after this long;
    - ``negative_ttl``: how long "not found" (a loader returning ``None``) is cached;
    - ``tags``: for :meth:`HybridCache.invalidate_tag`;
    - ``codec``: how the value is written in Redis (every instance reads either).

    Use :meth:`evolve` for a modified copy: ``options.evolve(ttl=30)``.
    """

    ttl: float = 300.0
    jitter: float = 0.0
    soft_ttl: float | None = None
    fail_safe: float | None = None
    fail_safe_throttle: float = 30.0
    l1_ttl: float | None = None
    hard_timeout: float | None = None
    negative_ttl: float = 30.0
    tags: tuple[str, ...] = field(default_factory=tuple)
    codec: Literal["json", "msgpack"] | None = None

    def evolve(self, **changes: object) -> EntryOptions:
        """A copy with ``changes`` applied."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def times(self, now: int, negative: bool) -> Times:
        """The times of an entry created at ``now`` (ms), jitter drawn here."""
        if negative:
            expires = now + ms(self.negative_ttl)
            return Times(now, expires, expires, expires)
        ttl = ms(self.ttl)
        if self.jitter > 0:
            ttl += int(ttl * min(self.jitter, 1.0) * random.random())
        expires = now + ttl
        soft = ms(self.soft_ttl) if self.soft_ttl is not None else None
        fresh_until = now + soft if soft is not None and soft < ttl else expires
        stale_until = expires + (ms(self.fail_safe) if self.fail_safe is not None else 0)
        return Times(now, fresh_until, expires, stale_until)

    def l1_until(self, now: int, times: Times) -> int:
        """Until when an L1 copy made at ``now`` may serve without asking Redis."""
        if self.l1_ttl is None:
            return times.expires
        return min(now + ms(self.l1_ttl), times.expires)
