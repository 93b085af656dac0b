"""The bytes and names of protocol v1, checked against the examples of docs/protocol.md (the
same examples the Rust crates check), and the decoder against hostile input."""

from __future__ import annotations

import random
import re

import pytest

from strata_cache import envelope
from strata_cache.acks import ack_value, parse_ack
from strata_cache.envelope import DecodeError, Times
from strata_cache.follower import Invalidation
from strata_cache.layout import Layout, check_namespace

from .conftest import REPO

DOC = (REPO / "docs" / "protocol.md").read_text()


def example(name: str) -> str:
    """The text between ``<!-- checked: name -->`` and ``<!-- end -->``, fences removed."""
    m = re.search(rf"<!-- checked: {name} -->\n(.*?)<!-- end -->", DOC, re.S)
    assert m, f"no example {name!r} in docs/protocol.md"
    return "\n".join(line for line in m.group(1).splitlines() if not line.startswith("```"))


def hex_lines(text: str) -> list[bytes]:
    return [bytes.fromhex(line) for line in text.splitlines() if line.strip()]


def test_the_envelope_is_the_document_s_byte_for_byte() -> None:
    created = 1_700_000_000_000
    times = Times(created, created + 60_000, created + 120_000, created + 300_000)
    ours = envelope.encode(
        {"id": 42, "name": "teapot"},
        negative=False,
        times=times,
        stamp=0x0123456789ABCDEF,
        load_ms=12,
        tags=("product:42",),
        codec=envelope.JSON,
    )
    assert ours == b"".join(hex_lines(example("envelope")))
    back = envelope.decode(ours)
    assert (back.value, back.times, back.tags, back.load_ms) == (
        {"id": 42, "name": "teapot"},
        times,
        ("product:42",),
        12,
    )


def test_lease_records_are_the_document_s() -> None:
    plain, waited = hex_lines(example("lease"))
    assert envelope.lease_record(0x1122334455667788) == plain
    assert envelope.lease_holder(plain) == envelope.lease_holder(waited) == 0x1122334455667788
    assert envelope.lease_holder(plain + b"X") is None
    assert envelope.lease_waited(waited) and not envelope.lease_waited(plain)
    assert not envelope.lease_waited(plain + b"X")


def test_log_entries_are_the_document_s() -> None:
    key, tag, clear = example("invalidations").splitlines()
    assert Invalidation(0xDEADBEEF, "key", "product:42").wire().decode() == key
    assert Invalidation(0xDEADBEEF, "tag", "category:7").wire().decode() == tag
    assert Invalidation(0xDEADBEEF, "clear", None).wire().decode() == clear
    assert Invalidation.parse(b'{"origin":"00000000deadbeef","op":"clear"}') == Invalidation(
        0xDEADBEEF, "clear", None
    )
    for foreign in [
        b"",
        b"[]",
        b'{"origin":"x","op":"key","arg":"k"}',
        b'{"origin":"00000000deadbeef","op":"key","arg":"k","extra":1}',
        b'{"origin":"00000000deadbeef","op":"drop","arg":"k"}',
    ]:
        assert Invalidation.parse(foreign) is None, foreign


def test_keys_and_log_parts_are_the_document_s() -> None:
    rows = [r for r in example("keys").splitlines() if r.startswith("| ") and "`" in r]
    for column, layout in [(2, Layout("catalog")), (3, Layout("catalog", cluster=True))]:
        names = {
            ("data", "product:42"): layout.data("product:42"),
            ("tag", "category:7"): layout.tag("category:7"),
            ("lease", "product:42"): layout.lease("product:42"),
            ("lease", "x{y}"): layout.lease("x{y}"),
            ("log", ""): layout.log(0),
            ("log sequence", ""): layout.log_seq(0),
            ("log part 1 of 3", ""): layout.log(1, 3),
            ("log part 1 of 3, sequence", ""): layout.log_seq(1, 3),
            ("log parts", ""): layout.log_shards(),
            ("protocol version", ""): layout.protocol(),
            ("filled", ""): layout.filled(),
            ("acks", ""): layout.acks(),
        }
        checked = 0
        for row in rows:
            cells = [c.strip().strip("`") for c in row.strip("|").split("|")]
            if (cells[0], cells[1]) in names:
                assert names[(cells[0], cells[1])] == cells[column], (cells[0], column)
                checked += 1
        assert checked == len(names)
    parts = [Layout("catalog").part_of(k, 3) for k in ("product:42", "product:43", "product:47")]
    assert parts == [0, 1, 2]


def test_namespaces_cannot_name_each_other() -> None:
    for bad in ["", "a:b", "a#b", "a b", "x" * 129, "é"]:
        with pytest.raises(ValueError):
            check_namespace(bad)
    check_namespace("catalog-v2.eu_1")


def test_an_envelope_of_a_newer_format_or_unknown_codec_is_refused() -> None:
    good = bytearray(b"".join(hex_lines(example("envelope"))))
    for offset, byte in [(3, 2), (4, 9), (5, 0x80)]:
        bad = bytearray(good)
        bad[offset] = byte
        with pytest.raises(DecodeError):
            envelope.decode(bytes(bad))
    with pytest.raises(DecodeError):
        envelope.decode(bytes(good[:60]))  # truncated tag or payload


def test_msgpack_round_trips() -> None:
    times = Times(1, 2, 3, 4)
    data = envelope.encode(
        {"b": b"\x00\x01", "n": [1, 2]},
        negative=False,
        times=times,
        stamp=7,
        load_ms=0,
        tags=(),
        codec=envelope.MESSAGEPACK,
    )
    assert envelope.decode(data).value == {"b": b"\x00\x01", "n": [1, 2]}


def test_random_and_mutated_bytes_never_raise_anything_but_decode_error() -> None:
    rng = random.Random(42)
    good = b"".join(hex_lines(example("envelope")))
    for i in range(20_000):
        if i % 2:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(80)))
        else:
            m = bytearray(good)
            for _ in range(rng.randrange(1, 4)):
                m[rng.randrange(len(m))] = rng.randrange(256)
            data = bytes(m[: rng.randrange(len(m) + 1)])
        try:
            envelope.decode(data)
        except DecodeError:
            pass


def test_the_documented_acknowledgement_reads_as_documented() -> None:
    said = " ".join(DOC.split())
    assert (
        '`1700000003000:17,4` says "alive until 1,700,000,003,000; applied part 0 up to 17 '
        'and part 1 up to 4"' in said
    )
    assert ack_value(1_700_000_003_000, [17, 4]) == "1700000003000:17,4"
    assert parse_ack(b"1700000003000:17,4", 0) == (1_700_000_003_000, 17)
    assert parse_ack(b"1700000003000:17,4", 1) == (1_700_000_003_000, 4)
    assert parse_ack(b"1700000003000:17,4", 2) == (1_700_000_003_000, 0)
    assert parse_ack(b"1700000003000", 0) is None
    assert parse_ack(b"x:1", 0) is None
    assert parse_ack(b"-1:1", 0) is None and parse_ack(b"1: 2", 0) is None
