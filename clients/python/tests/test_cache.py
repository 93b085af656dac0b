"""The cache against a real redis-server: counts of loads, hits, stale reads and errors."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.resources
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from strata_cache import (
    ConfigError,
    EntryOptions,
    HybridCache,
    KeyTooLongError,
    LoaderError,
    LoaderTimeoutError,
    NotFoundError,
    envelope,
)
from strata_cache.acks import parse_ack
from strata_cache.follower import now_ms

from .conftest import Server, instances


class Source:
    """A source of truth that counts its loads."""

    def __init__(self, delay: float = 0.0) -> None:
        self.version = 1
        self.calls = 0
        self.delay = delay
        self.fail = False

    def loader(
        self, then: Callable[[], Awaitable[object]] | None = None
    ) -> Callable[[], Awaitable[dict[str, int]]]:
        """A load; ``then`` runs once it has its value, before it returns it."""

        async def load() -> dict[str, int]:
            self.calls += 1
            version = self.version  # read first; the rest of the load is slow
            await asyncio.sleep(self.delay)
            if self.fail:
                raise RuntimeError("the source is down")
            if then is not None:
                await then()
            return {"version": version}

        return load


async def eventually(check: Callable[[], bool | Awaitable[bool]], within: float = 10.0) -> None:
    """Waits (bounded) until ``check()`` holds; ``check`` may be a coroutine function (a look
    at the server)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        held = check()
        if held if isinstance(held, bool) else await held:
            return
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def _is(value: Awaitable[object], expected: object) -> bool:
    """Whether ``value`` comes to ``expected``: a look for :func:`eventually`."""
    return await value == expected


async def test_concurrent_misses_in_two_instances_load_once(
    pair: tuple[HybridCache, HybridCache],
) -> None:
    a, b = pair
    source = Source(delay=0.05)
    reads = [c.get_or_load("k", source.loader()) for c in (a, b) for _ in range(100)]
    values = await asyncio.gather(*reads)
    assert source.calls == 1
    assert all(v == {"version": 1} for v in values)
    assert await a.get_or_load("k", source.loader()) == {"version": 1}
    assert a.stats().l1_hits + b.stats().l1_hits >= 1


async def test_reads_in_flight_share_one_connection(server: Server, redis: aioredis.Redis) -> None:
    cache = await HybridCache.connect(server.url, "conns")
    try:
        before = int((await redis.info("clients"))["connected_clients"])
        source = Source(delay=0.05)
        reads = [cache.get_or_load(f"k{i}", source.loader()) for i in range(64)]
        assert await asyncio.gather(*reads) == [{"version": 1}] * 64
        assert source.calls == 64
        # redis-py's pool would have opened a connection for each read in flight.
        assert int((await redis.info("clients"))["connected_clients"]) <= before
    finally:
        await cache.close()


async def test_an_invalidation_reaches_the_other_instance_s_l1(
    pair: tuple[HybridCache, HybridCache],
) -> None:
    a, b = pair
    source = Source()
    assert await b.get_or_load("k", source.loader()) == {"version": 1}
    source.version = 2
    await a.invalidate("k")
    await eventually(lambda: b.stats().invalidations_received == 1)
    assert await b.get_or_load("k", source.loader()) == {"version": 2}
    assert source.calls == 2


async def test_a_log_it_cannot_read_drops_l1_and_is_followed_again(
    pair: tuple[HybridCache, HybridCache], redis: aioredis.Redis
) -> None:
    a, b = pair
    source = Source()
    assert await b.get_or_load("k", source.loader()) == {"version": 1}
    log_key = b._layout.log(0, 1)
    await redis.delete(log_key)
    await redis.set(log_key, "not a stream")  # every read of it answers WRONGTYPE
    await eventually(lambda: b.stats().resyncs >= 1)
    assert b.stats().l1_hits == 0
    await redis.delete(log_key)
    resyncs = b.stats().resyncs
    assert await b.get_or_load("k", source.loader()) == {"version": 1}  # from L2 again
    source.version = 2
    await a.invalidate("k")
    await eventually(lambda: b.stats().invalidations_received > resyncs)
    assert await b.get_or_load("k", source.loader()) == {"version": 2}


