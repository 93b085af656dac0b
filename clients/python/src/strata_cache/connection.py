"""Connections from a URL: ``redis://`` / ``rediss://`` for one server (as redis-py reads
them), ``redis+cluster://h1:p1,h2:p2`` / ``rediss+cluster://…`` for a Redis Cluster (as the Rust
crate writes them; credentials as ``user:password@`` before the first node)."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from .errors import ConfigError

Client = aioredis.Redis | RedisCluster


def is_cluster(url: str) -> bool:
    return url.split("://", 1)[0] in ("redis+cluster", "rediss+cluster")


def connect(url: str, **kwargs: Any) -> Client:
    """A client for ``url``; ``kwargs`` go to redis-py."""
    if not is_cluster(url):
        return aioredis.Redis.from_url(url, **kwargs)
    scheme, rest = url.split("://", 1)
    rest = rest.split("/", 1)[0]
    if "@" in rest:
        userinfo, rest = rest.rsplit("@", 1)
        user, _, password = userinfo.partition(":")
        kwargs.setdefault("username", unquote(user) or None)
        kwargs.setdefault("password", unquote(password) or None)
    nodes = []
    for node in rest.split(","):
        host, _, port = node.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"{url}: cluster nodes are host:port, comma-separated")
        nodes.append(ClusterNode(host, int(port)))
    if scheme == "rediss+cluster":
        kwargs.setdefault("ssl", True)
    return RedisCluster(startup_nodes=nodes, **kwargs)
