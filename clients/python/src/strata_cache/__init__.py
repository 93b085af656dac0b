"""Strata's hybrid cache for Python services.

An in-process L1 in front of Redis, sharing a namespace — entries, load leases, fenced fills,
tags and the invalidation log — with Strata instances in Rust and Node (protocol v1,
``docs/protocol.md`` in the Strata repository)::

    from strata_cache import EntryOptions, HybridCache

    cache = await HybridCache.connect("redis://localhost:6379", "catalog",
                                      defaults=EntryOptions(ttl=300, soft_ttl=60))
    product = await cache.get_or_load("product:42", lambda: db.product(42))
    await cache.invalidate("product:42")       # every instance, any language, drops it
"""

from .cache import PROTOCOL_VERSION, HybridCache
from .errors import (
    ConfigError,
    KeyTooLongError,
    LoaderError,
    LoaderTimeoutError,
    NotFoundError,
    StrataError,
    UnavailableError,
    ValueTooLargeError,
)
from .options import EntryOptions
from .stats import Stats

__all__ = [
    "PROTOCOL_VERSION",
    "ConfigError",
    "EntryOptions",
    "HybridCache",
    "KeyTooLongError",
    "LoaderError",
    "LoaderTimeoutError",
    "NotFoundError",
    "Stats",
    "StrataError",
    "UnavailableError",
    "ValueTooLargeError",
]
