"""The cache's commands on a Redis Cluster: each master's on a pipelined connection of its own,
what redis-py's slot map sent astray through redis-py (which mends it), a failover followed."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

from strata_cache import HybridCache, connection
from strata_cache.layout import Layout
from strata_cache.routed import Routed

from .conftest import Cluster


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[RedisCluster]:
    c = connection.connect(cluster.url)
    assert isinstance(c, RedisCluster)
    await c.initialize()
    yield c
    await c.aclose()


async def per_master(client: RedisCluster, section: str) -> dict[str, dict[str, Any]]:
    info = await client.info(section, target_nodes=RedisCluster.PRIMARIES)
    return dict(info)


async def test_each_master_carries_its_keys_in_one_write_a_turn(client: RedisCluster) -> None:
    routed = Routed(client)
    keys = [f"k{i}" for i in range(300)]
    await asyncio.gather(*(routed.execute("SET", k, k) for k in keys))  # connected
    before = await per_master(client, "stats")
    replies = await asyncio.gather(*(routed.execute("GET", k) for k in keys))
    after = await per_master(client, "stats")
    assert replies == [k.encode() for k in keys]
    for node, stats in after.items():
        # The INFO itself, and the turn's GETs for this master (two reads if the kernel split
        # them): ~100 a master through redis-py's cluster client.
        reads = stats["total_reads_processed"] - before[node]["total_reads_processed"]
        assert reads <= 3, f"{node}: {reads} reads"
    sets = [
        s.get("cmdstat_set", {}).get("calls", 0)
        for s in (await per_master(client, "commandstats")).values()
    ]
    assert sum(sets) == 300 and all(n > 0 for n in sets), sets
    await routed.close()


async def test_a_command_the_slot_map_sent_astray_goes_through_redis_py(
    client: RedisCluster,
) -> None:
    routed = Routed(client)
    key = "astray"
    right = client.get_node_from_key(key)
    wrong = next(n for n in client.get_primaries() if n != right)
    # redis-py's map, wrong about the key's slot (as after a resharding it has not seen).
    client.nodes_manager.slots_cache[client.keyslot(key)] = [wrong]
    assert await routed.execute("SET", key, "v")  # MOVED from the wrong master, then redis-py
    assert await client.get(key) == b"v"
    assert client.get_node_from_key(key) == right, "redis-py mended its map"
    assert await routed.execute("GET", key) == b"v"  # and the next goes straight there
    await routed.close()


async def test_a_cache_follows_a_failover_of_its_keys_master(cluster: Cluster) -> None:
    cache = await HybridCache.connect(cluster.url, "f", l1_capacity=0)
    admin = connection.connect(cluster.url)
    assert isinstance(admin, RedisCluster)
    await admin.initialize()
    try:
        loads = 0

        async def load() -> dict[str, int]:
            nonlocal loads
            loads += 1
            return {"v": 1}

        assert await cache.get_or_load("k", load) == {"v": 1}
        await cache.run_pending_tasks()
        assert await cache.get_or_load("k", load) == {"v": 1}
        assert (loads, cache.stats().l2_hits) == (1, 1)
        master = admin.get_node_from_key(Layout("f", True).data("k"))
        assert master is not None
        # The replica has the value before its master dies.
        await admin.execute_command("WAIT", 1, 2000, target_nodes=master)
        os.kill(cluster.pid(int(master.port)), signal.SIGKILL)

        deadline = time.monotonic() + 20
        hits = cache.stats().l2_hits
        while cache.stats().l2_hits == hits:
            assert time.monotonic() < deadline, "L2 never served again after the failover"
            assert await cache.get_or_load("k", load) == {"v": 1}  # a load while it fails
            await asyncio.sleep(0.05)
        # Served by the promoted replica, which had the value: from then on, from L2.
        loads_then = loads
        assert await cache.get_or_load("k", load) == {"v": 1}
        assert loads == loads_then
    finally:
        await cache.close()
        await admin.aclose()
