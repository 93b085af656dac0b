"""W1 of the reference workloads for the Python client: ``HybridCache`` against the hand-written
cache-aside it replaces (redis-py: ``GET`` → miss → load → ``SET … EX``; a write ``DEL``\\s), on
the operation stream the ``strata`` CLI writes, so that both — and the Rust bench — ask the same
keys in the same order::

    strata bench w1 --ops 100000 --stream-out /tmp/w1.ops
    python -m strata_cache.bench /tmp/w1.ops --cache both [--redis URL] [--json]

W1's record (about 1 KB of JSON), 1 ms loads, 64 operations in flight, L1 of 10,000 entries for
60 s, L2 for an hour. Without ``--redis`` each cache runs on a ``redis-server`` of its own,
started fresh for it on a free loopback port (as the workloads ask: one that held the other
cache's run would answer the second for less); ``--redis`` takes the cache's URLs (a cluster's
``redis+cluster://…``: the naive cache then goes through redis-py's cluster client, and the
servers' costs are summed over every node), and both run on it, each on a flushed namespace.
Each cache runs with a fresh source of truth; the figures are the
workloads' (operations/s, read and write latency, hit ratios, loader calls, stale reads) and
their cost: this process's CPU and ``redis-server``'s over the measured phase, and Redis
commands per operation — with ``--cache both`` as ratios to the naive cache's.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio.cluster import RedisCluster

from . import connection
from .cache import HybridCache
from .options import EntryOptions

#: W1's parameters (``WORKLOADS.md``); the stream file carries the operations and their count.
N = 100_000
VALUE_BYTES = 1024
LOAD_S = 0.001
CONCURRENCY = 64
L1_ENTRIES = 10_000
L1_TTL_S = 60
L2_TTL_S = 3600
WRITE = 1 << 31

STRATA_NS = "bench-strata-py"
NAIVE_NS = "bench-naive-py"


def read_stream(path: str) -> tuple[array.array[int], array.array[int]]:
    """The warm-up and measured operations of a ``strata bench w1 --stream-out`` file."""
    words = array.array("I")
    with open(path, "rb") as f:
        words.frombytes(f.read())
    if sys.byteorder != "little":
        words.byteswap()
    if len(words) < 2 or len(words) != 2 + words[0] + words[1]:
        raise ValueError(f"{path}: not a stream written by `strata bench w1 --stream-out`")
    warmup = words[2 : 2 + words[0]]
    return warmup, words[2 + words[0] :]


class Source:
    """The source of truth: a version per key; a load sleeps ``LOAD_S`` and returns the record,
    whose JSON is about ``VALUE_BYTES`` (as the Rust bench's)."""

    def __init__(self) -> None:
        self.versions = [0] * N
        self.loads = 0
        #: How long each load's wait took, in µs (``load_sleep_us``).
        self.sleeps: list[float] = []
        self._body: dict[int, str] = {}

    def record(self, key: int, version: int) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": key,
            "version": version,
            "name": f"product {key}",
            "price_cents": 100 + key % 10_000,
            "tags": [f"category:{key % 100}"],
            "body": "",
        }
        body = self._body.get(key)
        if body is None:
            bare = len(_json({**record, "version": 0}))
            body = self._body[key] = "x" * max(0, VALUE_BYTES - bare)
        record["body"] = body
        return record

    async def load(self, key: int) -> dict[str, Any]:
        self.loads += 1
        # At least ``LOAD_S`` of real time, whatever the event loop's timer rounds to. (Not a
        # timer thread, as the Rust and Node benches use: a thread waits for the GIL up to the
        # switch interval, 5 ms, while the loop runs — its loads took longer, not shorter.)
        start = time.perf_counter()
        end = start + LOAD_S
        while (left := end - time.perf_counter()) > 0:  # noqa: ASYNC110 (a floor, not a poll)
            await asyncio.sleep(left)
        self.sleeps.append((time.perf_counter() - start) * 1e6)
        return self.record(key, self.versions[key])


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


@dataclass
class Tally:
    """What a pass counted."""

    read_us: list[float] = field(default_factory=list)
    write_us: list[float] = field(default_factory=list)
    stale: int = 0
    errors: int = 0


