"""URLs as the Rust crate writes them: one server, a Sentinel group's master, a cluster."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from strata_cache import ConfigError, connection


async def test_a_sentinel_url_names_the_sentinels_the_master_its_database_and_credentials() -> None:
    url = "redis+sentinel://app:p%40ss@10.0.0.1:26380,10.0.0.2/mymaster/3"
    client = connection.connect(url, socket_timeout=0.5)
    assert isinstance(client, Redis)
    try:
        master = client.connection_pool.connection_kwargs
        assert (master["db"], master["username"], master["password"]) == (3, "app", "p@ss")
        sentinels = [
            s.connection_pool.connection_kwargs for s in connection._SENTINELS[client].sentinels
        ]
        assert [(s["host"], s["port"]) for s in sentinels] == [
            ("10.0.0.1", 26380),
            ("10.0.0.2", 26379),
        ]
        # The credentials are the master's; the sentinels take the timeouts.
        assert all(s.get("password") is None and s["socket_timeout"] == 0.5 for s in sentinels)
    finally:
        await connection.close(client)
    assert client not in connection._SENTINELS


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://h1,h2",
        "redis+sentinel:///mymaster",
        "redis+sentinel://h:port/mymaster",
        "redis+sentinel://h/mymaster/zero",
        "redis+cluster://h1:1,:2",
    ],
)
def test_a_malformed_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError):
        connection.connect(url)


async def test_cluster_nodes_take_the_default_port_and_credentials() -> None:
    client = connection.connect("redis+cluster://u:pw@h1,h2:7001")
    assert isinstance(client, RedisCluster)
    nodes = [(n.host, n.port) for n in client.startup_nodes]
    assert nodes == [("h1", 6379), ("h2", 7001)]
    await client.aclose()


# `CLUSTER NODES` of three masters (30001–30003), each with a replica: 30004 connected, 30005's
# link down, 30006 connected (its flags are changed below).
CLUSTER_NODES = """\
n4 127.0.0.1:30004@31004,h4 slave n1 0 1 4 connected
n2 127.0.0.1:30002@31002,h2 master - 0 1 2 connected 5461-10922
n3 127.0.0.1:30003@31003,h3 master - 0 1 3 connected 10923-16383
n5 127.0.0.1:30005@31005,h5 slave n2 0 1 5 disconnected
n6 127.0.0.1:30006@31006,h6 slave n3 0 1 6 connected
n1 127.0.0.1:30001@31001,h1 myself,master - 0 0 1 connected 0-5460
"""


def test_writes_wait_on_the_masters_with_a_connected_replica() -> None:
    from redis._parsers.helpers import parse_cluster_nodes

    from strata_cache.replicas import replicated_masters

    def masters(text: str) -> frozenset[str]:
        return replicated_masters(parse_cluster_nodes(text))  # type: ignore[no-untyped-call]

    assert masters(CLUSTER_NODES) == {"127.0.0.1:30001", "h1:30001", "127.0.0.1:30003", "h3:30003"}
    failed = CLUSTER_NODES.replace("h6 slave", "h6 slave,fail")
    assert masters(failed) == {"127.0.0.1:30001", "h1:30001"}
