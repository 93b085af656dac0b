"""What can go wrong, as the Rust crate's ``strata::Error`` names it."""

from __future__ import annotations


class StrataError(Exception):
    """Every error this package raises."""


class ConfigError(StrataError):
    """Bad settings: a namespace, a log split another instance disagrees with, …"""


class KeyTooLongError(StrataError):
    """A key over the cache's limit; nothing was read or written."""


class ValueTooLargeError(StrataError):
    """An encoded value over the cache's limit; nothing was written."""


class LoaderError(StrataError):
    """The loader failed and no fail-safe value was at hand; ``__cause__`` is its error."""


class LoaderTimeoutError(LoaderError):
    """The loader ran past its hard timeout and no fail-safe value was at hand."""


class NotFoundError(StrataError):
    """:meth:`HybridCache.get_or_load` met a cached "not found"."""


class UnavailableError(StrataError):
    """Redis could not be reached for a write: it was not done."""
