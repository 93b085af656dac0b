"""Where a namespace's keys live on one server (protocol v1, ``docs/protocol.md`` §1)."""

from __future__ import annotations

import re

_NAMESPACE = re.compile(r"[A-Za-z0-9_.\-]{1,128}")

MAX_LOG_SHARDS = 64


def check_namespace(namespace: str) -> None:
    """``ValueError`` unless ``namespace`` is 1–128 bytes of ``[A-Za-z0-9_.-]``: neither ``:``
    nor ``#``, so no namespace can name another's keys."""
    if not _NAMESPACE.fullmatch(namespace):
        raise ValueError(
            f"namespace {namespace!r}: 1 to 128 characters of A-Z a-z 0-9 _ . - expected"
        )


def fnv1a64(text: str) -> int:
    """FNV-1a, 64-bit, over the UTF-8 bytes: which part of a split log a key's or tag's
    invalidations go to."""
    h = 0xCBF29CE484222325
    for byte in text.encode():
        h ^= byte
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


class Layout:
    """The names of one namespace's keys."""

    def __init__(self, namespace: str) -> None:
        check_namespace(namespace)
        self.namespace = namespace

    def data(self, key: str) -> str:
        return f"{self.namespace}:{key}"

    def tag(self, tag: str) -> str:
        return f"{self.namespace}#tag:{tag}"

    def lease(self, key: str) -> str:
        return f"{self.namespace}#lease:{key}"

    def log(self, part: int) -> str:
        return f"{self.namespace}#log" if part == 0 else f"{self.namespace}#log.{part}"

    def log_seq(self, part: int) -> str:
        return f"{self.log(part)}:seq"

    def log_shards(self) -> str:
        return f"{self.namespace}#log:shards"

    def protocol(self) -> str:
        return f"{self.namespace}#protocol"

    def filled(self) -> str:
        return f"{self.namespace}#filled"

    def acks(self) -> str:
        return f"{self.namespace}#acks"

    def part_of(self, key_or_tag: str, parts: int) -> int:
        return fnv1a64(key_or_tag) % parts
