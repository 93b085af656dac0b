"""The log follower on a real server: entries pushed on the stream's channel, the stream read
only to catch up, and reading where the server refuses the channel (``docs/protocol.md`` §4)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from strata_cache import HybridCache, UnavailableError, connection
from strata_cache.layout import Layout

from .conftest import Cluster, Server, instances
from .test_cache import eventually


async def _calls(redis: aioredis.Redis, command: str) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def _entry(seq: int, key: str) -> dict[Any, Any]:
    d = {"origin": "0000000000000001", "op": "key", "arg": key}
    return {"s": str(seq), "d": json.dumps(d, separators=(",", ":"))}


async def test_followers_are_pushed_every_entry_and_read_the_stream_only_to_catch_up(
    server: Server, redis: aioredis.Redis
) -> None:
    # A log kept to about 100 entries: a follower that fell 1,000 behind would have lost its
    # place (a resync); pushed, it never falls behind.
    async with instances(server.url, heartbeat=0.2, log_max_len=100) as (a, b):
        reads = await _calls(redis, "xread")
        for i in range(1000):
            await a.invalidate(f"k{i}")
        await eventually(lambda: b.stats().invalidations_received == 1000)
        assert b.stats().resyncs == 0
        assert await _calls(redis, "xread") == reads  # no blocking read: every entry pushed
        assert await _calls(redis, "ssubscribe") >= 2


async def test_entries_a_writer_did_not_push_are_found_by_the_heartbeat_or_the_next_push(
    pair: tuple[HybridCache, HybridCache], redis: aioredis.Redis
) -> None:
    a, b = pair
    await a.invalidate("first")  # pushed: seq 1
    await eventually(lambda: b.stats().invalidations_received == 1)
    # A writer that pushes nothing (the entry as the protocol writes it, without the
    # `SPUBLISH`): the heartbeat's look at the stream finds it.
    await redis.xadd("t#log", _entry(await redis.incr("t#log:seq"), "unpushed"))
    await eventually(lambda: b.stats().invalidations_received == 2)
    # One more unpushed, then a pushed one whose sequence skips it: read from the stream at
    # once, in order, no resync.
    await redis.xadd("t#log", _entry(await redis.incr("t#log:seq"), "unpushed2"))
    await a.invalidate("last")
    await eventually(lambda: b.stats().invalidations_received == 4)
    assert b.stats().resyncs == 0


async def test_a_user_without_the_channel_follows_by_reading_the_log(
    server: Server, redis: aioredis.Redis
) -> None:
    # The key patterns of the namespace but no channel: `SSUBSCRIBE` is refused (NOPERM).
    await redis.acl_setuser(
        "nochan",
        enabled=True,
        passwords=["+pw"],
        keys=["t:*", "t#*"],
        reset_channels=True,
        commands=["+@all"],
    )
    url = server.url.replace("redis://", "redis://nochan:pw@")
    admin = await HybridCache.connect(server.url, "t", heartbeat=0.1)
    b = await HybridCache.connect(url, "t", heartbeat=0.1)
    try:
        reads = await _calls(redis, "xread")
        await admin.invalidate("k")
        await eventually(lambda: b.stats().invalidations_received == 1)
        assert await _calls(redis, "xread") > reads
        assert b.stats().resyncs == 0
    finally:
        await admin.close()
        await b.close()
        await redis.acl_deluser("nochan")


async def test_on_a_cluster_entries_are_pushed_from_the_log_s_master_and_after_its_failover(
    cluster: Cluster,
) -> None:
    async with instances(cluster.url) as (a, b):
        admin = connection.connect(cluster.url)
        assert isinstance(admin, RedisCluster)
        await admin.initialize()

        async def calls(command: str) -> int:
            stats = await admin.info("commandstats", target_nodes=RedisCluster.ALL_NODES)
            return sum(
                int(node.get(f"cmdstat_{command}", {}).get("calls", 0)) for node in stats.values()
            )

        try:
            await a.invalidate("before")
            await eventually(lambda: b.stats().invalidations_received == 1)
            assert await calls("xread") == 0  # pushed, from the master of the log's slot
            master = admin.get_node_from_key(Layout("t", True).log(0, 1))
            assert master is not None
            # The replica has the log before its master dies.
            await admin.execute_command("WAIT", 1, 2000, target_nodes=master)
            os.kill(cluster.pid(int(master.port)), signal.SIGKILL)
            # Writes fail until the replica is promoted; then one reaches `b`, pushed again.
            deadline = time.monotonic() + 20
            while True:
                assert time.monotonic() < deadline, (
                    "no invalidation went through after the failover"
                )
                try:
                    await a.invalidate("after")
                    break
                except UnavailableError:
                    await asyncio.sleep(0.1)
            await eventually(lambda: b.stats().invalidations_received >= 2, within=20)
            assert await calls("xread") == 0
        finally:
            await admin.aclose()