async def test_with_resp2_an_acknowledged_invalidation_reaches_the_other_instance(
    server: Server,
) -> None:
    async with instances(server.url, "resp2", protocol=2, acknowledged_writes=True) as (a, b):
        source = Source()
        assert await b.get_or_load("k", source.loader()) == {"version": 1}
        source.version = 2
        await a.invalidate("k")  # returns once b applied it: `HGETALL` read as RESP2 sends it
        assert b.stats().invalidations_received == 1
        assert a.stats().writes_unacknowledged == 0
        assert await b.get_or_load("k", source.loader()) == {"version": 2}


async def test_tags_and_clear_drop_entries_everywhere(
    pair: tuple[HybridCache, HybridCache], redis: aioredis.Redis
) -> None:
    a, b = pair
    source = Source()
    tagged = EntryOptions(tags=("cat:1",))
    await b.get_or_load("p1", source.loader(), options=tagged)
    await b.get_or_load("p2", source.loader())
    await a.invalidate_tag("cat:1")
    await eventually(lambda: b.stats().invalidations_received == 1)
    assert await redis.exists("t:p1") == 0 and await redis.exists("t:p2") == 1
    await b.get_or_load("p1", source.loader(), options=tagged)
    await b.get_or_load("p2", source.loader())
    assert source.calls == 3  # p1 again; p2 from L1
    await a.clear()
    await eventually(lambda: b.stats().invalidations_received == 2)
    assert await redis.exists("t:p2") == 0
    await b.get_or_load("p2", source.loader())
    assert source.calls == 4


async def overtaken_fill_does_not_land(
    a: HybridCache, b: HybridCache, redis: aioredis.Redis
) -> Source:
    """``b`` invalidates ``k`` while ``a`` loads it."""
    source = Source(delay=0.3)
    load = asyncio.create_task(a.get_or_load("k", source.loader()))
    await eventually(lambda: source.calls == 1)
    source.version = 2  # written while the old value is being loaded
    await b.invalidate("k")
    assert await load == {"version": 1}  # the caller gets what it loaded...
    assert a.stats().fills_fenced == 1  # ...but neither Redis nor L1 keeps it
    assert await redis.get("t:k") is None
    return source


async def test_a_lone_caller_has_its_value_before_the_fill_lands(
    pair: tuple[HybridCache, HybridCache], redis: aioredis.Redis
) -> None:
    a, b = pair
    source = Source()
    # The server's writes paused as the load ends: the fill waits; reads go on.
    load = source.loader(then=lambda: redis.client_pause(5000, all=False))
    try:
        assert await a.get_or_load("k", load) == {"version": 1}
        # Answered while Redis still holds the lease record: the fill is still on its way.
        raw = await redis.get("t:k")
        assert isinstance(raw, bytes) and envelope.lease_holder(raw) is not None
        assert await a.get_or_load("k", source.loader()) == {"version": 1}  # from L1
        other = asyncio.create_task(b.get_or_load("k", source.loader()))
    finally:
        await redis.client_unpause()
    assert await other == {"version": 1}
    assert source.calls == 1  # b waited for the fill instead of loading
    await a.run_pending_tasks()
    raw = await redis.get("t:k")
    assert isinstance(raw, bytes) and envelope.lease_holder(raw) is None


async def test_a_write_right_after_an_early_answer_refuses_its_fill(
    pair: tuple[HybridCache, HybridCache],
) -> None:
    a, b = pair
    source = Source()
    assert await a.get_or_load("k", source.loader()) == {"version": 1}  # its fill not yet sent
    source.version = 2
    await a.invalidate("k")  # reaches Redis before the fill, which it refuses
    await a.run_pending_tasks()
    assert a.stats().fills_fenced == 1
    assert await b.get_or_load("k", source.loader()) == {"version": 2}
    assert await a.get_or_load("k", source.loader()) == {"version": 2}


