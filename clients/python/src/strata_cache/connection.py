"""Connections from a URL: ``redis://`` / ``rediss://`` for one server (as redis-py reads
them), ``redis+sentinel://s1:p1,s2:p2/<master>[/<db>]`` for the master of a Sentinel-managed
group and ``redis+cluster://h1:p1,h2:p2`` for a Redis Cluster (``rediss+…`` with TLS), as the
Rust crate writes them: credentials as ``user:password@`` before the first host."""

from __future__ import annotations

import weakref
from typing import Any
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

from .errors import ConfigError

Client = aioredis.Redis | RedisCluster

#: The sentinels a master's client was made from: closed with it (`close`).
_SENTINELS: weakref.WeakKeyDictionary[Client, Sentinel] = weakref.WeakKeyDictionary()


def is_cluster(url: str) -> bool:
    return url.split("://", 1)[0] in ("redis+cluster", "rediss+cluster")


def is_sentinel(url: str) -> bool:
    return url.split("://", 1)[0] in ("redis+sentinel", "rediss+sentinel")


def connect(url: str, **kwargs: Any) -> Client:
    """A client for ``url``; ``kwargs`` go to redis-py (with Sentinel, to the master's
    connections; ``sentinel_kwargs=`` to the sentinels')."""
    if is_sentinel(url):
        return _sentinel(url, **kwargs)
    if not is_cluster(url):
        return aioredis.Redis.from_url(url, **kwargs)
    scheme, rest = url.split("://", 1)
    hosts = _credentials(rest.split("/", 1)[0], kwargs)
    nodes = [ClusterNode(host, port) for host, port in _hosts(url, hosts, 6379)]
    if scheme == "rediss+cluster":
        kwargs.setdefault("ssl", True)
    return RedisCluster(startup_nodes=nodes, **kwargs)


async def close(client: Client) -> None:
    """Closes ``client``, and with Sentinel the connections to the sentinels."""
    await client.aclose()
    sentinel = _SENTINELS.pop(client, None)
    if sentinel is not None:
        for s in sentinel.sentinels:
            await s.aclose()


def _sentinel(url: str, **kwargs: Any) -> aioredis.Redis:
    """The master of a Sentinel-managed group: the sentinels are asked for its address on
    each new connection, and again when it stops answering as the master (a failover)."""
    scheme, rest = url.split("://", 1)
    authority, _, path = rest.partition("/")
    hosts = _credentials(authority, kwargs)
    master, _, db = path.partition("/")
    if not master or not hosts:
        raise ConfigError(f"{url}: a Sentinel URL names its sentinels and a master (…/<master>)")
    if db:
        if not db.isdigit():
            raise ConfigError(f"{url}: the database is a number")
        kwargs.setdefault("db", int(db))
    if scheme == "rediss+sentinel":
        kwargs.setdefault("ssl", True)
    # The sentinels take the URL's TLS and timeouts; the credentials are the master's (the
    # sentinels' own, if they ask for any, go in `sentinel_kwargs`).
    sentinel_kwargs = kwargs.pop("sentinel_kwargs", None) or {
        k: v for k, v in kwargs.items() if k.startswith(("socket_", "ssl"))
    }
    sentinel = Sentinel(_hosts(url, hosts, 26379), sentinel_kwargs=sentinel_kwargs, **kwargs)
    client: aioredis.Redis = sentinel.master_for(master)
    _SENTINELS[client] = sentinel
    return client


def _credentials(authority: str, kwargs: dict[str, Any]) -> str:
    """Takes ``user:password@`` off the front of a URL's ``authority`` into ``kwargs``;
    returns its hosts."""
    if "@" not in authority:
        return authority
    userinfo, hosts = authority.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    kwargs.setdefault("username", unquote(user) or None)
    kwargs.setdefault("password", unquote(password) or None)
    return hosts


def _hosts(url: str, hosts: str, default_port: int) -> list[tuple[str, int]]:
    """``h1[:p1],h2[:p2]`` as (host, port) pairs."""
    pairs = []
    for node in hosts.split(","):
        host, colon, port = node.rpartition(":")
        if not colon:
            host, port = node, str(default_port)
        if not host or not port.isdigit():
            raise ConfigError(f"{url}: hosts are host[:port], comma-separated")
        pairs.append((host, int(port)))
    return pairs
