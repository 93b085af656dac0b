"""The cache's commands on a Redis Cluster: each on a connection of its own to the master that
serves its key's slot, pipelined as on one server (:mod:`strata_cache.multiplex`).

Through redis-py's cluster client a command cost this process ~3x what it costs on one server
(W1 on three masters: 55 µs of CPU per operation against 16–21 on one server; BENCHMARKS.md,
"The Python client on a cluster"). Here the key's slot picks the master from redis-py's own
slot map (``get_node_from_key``), and that master's :class:`Multiplexed` connection — made
with the node's connection settings, so TLS and credentials are redis-py's — carries it.

What the map got wrong goes through redis-py's client, which follows it: a ``MOVED``,
``ASK``, ``TRYAGAIN`` or ``CLUSTERDOWN`` reply (the command did not run) is sent again there,
and redis-py follows the redirection and mends its map. A lost connection fails the commands
that waited on it — they may have run, so nothing is sent twice — and a probe through
redis-py's client (``EXISTS`` of the key, in the background, one at a time) has it notice the
loss and read the cluster's topology again, so that after a failover the next command goes to
the promoted master.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ConnectionError,
    SlotNotCoveredError,
    TryAgainError,
)

from .multiplex import Multiplexed, Script

Arg = bytes | str | int | float

#: Replies that say the command did not run where it was sent (``MovedError`` is an ``AskError``).
_REDIRECTED = (AskError, TryAgainError, ClusterDownError)

#: The least time between two probes that have redis-py look at the topology again (seconds).
_PROBE_EVERY = 0.1


class Routed:
    """Commands routed by their key's slot, each master's on one pipelined connection."""

    def __init__(self, cluster: RedisCluster) -> None:
        self._cluster = cluster
        self._links: dict[str, Multiplexed] = {}
        self._probe: asyncio.Task[None] | None = None
        self._probed = 0.0
        #: Whether redis-py's client has read the cluster's slots (it does on its first command).
        self._mapped = False

    async def execute(self, *args: Arg) -> Any:
        """Sends a command whose first argument after its name is its key (``GET``, ``SET``,
        ``UNLINK`` of one key) and returns its reply as :meth:`Multiplexed.execute` does."""
        return await self.send(args[1], args)

    def script(self, source: str) -> Script:
        """``source`` run by its SHA-1 on the master of its first key's slot."""
        return Script(self, source)

    async def send(self, key: Arg, args: Sequence[Arg]) -> Any:
        """Sends ``args`` to the master of ``key``'s slot."""
        await self._map()
        try:
            return await self._link(key).execute(*args)
        except _REDIRECTED:
            return await self._cluster.execute_command(*args, get=True)
        except ConnectionError:
            self._notice(key)
            raise

    async def pubsub(self, key: Arg) -> PubSub:
        """A pub/sub client of the master of ``key``'s slot (for its sharded channels), made
        from that node's connection settings; ``ConnectionError`` while no master serves it."""
        await self._map()
        node = self._master(key)
        pool = aioredis.ConnectionPool(
            connection_class=node.connection_class, **node.connection_kwargs
        )
        return PubSub(pool)

    async def _map(self) -> None:
        """Has redis-py's client read the cluster's slots, once (it does on its first command)."""
        if not self._mapped:
            await self._cluster.initialize()
            self._mapped = True

    def _master(self, key: Arg) -> ClusterNode:
        """The master of ``key``'s slot in redis-py's map; ``ConnectionError`` while none."""
        try:
            node: ClusterNode | None = self._cluster.get_node_from_key(key)  # type: ignore[arg-type]
        except SlotNotCoveredError as err:
            # Its master failed and no promoted replica is known yet: a failure like a lost
            # connection, and redis-py is to look again.
            self._notice(key)
            raise ConnectionError(str(err)) from None
        if node is None:  # only for a replica, which is not asked for
            raise ConnectionError(f"no master serves the slot of {key!r}")
        return node

    def _link(self, key: Arg) -> Multiplexed:
        """The connection to the master of ``key``'s slot in redis-py's map (made on first
        use); ``ConnectionError`` while no master serves it."""
        node = self._master(key)
        mux = self._links.get(node.name)
        if mux is None:
            make = node.connection_class
            kwargs = node.connection_kwargs
            mux = self._links[node.name] = Multiplexed(make_connection=lambda: make(**kwargs))
        return mux

    async def close(self) -> None:
        """Closes every connection; commands still waiting fail with ``ConnectionError``."""
        if self._probe is not None:
            self._probe.cancel()
        links, self._links = list(self._links.values()), {}
        await asyncio.gather(*(mux.close() for mux in links))

    def _notice(self, key: Arg) -> None:
        """Has redis-py's client meet the failure itself, so that it reads the topology again."""
        loop = asyncio.get_running_loop()
        if (self._probe is not None and not self._probe.done()) or (
            loop.time() - self._probed < _PROBE_EVERY
        ):
            return
        self._probed = loop.time()
        self._probe = loop.create_task(self._probe_through_redis_py(key))

    async def _probe_through_redis_py(self, key: Arg) -> None:
        with contextlib.suppress(Exception):
            await self._cluster.execute_command("EXISTS", key)