class Subject:
    """A cache under test: a read returns the version it got; a write bumps the source, then
    invalidates the key through the cache."""

    name = ""

    async def read(self, key: int) -> int:
        raise NotImplementedError

    async def invalidate(self, key: int) -> None:
        raise NotImplementedError

    def counts(self) -> dict[str, int]:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class Strata(Subject):
    name = "strata"

    def __init__(self, cache: HybridCache, source: Source) -> None:
        self.cache, self.source = cache, source

    @classmethod
    async def start(cls, url: str, source: Source) -> Strata:
        cache = await HybridCache.connect(
            url,
            STRATA_NS,
            l1_capacity=L1_ENTRIES,
            defaults=EntryOptions(ttl=L2_TTL_S, l1_ttl=L1_TTL_S),
        )
        await cache.clear()
        return cls(cache, source)

    async def read(self, key: int) -> int:
        record: dict[str, Any] = await self.cache.get_or_load(
            f"product:{key}", lambda: self.source.load(key)
        )
        return int(record["version"])

    async def invalidate(self, key: int) -> None:
        await self.cache.invalidate(f"product:{key}")

    def counts(self) -> dict[str, int]:
        s = self.cache.stats()
        return {"l1_hits": s.l1_hits, "l2_hits": s.l2_hits, "waited": s.waited}

    async def close(self) -> None:
        await self.cache.close()


class Naive(Subject):
    """The hand-written cache-aside: no L1, no single-flight, values as plain JSON."""

    name = "naive"

    def __init__(self, redis: connection.Client, source: Source) -> None:
        self.redis, self.source, self.hits = redis, source, 0

    @classmethod
    async def start(cls, url: str, source: Source) -> Naive:
        # One server, Sentinel's master or a cluster (redis-py's cluster client), as the cache.
        redis = connection.connect(url)
        keys = [k async for k in redis.scan_iter(match=f"{NAIVE_NS}:*", count=1000)]
        for i in range(0, len(keys), 500):
            await redis.unlink(*keys[i : i + 500])
        return cls(redis, source)

    async def read(self, key: int) -> int:
        name = f"{NAIVE_NS}:product:{key}"
        cached = await self.redis.get(name)
        if cached is not None:
            self.hits += 1
            return int(json.loads(cached)["version"])
        record = await self.source.load(key)
        await self.redis.set(name, _json(record), ex=L2_TTL_S)
        return int(record["version"])

    async def invalidate(self, key: int) -> None:
        await self.redis.delete(f"{NAIVE_NS}:product:{key}")

    def counts(self) -> dict[str, int]:
        return {"l1_hits": 0, "l2_hits": self.hits, "waited": 0}

    async def close(self) -> None:
        await self.redis.aclose()


async def run_pass(
    subject: Subject, source: Source, ops: array.array[int], progress: Callable[[int], None]
) -> Tally:
    """Runs ``ops`` in stream order with ``CONCURRENCY`` in flight; a read is stale when it
    returns a version older than the newest one whose invalidation had returned before it began."""
    tally = Tally()
    invalidated = [0] * N
    next_op: Iterator[int] = iter(range(len(ops)))
    clock = time.perf_counter

    async def worker() -> None:
        for i in next_op:
            word = ops[i]
            key = word & ~WRITE
            started = clock()
            try:
                if word & WRITE:
                    source.versions[key] += 1
                    version = source.versions[key]
                    await subject.invalidate(key)
                    invalidated[key] = max(invalidated[key], version)
                    tally.write_us.append((clock() - started) * 1e6)
                else:
                    floor = invalidated[key]
                    got = await subject.read(key)
                    tally.read_us.append((clock() - started) * 1e6)
                    tally.stale += got < floor
            except Exception:
                tally.errors += 1
            if i % 10_000 == 0:
                progress(i)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return tally