async def test_a_fill_refused_after_the_answer_leaves_nothing_in_l1(
    pair: tuple[HybridCache, HybridCache], redis: aioredis.Redis
) -> None:
    a, _ = pair
    source = Source()
    # As the load ends its lease record goes, and nothing tells the instance.
    load = source.loader(then=lambda: redis.delete("t:k"))
    assert await a.get_or_load("k", load) == {"version": 1}
    await a.run_pending_tasks()
    assert a.stats().fills_fenced == 1
    assert await redis.get("t:k") is None
    source.version = 2
    assert await a.get_or_load("k", source.loader()) == {"version": 2}  # not the refused copy
    assert source.calls == 2


async def test_a_fill_overtaken_by_an_invalidation_does_not_land(
    pair: tuple[HybridCache, HybridCache], redis: aioredis.Redis
) -> None:
    a, b = pair
    source = await overtaken_fill_does_not_land(a, b, redis)
    assert await a.get_or_load("k", source.loader()) == {"version": 2}
    assert source.calls == 2


async def test_a_read_between_an_invalidation_here_and_redis_keeps_no_old_copy(
    pair: tuple[HybridCache, HybridCache],
) -> None:
    """A read on the writing instance that reaches Redis after the write dropped its L1 copy
    but before Redis deleted the value takes the old value (its read began before the write
    returned) — and must not leave it in L1 once the write has returned."""
    a, b = pair
    source = Source()
    await b.get_or_load("k", source.loader())  # version 1 in Redis, not in a's L1
    invalidate = a._scripts["INVALIDATE"]

    async def read_first(**call: Any) -> Any:
        assert await a.get_or_load("k", source.loader()) == {"version": 1}
        return await invalidate(**call)

    a._scripts["INVALIDATE"] = read_first
    source.version = 2
    await a.invalidate("k")
    assert await a.get_or_load("k", source.loader()) == {"version": 2}


async def test_an_invalidation_here_wakes_every_flight_waiting_on_the_key_s_lease(
    server: Server,
) -> None:
    """The change deleted the lease record they wait on: they read again at once, not at their
    next poll. Two flights of one instance wait on one key when a write here overtook the
    first; a clear wakes every flight."""
    cache = await HybridCache.connect(server.url, "t", heartbeat=0.1)
    try:
        ends = cache._ends
        first, second, other = ends.join("k"), ends.join("k"), ends.join("other")
        await cache.invalidate("k")
        assert [first.is_set(), second.is_set(), other.is_set()] == [True, True, False]
        await cache.clear()
        assert other.is_set()
    finally:
        await cache.close()


async def test_a_tag_dropped_while_a_load_is_out_refuses_its_fill(
    pair: tuple[HybridCache, HybridCache], redis: aioredis.Redis
) -> None:
    """The key is in no index until its fill: only the loading instance's own record of the
    drop can refuse it (docs/protocol.md §6)."""
    a, _ = pair
    tagged = EntryOptions(tags=("cat:1",))
    source = Source(delay=0.3)
    load = asyncio.create_task(a.get_or_load("k", source.loader(), options=tagged))
    await eventually(lambda: source.calls == 1)
    source.version = 2
    await a.invalidate_tag("cat:1")
    assert await load == {"version": 1}
    assert a.stats().fills_fenced == 1
    assert await redis.get("t:k") is None
    assert await a.get_or_load("k", source.loader(), options=tagged) == {"version": 2}
    # Another tag's drop overtakes nothing of this key's: its load fills.
    await a.invalidate("k")
    load = asyncio.create_task(a.get_or_load("k", source.loader(), options=tagged))
    await eventually(lambda: source.calls == 3)
    await a.invalidate_tag("cat:2")
    assert await load == {"version": 2}
    assert await redis.get("t:k") is not None


#: What the followers send at their own pace (a subscription, its catching up and heartbeats).
FOLLOWING = {"xread", "xrange", "xrevrange", "ssubscribe", "ping", "client|setinfo", "info"}


