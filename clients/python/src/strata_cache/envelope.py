"""The bytes Strata keeps in Redis (protocol v1, ``docs/protocol.md`` §2–3).

A value's key holds an *envelope* — a 52-byte header, its tags, then the payload in a codec —
or, while an instance loads the key, that instance's *lease record*. Decoding checks every
field: anything unexpected (a newer format version, an unknown codec or flag, foreign bytes)
raises :class:`DecodeError`, which the cache counts and treats as a miss, never a misread.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import msgpack

MAGIC = b"\xffST"
LEASE_MAGIC = b"\xffSL"
VERSION = 1
WAITED = b"W"

JSON = 1
MESSAGEPACK = 2
CODECS = {"json": JSON, "msgpack": MESSAGEPACK}

NEGATIVE = 0x01
MAX_TAGS = 64

_HEADER = struct.Struct("<3sBBBQQQQQIH")
STAMP_OFFSET = 38


class DecodeError(ValueError):
    """Bytes that are not an entry this implementation can read."""


@dataclass(frozen=True)
class Times:
    """An entry's life, in milliseconds since the Unix epoch."""

    created: int
    fresh_until: int
    expires: int
    stale_until: int


@dataclass(frozen=True)
class Envelope:
    """A decoded entry: ``value`` is ``None`` for a negative one ("known not to exist")."""

    value: Any
    negative: bool
    times: Times
    stamp: int
    load_ms: int
    tags: tuple[str, ...]
    codec: int


def encode_value(value: Any, codec: int) -> bytes:
    """The payload of ``value`` in ``codec``."""
    if codec == JSON:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=plain).encode()
    if codec == MESSAGEPACK:
        packed: bytes = msgpack.packb(value, default=plain, use_bin_type=True)
        return packed
    raise ValueError(f"unknown codec id {codec}")


def decode_value(payload: bytes, codec: int) -> Any:
    """The value in ``payload``; :class:`DecodeError` if it does not parse."""
    try:
        if codec == JSON:
            return json.loads(payload)
        if codec == MESSAGEPACK:
            return msgpack.unpackb(payload, raw=False)
    except (ValueError, msgpack.UnpackException) as e:
        raise DecodeError(f"payload: {e}") from e
    raise DecodeError(f"unknown codec id {codec}")


def plain(value: Any) -> Any:
    """What JSON and MessagePack cannot write themselves: dataclasses and pydantic models
    become their fields, as Rust's serde writes a struct."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    fields = getattr(value, "__dataclass_fields__", None)
    if fields is not None:
        return {name: getattr(value, name) for name in fields}
    raise TypeError(f"{type(value).__name__} cannot be cached: not JSON/MessagePack data")


def encode(
    value: Any,
    *,
    negative: bool,
    times: Times,
    stamp: int,
    load_ms: int,
    tags: tuple[str, ...],
    codec: int,
) -> bytes:
    """An envelope; ``ValueError`` for more than 64 tags or a tag over 65,535 bytes."""
    if len(tags) > MAX_TAGS:
        raise ValueError(f"{len(tags)} tags on one entry, over the limit of {MAX_TAGS}")
    out = bytearray(
        _HEADER.pack(
            MAGIC,
            VERSION,
            codec,
            NEGATIVE if negative else 0,
            times.created,
            times.fresh_until,
            times.expires,
            times.stale_until,
            stamp,
            min(load_ms, 0xFFFFFFFF),
            len(tags),
        )
    )
    for tag in tags:
        raw = tag.encode()
        if len(raw) > 0xFFFF:
            raise ValueError("a tag longer than 65,535 bytes")
        out += struct.pack("<H", len(raw)) + raw
    if not negative:
        out += encode_value(value, codec)
    return bytes(out)


def is_envelope(data: bytes) -> bool:
    """Whether ``data`` starts like an envelope (not a raw value or foreign bytes)."""
    return data.startswith(MAGIC)


def decode(data: bytes) -> Envelope:
    """The entry in ``data``; :class:`DecodeError` for anything else."""
    if len(data) < _HEADER.size:
        raise DecodeError("shorter than an envelope's header")
    (magic, version, codec, flags, created, fresh, expires, stale, stamp, load_ms, count) = (
        _HEADER.unpack_from(data)
    )
    if magic != MAGIC:
        raise DecodeError("not a Strata envelope")
    if version != VERSION:
        raise DecodeError(f"envelope format version {version} (this client reads {VERSION})")
    if codec not in (JSON, MESSAGEPACK):
        raise DecodeError(f"unknown codec id {codec}")
    if flags & ~NEGATIVE:
        raise DecodeError(f"unknown flags {flags:#04x}")
    if not created <= fresh <= expires <= stale:
        raise DecodeError("times out of order")
    if count > MAX_TAGS:
        raise DecodeError(f"{count} tags, over the limit of {MAX_TAGS}")
    at = _HEADER.size
    tags = []
    for _ in range(count):
        if at + 2 > len(data):
            raise DecodeError("truncated tag")
        (n,) = struct.unpack_from("<H", data, at)
        raw = data[at + 2 : at + 2 + n]
        if len(raw) != n:
            raise DecodeError("truncated tag")
        try:
            tags.append(raw.decode())
        except UnicodeDecodeError as e:
            raise DecodeError("a tag is not UTF-8") from e
        at += 2 + n
    negative = bool(flags & NEGATIVE)
    payload = data[at:]
    if negative and payload:
        raise DecodeError("a negative entry with a payload")
    return Envelope(
        value=None if negative else decode_value(payload, codec),
        negative=negative,
        times=Times(created, fresh, expires, stale),
        stamp=stamp,
        load_ms=load_ms,
        tags=tuple(tags),
        codec=codec,
    )


def stamp_of(data: bytes) -> bytes:
    """The 8 stamp bytes of an envelope, as a refresh's fence names them."""
    return data[STAMP_OFFSET : STAMP_OFFSET + 8]


def lease_record(token: int) -> bytes:
    """The record a loader leaves in the value's key: magic, version, its 8-byte token."""
    return LEASE_MAGIC + bytes([VERSION]) + token.to_bytes(8, "little")


def lease_holder(data: bytes) -> int | None:
    """The token of a lease record (waited on or not); ``None`` for anything else."""
    if len(data) == 13 and data[12:] == WAITED:
        data = data[:12]
    if len(data) != 12 or not data.startswith(LEASE_MAGIC) or data[3] != VERSION:
        return None
    return int.from_bytes(data[4:], "little")


def lease_waited(data: bytes) -> bool:
    """Whether ``data`` is a lease record another reader marked waited on: its load's end is
    then announced."""
    return len(data) == 13 and lease_holder(data) is not None