def percentiles(us: list[float]) -> dict[str, float]:
    if not us:
        return {"p50": 0, "p95": 0, "p99": 0, "max": 0, "count": 0}
    s = sorted(us)

    def at(q: float) -> float:
        return round(s[min(len(s) - 1, int(q * len(s)))])

    return {"p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "max": round(s[-1]), "count": len(s)}


async def run_id(redis: connection.Client) -> str | None:
    """The server process's ``run_id`` (new each time it starts); ``None`` on a cluster."""
    if isinstance(redis, RedisCluster):
        return None
    return str((await redis.info("server"))["run_id"])


async def server_cost(redis: connection.Client) -> tuple[float, dict[str, int]]:
    """The servers' CPU seconds so far and their command counts (a cluster's summed)."""
    cpu, calls = 0.0, dict[str, int]()
    for part in await _per_server(redis, "cpu"):
        cpu += float(part["used_cpu_user"]) + float(part["used_cpu_sys"])
    for part in await _per_server(redis, "commandstats"):
        for k, v in part.items():
            name = k.removeprefix("cmdstat_")
            calls[name] = calls.get(name, 0) + int(v["calls"])
    return cpu, calls


async def _per_server(redis: connection.Client, section: str) -> list[dict[str, Any]]:
    """``INFO section`` of each server: on a cluster, of every node (keyed by node)."""
    if isinstance(redis, RedisCluster):
        by_node = await redis.info(section, target_nodes=RedisCluster.ALL_NODES)
        return list(by_node.values())
    return [await redis.info(section)]


async def measure(
    make: Callable[[str, Source], Awaitable[Subject]],
    url: str,
    warmup: array.array[int],
    measured: array.array[int],
    quiet: bool,
) -> dict[str, Any]:
    source = Source()
    subject = await make(url, source)
    probe = connection.connect(url)
    total = len(warmup) + len(measured)

    def progress(base: int) -> Callable[[int], None]:
        def show(done: int) -> None:
            if not quiet:
                print(
                    f"\r{subject.name:>8} W1 {base + done:>9}/{total} ops", end="", file=sys.stderr
                )

        return show

    try:
        await run_pass(subject, source, warmup, progress(0))
        before, loads = subject.counts(), source.loads
        source.sleeps = []
        redis_cpu, calls = await server_cost(probe)
        cpu, started = time.process_time(), time.perf_counter()
        tally = await run_pass(subject, source, measured, progress(len(warmup)))
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        redis_after, calls_after = await server_cost(probe)
        after = subject.counts()
        server = await run_id(probe)
    finally:
        if not quiet:
            print(file=sys.stderr)
        await subject.close()
        await probe.aclose()
    ops = len(measured)
    reads = len(tally.read_us)
    hits = {k: after[k] - before[k] for k in after}
    by_command = {
        k: round((n - calls.get(k, 0)) / ops, 4)
        for k, n in sorted(calls_after.items())
        if n > calls.get(k, 0) and k not in ("info",)
    }
    redis_s = redis_after - redis_cpu
    return {
        "workload": "W1",
        "cache": subject.name,
        "lang": "python",
        "params": {
            "n": N,
            "value_bytes": VALUE_BYTES,
            "load_ms": LOAD_S * 1000,
            "concurrency": CONCURRENCY,
            "ops": ops,
            "warmup_ops": len(warmup),
            "l1_entries": L1_ENTRIES,
            "l1_ttl_s": L1_TTL_S,
            "l2_ttl_s": L2_TTL_S,
        },
        "ops": ops,
        "reads": reads,
        "writes": len(tally.write_us),
        "elapsed_s": round(elapsed, 3),
        "ops_per_s": round(ops / elapsed, 1),
        "read_us": percentiles(tally.read_us),
        # What the loads' 1 ms waits took under this cache (the timer's lateness, both alike).
        "load_sleep_us": {
            **percentiles(source.sleeps),
            "min": round(min(source.sleeps, default=0)),
            "mean": round(sum(source.sleeps) / max(1, len(source.sleeps))),
        },
        "write_us": percentiles(tally.write_us),
        "l1_hits": hits["l1_hits"],
        "l2_hits": hits["l2_hits"],
        "waited": hits["waited"],
        "hit_ratio": {
            "l1": round(hits["l1_hits"] / max(reads, 1), 4),
            "l2": round(hits["l2_hits"] / max(reads, 1), 4),
            "overall": round((hits["l1_hits"] + hits["l2_hits"]) / max(reads, 1), 4),
        },
        "loader_calls": source.loads - loads,
        "stale_reads": tally.stale,
        "errors": tally.errors,
        "cpu": {
            "bench_s": round(cpu, 3),
            "redis_s": round(redis_s, 3),
            "us_per_op": round((cpu + redis_s) / ops * 1e6, 2),
        },
        "redis_commands_per_op": {
            "total": round(sum(by_command.values()), 4),
            "by_command": by_command,
        },
        # Which server process measured it: one, or (on a cluster) not named.
        **({"l2_server": {"run_id": server}} if server else {}),
    }


def compare(strata: dict[str, Any], naive: dict[str, Any]) -> dict[str, float]:
    """Strata's figures as ratios to naive's."""

    def ratio(a: float, b: float) -> float:
        return round(a / b, 3) if b else 0.0

    return {
        "ops": ratio(strata["ops_per_s"], naive["ops_per_s"]),
        "read_p99": ratio(strata["read_us"]["p99"], naive["read_us"]["p99"]),
        "cpu": ratio(strata["cpu"]["us_per_op"], naive["cpu"]["us_per_op"]),
        "redis_cpu": ratio(strata["cpu"]["redis_s"], naive["cpu"]["redis_s"]),
        "redis_commands": ratio(
            strata["redis_commands_per_op"]["total"], naive["redis_commands_per_op"]["total"]
        ),
    }


def table(reports: list[dict[str, Any]]) -> str:
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("ops/s", lambda r: f"{r['ops_per_s']:,.0f}"),
        ("read p50 / p99 µs", lambda r: f"{r['read_us']['p50']:,} / {r['read_us']['p99']:,}"),
        ("write p50 µs", lambda r: f"{r['write_us']['p50']:,}"),
        (
            "hit ratio L1 / overall",
            lambda r: f"{r['hit_ratio']['l1']} / {r['hit_ratio']['overall']}",
        ),
        ("waited", lambda r: f"{r['waited']:,}"),
        ("loader calls", lambda r: f"{r['loader_calls']:,}"),
        (
            "load sleep p50 / p95 µs",
            lambda r: f"{r['load_sleep_us']['p50']:,} / {r['load_sleep_us']['p95']:,}",
        ),
        ("stale reads", lambda r: f"{r['stale_reads']:,}"),
        ("errors", lambda r: f"{r['errors']:,}"),
        ("CPU µs/op (bench + redis)", lambda r: f"{r['cpu']['us_per_op']}"),
        ("redis CPU s", lambda r: f"{r['cpu']['redis_s']}"),
        ("redis commands/op", lambda r: f"{r['redis_commands_per_op']['total']}"),
    ]
    head = f"W1 (Python), {reports[0]['ops']:,} operations\n"
    lines = [f"{'':28}" + "".join(f"{r['cache']:>18}" for r in reports)]
    lines += [f"{name:28}" + "".join(f"{cell(r):>18}" for r in reports) for name, cell in rows]
    return head + "\n".join(lines) + "\n"


