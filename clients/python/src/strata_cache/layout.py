"""Where a namespace's keys live, on one server and on a Redis Cluster (protocol v1,
``docs/protocol.md`` §1).

On a cluster a script may only touch keys of one slot: a value's refresh lease carries a hash
tag that puts it in the value's slot, and the namespace-wide keys that change together share
the slot of ``{<namespace>}``; data keys and tag indexes keep their one-server names.
"""

from __future__ import annotations

import re
from functools import cache

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


SLOTS = 16384


def _crc16_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1) & 0xFFFF
        table.append(crc)
    return table


_CRC16 = _crc16_table()


def slot_of(key: str) -> int:
    """The slot Redis hashes ``key`` to: CRC16 (XMODEM) of its hash tag — what lies between the
    first ``{`` and the next ``}``, if not empty — or of the whole key, modulo 16,384."""
    raw = key.encode()
    start = raw.find(b"{")
    if start >= 0:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    crc = 0
    for byte in raw:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[((crc >> 8) ^ byte) & 0xFF]
    return crc % SLOTS


@cache
def _tags() -> dict[int, str]:
    """For each slot, the first of ``0``, ``1``, …, ``z``, ``01``, … (``n`` = 0, 1, … in base 36,
    least significant digit first) that hashes to it — as the Rust crate picks them."""
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    tags: dict[int, str] = {}
    n = 0
    while len(tags) < SLOTS:
        m, tag = n, ""
        while True:
            tag += digits[m % 36]
            m //= 36
            if m == 0:
                break
        tags.setdefault(slot_of(tag), tag)
        n += 1
    return tags


def tag_for(slot: int) -> str:
    return _tags()[slot]


class Layout:
    """The names of one namespace's keys, on one server or (``cluster``) on a Redis Cluster."""

    def __init__(self, namespace: str, cluster: bool = False) -> None:
        check_namespace(namespace)
        self.namespace = namespace
        self.cluster = cluster

    def _wide(self, name: str) -> str:
        return f"{name}{{{self.namespace}}}" if self.cluster else name

    def data(self, key: str) -> str:
        return f"{self.namespace}:{key}"

    def tag(self, tag: str) -> str:
        return f"{self.namespace}#tag:{tag}"

    def lease(self, key: str) -> str:
        if not self.cluster:
            return f"{self.namespace}#lease:{key}"
        if "{" in key or "}" in key:
            return f"{self.namespace}#lease:{{{tag_for(slot_of(self.data(key)))}}}{key}"
        return f"{self.namespace}#lease:{{{self.namespace}:{key}}}"

    def log(self, part: int, parts: int = 1) -> str:
        if part == 0:
            return self._wide(f"{self.namespace}#log")
        return self._part(f"{self.namespace}#log.{part}", part, parts)

    def log_seq(self, part: int, parts: int = 1) -> str:
        if part == 0:
            return self._wide(f"{self.namespace}#log:seq")
        return self._part(f"{self.namespace}#log.{part}:seq", part, parts)

    def _part(self, name: str, part: int, parts: int) -> str:
        if not self.cluster:
            return name
        home = slot_of(f"{{{self.namespace}}}")
        return f"{name}{{{tag_for((home + part * SLOTS // parts) % SLOTS)}}}"

    def log_shards(self) -> str:
        return self._wide(f"{self.namespace}#log:shards")

    def protocol(self) -> str:
        return self._wide(f"{self.namespace}#protocol")

    def filled(self) -> str:
        return self._wide(f"{self.namespace}#filled")

    def acks(self) -> str:
        return self._wide(f"{self.namespace}#acks")

    def part_of(self, key_or_tag: str, parts: int) -> int:
        return fnv1a64(key_or_tag) % parts