async def calls(redis: aioredis.Redis) -> dict[str, int]:
    """Calls per command so far (``INFO commandstats``), the followers' left out."""
    stats: dict[str, Any] = await redis.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(v["calls"])
        for name, v in stats.items()
        if name.removeprefix("cmdstat_") not in FOLLOWING
    }


async def test_where_the_server_compares_a_fill_is_one_set_and_still_fenced(
    ifeq_server: Server,
) -> None:
    redis = aioredis.Redis.from_url(ifeq_server.url)
    await redis.flushall()
    try:
        async with instances(ifeq_server.url) as (a, b):
            source = Source()
            await a.get_or_load("warm", source.loader())
            # A miss is answered before its fill lands: each window waits for its own.
            await a.run_pending_tasks()
            before = await calls(redis)
            for i in range(20):
                await a.get_or_load(f"k{i}", source.loader())
            await a.run_pending_tasks()
            after = await calls(redis)
            sent = {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}
            # Each miss: SET … NX GET, then SET … IFEQ … GET; no script.
            assert sent == {"set": 40}
            # Overtaken while loading: refused, as by the script.
            await overtaken_fill_does_not_land(a, b, redis)
    finally:
        await redis.aclose()


async def test_without_ifeq_a_fill_is_the_small_script(
    server: Server, redis: aioredis.Redis
) -> None:
    """Redis 7 cannot compare in ``SET``: a miss's fill is ``FILL_LEASED`` (six arguments),
    never ``FILL`` (eleven), and stays fenced."""
    texts = json.loads(
        importlib.resources.files("strata_cache").joinpath("scripts.json").read_text()
    )
    sha = {name: hashlib.sha1(texts[name].encode()).hexdigest() for name in texts}
    await redis.script_flush()
    async with instances(server.url) as (a, b):
        source = Source()
        for i in range(5):
            await a.get_or_load(f"k{i}", source.loader())
        await eventually(lambda: _is(redis.script_exists(sha["FILL_LEASED"]), [True]))
        assert await redis.script_exists(sha["FILL"]) == [False]
        await overtaken_fill_does_not_land(a, b, redis)


async def test_waiters_on_another_instance_mark_its_load_once(
    server: Server, redis: aioredis.Redis
) -> None:
    """The first waiter marks the holder's lease record (the ``READ`` script: ``GET``,
    ``APPEND``), the next finds the mark and reads plainly; told of the fill, each reads the
    value with one ``SET … NX GET``. Marking every waiting read sent four scripts of one."""
    async with instances(server.url) as (a, b), instances(server.url) as (c, _):
        source = Source()

        async def length(key: str, n: int) -> None:
            await eventually(lambda: _is(redis.strlen(key), n))

        async def wait_on_a(key: str) -> dict[str, int]:
            gate = asyncio.Event()
            holder = asyncio.create_task(a.get_or_load(key, source.loader(then=gate.wait)))
            await length(f"t:{key}", 12)  # A's lease record
            before = await calls(redis)
            b_reads = asyncio.create_task(b.get_or_load(key, source.loader()))
            await length(f"t:{key}", 13)  # marked by B
            waits = c.stats().lease_waits
            c_reads = asyncio.create_task(c.get_or_load(key, source.loader()))
            await eventually(lambda: c.stats().lease_waits > waits)
            gate.set()
            assert list(await asyncio.gather(holder, b_reads, c_reads)) == [{"version": 1}] * 3
            after = await calls(redis)
            return {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}

        await wait_on_a("warm")  # each script loaded once
        sent = await wait_on_a("k")
        plain_reads = sent.pop("set", 0)
        sent.pop("strlen", None)  # the test's own looks at the mark
        # B's mark and A's fill; the fill announced (waited on).
        assert sent == {"evalsha": 2, "get": 1, "append": 1, "xadd": 1, "spublish": 1}
        # B: its read, its read once told; C: its read, once waiting, once told; A's fill.
        assert plain_reads >= 6
        assert source.calls == 2
        assert b.stats().lease_waits == c.stats().lease_waits == 2


