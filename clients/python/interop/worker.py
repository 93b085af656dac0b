"""A Python instance for the mixed-language tests of the Strata repository.

``python worker.py serve URL NAMESPACE [acknowledged]``: one cache (with ``acknowledged``:
acknowledged writes); JSON commands on stdin, one per line, each answered by one JSON line on
stdout (see ``handle``).

``python worker.py checker``: one process of the staleness checker
(``crates/strata-redis/tests/it/checker.rs``): its parameters in ``STRATA_CHECKER_RUN``, its
record printed as ``CHECKER:<json>``, exactly as the Rust worker does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from strata_cache import EntryOptions, HybridCache, UnavailableError

WRITE_RATIO = 0.15
GIVE_UP = 30.0


def wall_us() -> int:
    return time.time_ns() // 1000


async def handle(cache: HybridCache, cmd: dict[str, Any]) -> dict[str, Any]:
    op = cmd["op"]
    options = EntryOptions(ttl=600, tags=tuple(cmd.get("tags", ())), codec=cmd.get("codec"))
    if op == "get_or_load":
        value = cmd.get("value")
        calls = 0

        async def load() -> Any:
            nonlocal calls
            calls += 1
            await asyncio.sleep(cmd.get("load_ms", 0) / 1000)
            return value

        got = await cache.get_or_load(cmd["key"], load, options=options)
        # The fill may still be on its way (a lone caller is answered first): the test's next
        # step may read Redis, from another language.
        await cache.run_pending_tasks()
        return {"value": got, "loaded": calls}
    if op == "get":
        return {"value": await cache.get(cmd["key"])}
    if op == "set":
        await cache.set(cmd["key"], cmd["value"], options=options)
        return {"ok": True}
    if op == "invalidate":
        await cache.invalidate(cmd["key"])
        return {"ok": True}
    if op == "invalidate_tag":
        await cache.invalidate_tag(cmd["tag"])
        return {"ok": True}
    if op == "clear":
        await cache.clear()
        return {"ok": True}
    if op == "stats":
        return {"stats": vars(cache.stats())}
    if op == "stampede":
        calls = 0

        async def slow() -> Any:
            nonlocal calls
            calls += 1
            await asyncio.sleep(cmd["load_ms"] / 1000)
            return cmd["value"]

        async def read() -> Any:
            return await cache.get_or_load(cmd["key"], slow, options=options)

        results = await asyncio.gather(
            *(read() for _ in range(cmd["reads"])), return_exceptions=True
        )
        await cache.run_pending_tasks()
        errors = [str(r) for r in results if isinstance(r, BaseException)]
        values = [r for r in results if not isinstance(r, BaseException)]
        return {
            "loader_calls": calls,
            "errors": errors,
            "distinct": list({json.dumps(v, separators=(",", ":")) for v in values}),
        }
    if op == "wait_received":

        async def arrived() -> None:
            # A counter to watch, no event to wait on: polled, bounded below.
            while cache.stats().invalidations_received < cmd["n"]:  # noqa: ASYNC110
                await asyncio.sleep(0.005)

        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            await asyncio.wait_for(arrived(), 10)
        return {"received": cache.stats().invalidations_received}
    return {"error": f"unknown op {op!r}"}


async def serve(url: str, namespace: str, acknowledged: bool) -> None:
    # Acknowledging, it says it is alive for three heartbeats: long enough (6 s) that a test
    # freezing it sees the others' writes held up to their bound (1 s), not let go.
    heartbeat = 2.0 if acknowledged else 0.1
    cache = await HybridCache.connect(
        url, namespace, heartbeat=heartbeat, acknowledged_writes=acknowledged
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"ready": True}), flush=True)
    while line := await reader.readline():
        try:
            reply = await handle(cache, json.loads(line))
        except Exception as e:
            reply = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(reply), flush=True)
    await cache.close()


def dump_tasks() -> None:
    """On SIGUSR1: every task's stack on stderr (what a hung worker waits on)."""
    for task in asyncio.all_tasks():
        task.print_stack(file=sys.stderr)


async def checker() -> None:
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump_tasks)
    run = json.loads(os.environ["STRATA_CHECKER_RUN"])
    cache = await HybridCache.connect(
        run["url"],
        "chk",
        defaults=EntryOptions(ttl=600),
        max_staleness=run["max_staleness_ms"] / 1000,
        log_max_len=1000,
        log_shards=run["log_shards"],
        heartbeat=0.1,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
    )
    source = aioredis.Redis.from_url(run["source"])
    record: dict[str, Any] = {
        "commits": [],
        "reads": [],
        "errors": {"reads": 0, "refused_writes": 0, "other_write_errors": 0},
    }
    errors = record["errors"]

    async def write(key: int, version: int) -> None:
        give_up = time.monotonic() + GIVE_UP
        while True:
            try:
                await cache.invalidate(f"k{key}")
                record["commits"].append([key, version, wall_us()])
                return
            except UnavailableError:
                errors["refused_writes"] += 1
            if time.monotonic() > give_up:
                errors["other_write_errors"] += 1
                return
            await asyncio.sleep(0.02)

    pending = []
    end = time.monotonic() + run["run_ms"] / 1000
    stop_file = run.get("stop_file")
    stop = Path(stop_file) if stop_file else None
    while time.monotonic() < end and not (stop and stop.exists()):
        key = random.randrange(run["keys"])
        if random.random() < WRITE_RATIO:
            version = int(await source.incr(f"source:{key}"))
            pending.append(asyncio.create_task(write(key, version)))
        else:
            began = wall_us()

            async def load(key: int = key) -> int:
                raw = await source.get(f"source:{key}")
                return int(raw) if raw is not None else 0

            try:
                version = await cache.get_or_load(f"k{key}", load)
                record["reads"].append([key, version, began])
            except Exception as e:
                print(f"checker: read of k{key} failed: {e}", file=sys.stderr)
                errors["reads"] += 1
        await asyncio.sleep(0.002)
    # Bounded: a write retries for GIVE_UP at most; a hang here is a bug to see, not to wait out.
    await asyncio.wait_for(asyncio.gather(*pending), GIVE_UP + 10)
    s = cache.stats()
    record.update(l1_hits=s.l1_hits, l1_bypassed=s.l1_bypassed, resyncs=s.resyncs)
    print("CHECKER:" + json.dumps(record), flush=True)
    await asyncio.wait_for(cache.close(), 10)
    await source.aclose()


def main() -> None:
    if sys.argv[1:2] == ["serve"] and len(sys.argv) in (4, 5):
        asyncio.run(serve(sys.argv[2], sys.argv[3], sys.argv[4:] == ["acknowledged"]))
    elif sys.argv[1:2] == ["checker"]:
        asyncio.run(checker())
    else:
        sys.exit("usage: worker.py serve URL NAMESPACE [acknowledged] | worker.py checker")


if __name__ == "__main__":
    main()
