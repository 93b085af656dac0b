"""The cache's own connection: one write per turn, replies in order, errors to their own
caller, a lost connection failing what waited on it and the next command connecting again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError, DataError, ResponseError, TimeoutError

from strata_cache.multiplex import Multiplexed

from .conftest import Server, free_port


@pytest.fixture
async def mux(server: Server) -> AsyncIterator[Multiplexed]:
    client = aioredis.Redis.from_url(server.url)
    m = Multiplexed(client)
    yield m
    await m.close()
    await client.aclose()


async def reads_processed(redis: aioredis.Redis) -> int:
    return int((await redis.info("stats"))["total_reads_processed"])


async def test_the_commands_of_one_turn_leave_in_one_write_and_are_answered_in_order(
    redis: aioredis.Redis, mux: Multiplexed
) -> None:
    await redis.mset({f"k{i}": str(i) for i in range(100)})
    assert await mux.execute("PING") == b"PONG"  # connected
    before = await reads_processed(redis)
    replies = await asyncio.gather(*(mux.execute("GET", f"k{i}") for i in range(100)))
    assert replies == [str(i).encode() for i in range(100)]
    # The admin's INFO is one read; the hundred GETs one more (two if the kernel split them).
    assert await reads_processed(redis) - before <= 3


async def test_an_error_reply_goes_to_its_own_caller(
    redis: aioredis.Redis, mux: Multiplexed
) -> None:
    await redis.set("s", "text")
    replies: list[object] = await asyncio.gather(
        mux.execute("SET", "a", 1),
        mux.execute("INCR", "s"),
        mux.execute("GET", "a"),
        return_exceptions=True,
    )
    ok, bad, after = replies
    assert ok == b"OK" and after == b"1"
    assert isinstance(bad, ResponseError) and "not an integer" in str(bad)


async def test_a_script_the_server_lost_is_loaded_again(
    redis: aioredis.Redis, mux: Multiplexed
) -> None:
    script = mux.script("return ARGV[1] .. KEYS[1]")
    assert await script(keys=["k"], args=["v"]) == b"vk"
    await redis.script_flush()
    assert await script(keys=["k"], args=["w"]) == b"wk"


async def test_a_bad_argument_is_refused_and_sends_nothing(mux: Multiplexed) -> None:
    with pytest.raises(DataError):
        await mux.execute("SET", "a", None)  # type: ignore[arg-type]
    assert await mux.execute("SET", "a", "2") == b"OK"
    assert await mux.execute("GET", "a") == b"2"


async def test_a_caller_that_stops_waiting_leaves_the_others_their_replies(
    redis: aioredis.Redis, mux: Multiplexed
) -> None:
    await redis.set("k", "v")
    await redis.config_resetstat()
    assert await mux.execute("PING") == b"PONG"  # connected: a command is sent as it is asked
    blocked = asyncio.create_task(mux.execute("BLPOP", "nothing", 0.2))
    await asyncio.sleep(0)  # one turn: the task asks, its BLPOP goes out
    blocked.cancel()
    # Its reply (nil, after 0.2 s) still comes first and is dropped; GET gets its own.
    assert await mux.execute("GET", "k") == b"v"
    stats = await redis.info("commandstats")
    assert stats["cmdstat_blpop"]["calls"] == 1  # the dropped reply was there to drop


async def test_a_killed_connection_fails_what_waited_and_the_next_command_connects_again(
    redis: aioredis.Redis, mux: Multiplexed
) -> None:
    await mux.execute("CLIENT", "SETNAME", "muxed")
    waiting = asyncio.create_task(mux.execute("BLPOP", "nothing", 10))
    await asyncio.sleep(0)  # sent with this turn; killed before or while it blocks, it fails
    killed = await redis.client_kill_filter(_type="normal", skipme=True)
    assert int(killed) >= 1
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(waiting, 5)
    assert await mux.execute("PING") == b"PONG"


async def test_a_reply_late_past_socket_timeout_is_a_timeout(server: Server) -> None:
    client = aioredis.Redis.from_url(server.url, socket_timeout=0.2)
    mux = Multiplexed(client)
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(mux.execute("BLPOP", "nothing", 3), 2)
        assert await mux.execute("PING") == b"PONG"  # on a new connection
    finally:
        await mux.close()
        await client.aclose()


async def test_a_server_turned_replica_is_left_for_a_new_connection(
    redis: aioredis.Redis, mux: Multiplexed
) -> None:
    assert await mux.execute("SET", "a", "1") == b"OK"
    await redis.replicaof("127.0.0.1", "1")  # nobody there: stays read-only
    try:
        with pytest.raises(ConnectionError, match="replica"):
            await mux.execute("SET", "a", "2")
    finally:
        await redis.replicaof("NO", "ONE")
    assert await mux.execute("SET", "a", "3") == b"OK"


async def test_closed_it_refuses_commands(mux: Multiplexed) -> None:
    assert await mux.execute("PING") == b"PONG"
    await mux.close()
    with pytest.raises(ConnectionError):
        await mux.execute("PING")


async def test_with_nothing_listening_each_command_fails_and_tries_again() -> None:
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}")
    mux = Multiplexed(client)
    try:
        for _ in range(2):
            with pytest.raises(ConnectionError):
                await mux.execute("PING")
    finally:
        await mux.close()
        await client.aclose()