async def test_on_one_server_the_fill_announces_a_load_waited_on(
    server: Server, redis: aioredis.Redis
) -> None:
    """On Redis 7 the fill's own script (``FILL_LEASED``, given the namespace's filled stream)
    announces the end of a load another instance waited on, not a command sent once the
    fill's answer is in: the waiter hears of it a hop sooner (docs/protocol.md §5)."""
    seen: list[dict[str, Any]] = []
    listening = asyncio.Event()

    async def watch() -> None:
        async with redis.monitor() as monitor:
            listening.set()
            while True:
                seen.append(await monitor.next_command())

    watcher = asyncio.create_task(watch())
    try:
        await listening.wait()
        async with instances(server.url) as (a, b):
            source = Source()
            gate = asyncio.Event()
            holder = asyncio.create_task(a.get_or_load("k", source.loader(then=gate.wait)))
            await eventually(lambda: _is(redis.strlen("t:k"), 12))  # A's lease record
            waiter = asyncio.create_task(b.get_or_load("k", source.loader()))
            await eventually(lambda: _is(redis.strlen("t:k"), 13))  # marked by B
            gate.set()
            assert list(await asyncio.gather(holder, waiter)) == [{"version": 1}] * 2
            assert source.calls == 1

            def told() -> list[dict[str, Any]]:
                return [c for c in seen if c["command"].startswith("XADD t#filled")]

            await eventually(lambda: len(told()) > 0)
            assert [c["client_type"] for c in told()] == ["lua"]
            assert any(
                c["command"].startswith("EVALSHA") and " t:k t#filled " in c["command"]
                for c in seen
            )
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def test_set_is_write_through_and_visible_to_the_other(
    pair: tuple[HybridCache, HybridCache],
) -> None:
    a, b = pair
    source = Source()
    assert await b.get_or_load("k", source.loader()) == {"version": 1}
    await a.set("k", {"version": 5})
    await eventually(lambda: b.stats().invalidations_received == 1)
    assert await b.get_or_load("k", source.loader()) == {"version": 5}
    assert await a.get("k") == {"version": 5}
    assert source.calls == 1


async def test_soft_ttl_serves_stale_and_refreshes_once(
    server: Server, redis: aioredis.Redis
) -> None:
    cache = await HybridCache.connect(
        server.url, "t", defaults=EntryOptions(ttl=60, soft_ttl=0.05), heartbeat=0.1
    )
    source = Source()
    try:
        assert await cache.get_or_load("k", source.loader()) == {"version": 1}
        source.version = 2
        await asyncio.sleep(0.1)  # past the soft TTL: the schedule under test, not a wait
        stale = await asyncio.gather(*(cache.get_or_load("k", source.loader()) for _ in range(20)))
        assert all(v == {"version": 1} for v in stale)
        await eventually(lambda: source.calls == 2)
        await eventually(lambda: cache.stats().background_refreshes == 1)
        # Until the refresh stored its value.
        await eventually(lambda: _is(cache.get("k"), {"version": 2}))
        assert await cache.get_or_load("k", source.loader()) == {"version": 2}
        assert source.calls == 2
    finally:
        await cache.close()


async def test_fail_safe_serves_the_expired_value_when_the_loader_fails(
    server: Server, redis: aioredis.Redis
) -> None:
    options = EntryOptions(ttl=0.05, fail_safe=60, fail_safe_throttle=60)
    cache = await HybridCache.connect(server.url, "t", defaults=options, heartbeat=0.1)
    source = Source()
    try:
        await cache.get_or_load("k", source.loader())
        await asyncio.sleep(0.1)  # past the TTL: the schedule under test
        source.fail = True
        assert await cache.get_or_load("k", source.loader()) == {"version": 1}
        assert await cache.get_or_load("k", source.loader()) == {"version": 1}
        assert source.calls == 2  # throttled: not retried at once
        assert cache.stats().loader_errors == 1
        with pytest.raises(LoaderError):
            await cache.get_or_load("other", source.loader())
    finally:
        await cache.close()


