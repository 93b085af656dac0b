"""Writes a Redis Cluster keeps through a failover (``docs/protocol.md`` §4): a write step is
followed, on the connection that sent it, by ``WAIT 1 <replica_wait>`` on its master when that
master has a connected replica. Replication is asynchronous otherwise, and a master killed
right after answering takes the write with it — an invalidation lost, and the promoted replica
serves the old value to every instance. ``WAIT`` counts only the writes of its own connection,
so it goes in the same pipeline as the step (redis-py sends a node's share of a pipeline on one
connection, in order). Waiting is bounded, as in the Rust crate: a replica that does not answer
in time delays the write, it does not fail it.

Which masters have a replica is read from ``CLUSTER NODES`` at most every
:data:`TOPOLOGY_FOR`, and again after a ``WAIT`` no replica answered, as the Rust crate does:
redis-py's slot map is read once and only on a redirection, and lists a replica only once the
cluster has gossiped its replication offset, so a client started beside a new cluster would
never learn of its replicas."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import NoScriptError

#: A command as ``execute_command`` takes it.
Command = tuple[Any, ...]

#: How long what ``CLUSTER NODES`` said of the replicas is taken as true (seconds).
TOPOLOGY_FOR = 5.0


def replicated_masters(nodes: Mapping[str, Mapping[str, Any]]) -> frozenset[str]:
    """The ``host:port`` of every master with a connected replica, from ``CLUSTER NODES`` as
    redis-py parses it (``{"ip:port": {"node_id", "flags", "master_id", "connected", …}}``)."""
    by_id: dict[str, list[str]] = {}
    for addr, node in nodes.items():
        port = addr.rpartition(":")[2]
        names = [addr] + ([f"{node['hostname']}:{port}"] if node.get("hostname") else [])
        by_id[node["node_id"]] = names
    masters: set[str] = set()
    for node in nodes.values():
        flags = set(node["flags"].split(","))
        if "slave" in flags and node["connected"] and not flags & {"fail", "fail?", "noaddr"}:
            masters.update(by_id.get(node["master_id"], ()))
    return frozenset(masters)


class Replicated:
    """The cluster's writes, each confirmed by a replica of its master where there is one."""

    def __init__(self, redis: RedisCluster, wait: float, scripts: Mapping[str, str]) -> None:
        self._redis = redis
        self._wait_ms = max(1, round(wait * 1000))
        self._shas = {
            name: hashlib.sha1(body.encode()).hexdigest() for name, body in scripts.items()
        }
        self._bodies = {self._shas[name]: body for name, body in scripts.items()}
        self._masters: frozenset[str] = frozenset()
        self._fresh_until = 0.0
        self._reading = asyncio.Lock()

    def script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Command:
        """A protocol script as a step (by its SHA1; its text if the master lacks it)."""
        return ("EVALSHA", self._shas[name], len(keys), *keys, *args)

    def master(self, key: str | bytes) -> ClusterNode | None:
        """The master of ``key``'s slot as redis-py last saw it; ``None`` if none is known —
        the write itself then meets the error."""
        nodes = self._redis.nodes_manager.slots_cache.get(self._redis.keyslot(key))
        return nodes[0] if nodes else None

    def same_master(self, a: str | bytes, b: str | bytes) -> bool:
        """Whether ``a`` and ``b`` live on one master (one connection carries both)."""
        master = self.master(a)
        return master is not None and master is self.master(b)

    async def write(self, steps: Sequence[Command], wait_on: str | bytes) -> list[Any]:
        """Runs ``steps`` in order on one connection to ``wait_on``'s master — every key they
        touch lives there — then waits there for a replica, if it has one; their replies. A
        script goes last (its text follows if the master did not have it)."""
        if not steps:
            return []
        master = self.master(wait_on)
        if master is not None and master.name not in await self._replicated():
            master = None
        pending = list(steps)
        replies: list[Any] = []
        while True:
            pipe = self._redis.pipeline()
            for step in pending:
                pipe.execute_command(*step)
            if master is not None:
                pipe.execute_command("WAIT", 1, self._wait_ms, target_nodes=master)
            out = await pipe.execute(raise_on_error=False)
            for i, reply in enumerate(out[: len(pending)]):
                if not isinstance(reply, Exception):
                    continue
                if isinstance(reply, NoScriptError) and i == len(pending) - 1:
                    replies += out[:i]
                    _, sha, *rest = pending[i]
                    pending = [("EVAL", self._bodies[sha], *rest)]
                    break
                raise reply
            else:
                replies += out[: len(pending)]
                if master is not None and out[-1] == 0:
                    # The replica lags or is gone: look again before the next write.
                    self._fresh_until = 0.0
                return replies

    async def _replicated(self) -> frozenset[str]:
        """The masters with a connected replica, as of at most :data:`TOPOLOGY_FOR` ago."""
        if time.monotonic() < self._fresh_until:
            return self._masters
        async with self._reading:
            if time.monotonic() >= self._fresh_until:
                self._masters = replicated_masters(await self._redis.cluster_nodes())
                self._fresh_until = time.monotonic() + TOPOLOGY_FOR
        return self._masters