@contextlib.contextmanager
def local_redis() -> Iterator[str]:
    """A ``redis-server`` of our own on a free loopback port, persistence off."""
    if shutil.which("redis-server") is None:
        raise SystemExit("no redis-server on PATH: install it, or pass --redis URL")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    server = subprocess.Popen([*args, "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"redis-server did not start on port {port}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait()


async def run(url: str | None, stream: str, cache: str, quiet: bool) -> list[dict[str, Any]]:
    """Runs ``cache`` (or ``both``) on the stream in the file ``stream``, against the Redis at
    ``url`` — or, with ``None``, each cache on a ``redis-server`` started fresh for it."""
    warmup, measured = read_stream(stream)
    makers: dict[str, Callable[[str, Source], Awaitable[Subject]]] = {
        "strata": Strata.start,
        "naive": Naive.start,
    }
    names = ["strata", "naive"] if cache == "both" else [cache]
    reports = []
    for name in names:
        with contextlib.ExitStack() as stack:
            at = url or stack.enter_context(local_redis())
            reports.append(await measure(makers[name], at, warmup, measured, quiet))
    if len(reports) == 2:
        reports[0]["vs_naive"] = compare(reports[0], reports[1])
    return reports


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m strata_cache.bench", description=__doc__)
    parser.add_argument("stream", help="a file written by `strata bench w1 --stream-out`")
    parser.add_argument("--cache", choices=["strata", "naive", "both"], default="both")
    parser.add_argument(
        "--redis",
        help="Redis URL, as the cache takes it (default: a redis-server of its own for each cache)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per cache")
    args = parser.parse_args(argv)
    reports = asyncio.run(run(args.redis, args.stream, args.cache, args.json))
    if args.json:
        for r in reports:
            print(json.dumps(r))
    else:
        print(table(reports), end="")
        if "vs_naive" in reports[0]:
            print("strata / naive:", json.dumps(reports[0]["vs_naive"]))


if __name__ == "__main__":
    main()
