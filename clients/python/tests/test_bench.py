"""``python -m strata_cache.bench``: W1's stream for the Python client, against the
hand-written cache-aside, on a real ``redis-server`` (a short stream: the figures are the
bench's, not the test's)."""

from __future__ import annotations

import array
import json
import random
from pathlib import Path

import pytest

from strata_cache import bench

from .conftest import Server


def stream(path: Path, warmup: int, measured: int) -> None:
    """A skewed stream in the file format `strata bench w1 --stream-out` writes."""
    rng = random.Random(7)
    ops = array.array("I", [warmup, measured])
    for _ in range(warmup + measured):
        key = min(int(rng.paretovariate(1.0)) - 1, 499)
        ops.append(key | (bench.WRITE if rng.random() < 0.02 else 0))
    path.write_bytes(ops.tobytes())


async def test_the_bench_runs_both_caches_on_one_stream_and_counts_what_w1_asks(
    server: Server, tmp_path: Path
) -> None:
    path = tmp_path / "w1.ops"
    stream(path, 300, 3_000)
    strata, naive = await bench.run(server.url, str(path), "both", quiet=True)
    for r in (strata, naive):
        assert r["ops"] == r["reads"] + r["writes"] == 3_000, r
        assert r["errors"] == 0 and r["loader_calls"] > 0, r
        assert r["cpu"]["bench_s"] > 0 and r["redis_commands_per_op"]["total"] > 0, r
        # Every load's wait was timed, and none ended before its millisecond.
        assert r["load_sleep_us"]["count"] == r["loader_calls"], r
        assert r["load_sleep_us"]["min"] >= 1000, r["load_sleep_us"]
    assert strata["stale_reads"] == 0, strata
    # Skewed reads over 500 keys: L1 answers most of Strata's; naive asks Redis for each.
    assert strata["l1_hits"] > strata["l2_hits"] and naive["l1_hits"] == 0
    assert strata["redis_commands_per_op"]["total"] < naive["redis_commands_per_op"]["total"]
    assert set(strata["vs_naive"]) == {"ops", "read_p99", "cpu", "redis_cpu", "redis_commands"}
    # A server given by URL is only emptied between the runs: the same process measured both.
    assert strata["l2_server"]["run_id"] == naive["l2_server"]["run_id"]
    json.dumps(strata)  # the --json line


async def test_without_a_url_each_cache_runs_on_a_server_started_for_it(tmp_path: Path) -> None:
    path = tmp_path / "w1.ops"
    stream(path, 100, 500)
    strata, naive = await bench.run(None, str(path), "both", quiet=True)
    ids = [r["l2_server"]["run_id"] for r in (strata, naive)]
    assert all(len(i) == 40 for i in ids) and ids[0] != ids[1], ids
    assert strata["errors"] == naive["errors"] == 0


def test_a_file_that_is_not_a_stream_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.ops"
    path.write_bytes(array.array("I", [5, 5, 1]).tobytes())
    with pytest.raises(ValueError, match="not a stream"):
        bench.read_stream(str(path))