async def test_hard_timeout_and_negative_entries(server: Server, redis: aioredis.Redis) -> None:
    cache = await HybridCache.connect(server.url, "t", heartbeat=0.1)
    try:
        slow = Source(delay=5)
        with pytest.raises(LoaderTimeoutError):
            await cache.get_or_load("slow", slow.loader(), options=EntryOptions(hard_timeout=0.05))
        assert cache.stats().loader_timeouts == 1
        assert await redis.get("t:slow") is None  # the lease was given back

        calls = 0

        async def missing() -> dict[str, int] | None:
            nonlocal calls
            calls += 1
            return None

        assert await cache.get_or_load_optional("gone", missing) is None
        assert await cache.get_or_load_optional("gone", missing) is None
        assert calls == 1
        with pytest.raises(NotFoundError):
            await cache.get_or_load("gone", Source().loader())
        with pytest.raises(KeyTooLongError):
            await cache.get_or_load("x" * 2000, Source().loader())
    finally:
        await cache.close()


async def test_foreign_or_corrupt_bytes_are_a_counted_miss(
    server: Server, redis: aioredis.Redis
) -> None:
    cache = await HybridCache.connect(server.url, "t", heartbeat=0.1)
    try:
        for i, junk in enumerate([b"not json", b"\xffST\x09garbage", b"\xffST\x01" + bytes(60)]):
            await redis.set(f"t:j{i}", junk)
            source = Source()
            assert await cache.get_or_load(f"j{i}", source.loader()) == {"version": 1}
            assert source.calls == 1
        assert cache.stats().decode_errors == 3
        assert cache.stats().fills_fenced == 0  # the junk was replaced (fence B)
    finally:
        await cache.close()


async def test_a_follower_whose_position_was_trimmed_drops_its_l1(
    server: Server, redis: aioredis.Redis
) -> None:
    a = await HybridCache.connect(server.url, "t", heartbeat=0.1, log_max_len=10)
    try:
        source = Source()
        await a.get_or_load("k", source.loader())
        await a.run_pending_tasks()  # answered before its fill: landed, L2 has the value
        # Another writer's entries, then a trim past them while `a` is not reading: simulate
        # the gap with entries whose sequence jumps.
        await redis.incrby("t#log:seq", 100)
        await redis.xadd(
            "t#log", {"s": "101", "d": '{"origin":"0000000000000001","op":"key","arg":"x"}'}
        )
        await eventually(lambda: a.stats().resyncs == 1)
        await a.get_or_load("k", source.loader())
        assert (a.stats().l1_hits, a.stats().l2_hits) == (0, 1)  # L1 was dropped
        assert source.calls == 1
    finally:
        await a.close()


def test_stats_export_under_the_rust_names() -> None:
    from strata_cache import Stats

    text = Stats(l1_hits=3, misses=1).prometheus("catalog")
    assert 'strata_hits_total{namespace="catalog",level="l1"} 3' in text
    assert 'strata_misses_total{namespace="catalog"} 1' in text


async def test_a_namespace_of_a_newer_protocol_is_refused(
    server: Server, redis: aioredis.Redis
) -> None:
    await redis.set("t#protocol", "2")
    with pytest.raises(ConfigError, match="protocol version 2"):
        await HybridCache.connect(server.url, "t")
    await redis.set("t#protocol", "1")
    await redis.set("t#log:shards", "3")
    with pytest.raises(ConfigError, match="3 parts"):
        await HybridCache.connect(server.url, "t")


async def test_decode_turns_what_another_instance_stored_into_the_caller_s_type_once(
    pair: tuple[HybridCache, HybridCache],
) -> None:
    from dataclasses import dataclass

    @dataclass
    class Product:
        version: int

    a, b = pair
    decoded = 0

    def decode(data: Any) -> Product:
        nonlocal decoded
        decoded += 1
        return Product(**data)

    await a.get_or_load("k", Source().loader())
    first = await b.get_or_load("k", Source().loader(), decode=decode)
    again = await b.get_or_load("k", Source().loader(), decode=decode)
    assert isinstance(first, Product) and again is first
    assert decoded == 1


