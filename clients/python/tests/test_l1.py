"""L1's eviction (S3-FIFO): bounded, a read key outlives a flood of keys read once, a key evicted
unread and read again comes back to stay, and W1's stream keeps more than LRU would."""

from __future__ import annotations

import random

from strata_cache.envelope import Times
from strata_cache.l1 import L1, L1Entry

ENTRY = L1Entry(1, False, Times(0, 0, 0, 0), 0, ("t",), None)


def test_l1_holds_at_most_its_capacity_and_drops_what_it_is_told() -> None:
    l1 = L1(100)
    for i in range(1_000):
        l1.insert(f"k{i}", ENTRY)
    assert len(l1) == 100
    l1.insert("x", ENTRY)
    l1.remove("x")
    assert l1.get("x") is None
    l1.remove_tag("t")
    assert len(l1) == 0
    assert len(L1(0)) == 0 and L1(0).get("k") is None


def test_a_key_read_outlives_a_flood_of_keys_read_once() -> None:
    l1 = L1(100)
    l1.insert("hot", ENTRY)
    assert l1.get("hot") is ENTRY
    for i in range(10_000):  # a scan: each key once, a hundred times the room
        l1.insert(f"scan{i}", ENTRY)
    assert l1.get("hot") is ENTRY  # least-recently-used would have dropped it 9,900 keys ago


def test_a_key_evicted_unread_and_wanted_again_comes_back_to_stay() -> None:
    l1 = L1(100)
    l1.insert("k", ENTRY)
    for i in range(100):  # full: k, first in and unread, leaves — remembered by the ghost
        l1.insert(f"a{i}", ENTRY)
    assert l1.get("k") is None
    l1.insert("k", ENTRY)  # back from the ghost: into the main queue
    for i in range(50):
        l1.insert(f"b{i}", ENTRY)
    assert l1.get("k") is ENTRY


def test_a_skewed_stream_keeps_more_than_least_recently_used_would() -> None:
    rng = random.Random(5)
    keys = [min(int(rng.paretovariate(0.4)), 100_000) for _ in range(200_000)]
    l1, hits = L1(1_000), 0
    for k in keys:
        if l1.get(str(k)) is None:
            l1.insert(str(k), ENTRY)
        else:
            hits += 1
    lru: dict[str, None] = {}
    lru_hits = 0
    for k in keys:
        if str(k) in lru:
            lru_hits += 1
            del lru[str(k)]
        lru[str(k)] = None
        if len(lru) > 1_000:
            del lru[next(iter(lru))]
    assert hits > lru_hits, (hits, lru_hits)


def test_under_any_mix_of_inserts_reads_and_removals_it_stays_bounded_and_truthful() -> None:
    rng = random.Random(11)
    l1 = L1(50)
    model: dict[str, L1Entry] = {}  # inserted and not removed since
    for i in range(50_000):
        key = f"k{int(rng.random() ** 2 * 200)}"
        op = rng.random()
        if op < 0.4:
            entry = L1Entry(i, False, Times(0, 0, 0, 0), 0, ("t",), None)
            l1.insert(key, entry)
            model[key] = entry
        elif op < 0.9:
            got = l1.get(key)
            assert got is None or got is model.get(key), key
        elif op < 0.99:
            l1.remove(key)
            model.pop(key, None)
        else:
            l1.remove_tag("t")
            model.clear()
        assert len(l1) <= 50