async def test_acknowledged_writes_return_once_every_other_instance_applied_them(
    server: Server, redis: aioredis.Redis
) -> None:
    async with instances(server.url, "ack", acknowledged_writes=True) as (a, b):
        # Each counts before it serves: its field is there when `connect` returns.
        fields = await redis.hgetall("ack#acks")
        assert set(fields) == {str(a.instance_id).encode(), str(b.instance_id).encode()}
        source = Source()
        for i in range(1, 21):
            await b.get_or_load("k", source.loader())
            assert source.calls == i
            await a.invalidate("k")
            # Returned: b applied it already (no wait here), and its copy is gone.
            assert b.stats().invalidations_received == i
            seq = int((await redis.get("ack#log:seq")) or 0)
            ack = parse_ack((await redis.hget("ack#acks", str(b.instance_id))) or b"", 0)
            assert ack is not None and ack[1] >= seq and ack[0] > now_ms()
        await a.set("k", {"version": 9})
        assert b.stats().invalidations_received == 21
        await b.invalidate_tag("t")
        await b.clear()
        assert a.stats().invalidations_received == 2
        assert a.stats().writes_unacknowledged == 0 and b.stats().writes_unacknowledged == 0
    assert await redis.hgetall("ack#acks") == {}


async def test_a_frozen_instance_holds_writes_up_to_the_bound_and_a_gone_one_not_at_all(
    server: Server, redis: aioredis.Redis
) -> None:
    a = await HybridCache.connect(
        server.url, "ack", heartbeat=0.1, max_staleness=0.3, acknowledged_writes=True
    )
    try:
        # An instance that says it is alive but applies nothing (frozen, cut off).
        await redis.hset("ack#acks", "7", f"{now_ms() + 60_000}:0")
        await a.invalidate("k")
        assert a.stats().writes_unacknowledged == 1
        # Past its life: the writer removes it and does not wait.
        await redis.hset("ack#acks", "7", f"{now_ms() - 1}:0")
        await a.invalidate("k")
        assert a.stats().writes_unacknowledged == 1
        assert not await redis.hexists("ack#acks", "7")
        # A field that is not an acknowledgement is waited for, as Rust does.
        await redis.hset("ack#acks", "8", "garbage")
        await a.invalidate("k")
        assert a.stats().writes_unacknowledged == 2
    finally:
        await a.close()
    assert await redis.hgetall("ack#acks") == {b"8": b"garbage"}


async def test_closing_an_acknowledging_instance_does_not_wait_on_a_frozen_server() -> None:
    frozen = Server()
    try:
        a = await HybridCache.connect(frozen.url, "ack", heartbeat=0.1, acknowledged_writes=True)

        async def freeze() -> None:
            frozen.freeze()

        # Answered before its fill, which the frozen server never takes.
        assert await a.get_or_load("k", Source().loader(then=freeze)) == {"version": 1}
        # Its goodbye and the fill's landing are bounded (1 s each); unbounded, redis-py gives
        # up on the frozen server's handshake only after its 5 s connect timeout, and the fill
        # never.
        await asyncio.wait_for(a.close(), 4)
    finally:
        frozen.thaw()
        frozen.stop()


def test_tokens_drawn_in_a_forked_child_are_not_its_parents() -> None:
    # Lease tokens and stamps come from a pool read from the OS 512 at a time; a child forked
    # with the pool's copy would draw the parent's next tokens, and their leases would fence
    # each other's fills.
    from strata_cache.cache import _random64

    _random64()  # the pool filled
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.write(write, _random64().to_bytes(8, "little"))
        os._exit(0)
    os.waitpid(pid, 0)
    child = int.from_bytes(os.read(read, 8), "little")
    assert child != _random64()
