"""A real ``redis-server`` per test session, on a free loopback port, killed at the end."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from strata_cache import HybridCache

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    def __init__(self, binary: str | None = None) -> None:
        binary = binary or shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not on PATH (./scripts/test installs it)")
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()

    def freeze(self) -> None:
        """SIGSTOP: its sockets stay open and nothing answers."""
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.process.send_signal(signal.SIGCONT)


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def ifeq_server() -> Iterator[Server]:
    """A server with ``SET … IFEQ`` (Valkey 8.1: ``STRATA_IFEQ_SERVER``, which ./scripts/test
    sets); skipped without one unless ``STRATA_REQUIRE_IFEQ`` is set."""
    binary = os.environ.get("STRATA_IFEQ_SERVER")
    if not binary:
        if os.environ.get("STRATA_REQUIRE_IFEQ"):
            raise RuntimeError("STRATA_IFEQ_SERVER is not set (./scripts/test sets it)")
        pytest.skip("no server with SET … IFEQ (set STRATA_IFEQ_SERVER)")
    s = Server(binary)
    yield s
    s.stop()


class Cluster:
    """A Redis Cluster on loopback (``scripts/redis-cluster``): 3 masters, a replica each, node
    timeout 1 s (a failover in ~2 s)."""

    def __init__(self, tmp: Path) -> None:
        self._env = {**os.environ, "STRATA_CLUSTER_DIR": str(tmp / "cluster")}
        script = str(REPO / "scripts" / "redis-cluster")
        for _ in range(20):  # six free ports in a row; another process may take one meanwhile
            # A node also listens on its port + 10,000 (the cluster bus): both below the
            # kernel's ephemeral range (32,768 on), where outgoing connections take theirs.
            base = random.randrange(15_000, 22_000)
            ports = [*range(base, base + 6), *range(base + 10_000, base + 10_006)]
            if not all(_free(p) for p in ports):
                continue
            up = [script, "up", "--port", str(base), "--node-timeout", "1000"]
            out = subprocess.run(up, env=self._env, capture_output=True)
            if out.returncode == 0:
                break
            error = out.stderr.decode().strip()
            subprocess.run([script, "down"], env=self._env, capture_output=True)
            if "is taken" not in error:
                raise RuntimeError(f"scripts/redis-cluster up: {error}")
        else:
            raise RuntimeError("no six free ports in a row for a cluster")
        self.ports = list(range(base, base + 6))
        self.url = out.stdout.decode().strip().splitlines()[-1]

    def pid(self, port: int) -> int:
        return int((Path(self._env["STRATA_CLUSTER_DIR"]) / str(port) / "redis.pid").read_text())

    def down(self) -> None:
        script = str(REPO / "scripts" / "redis-cluster")
        subprocess.run([script, "down"], env=self._env, check=False, capture_output=True)


def _free(port: int) -> bool:
    with socket.socket() as s:
        # As redis-server binds: a port some closed connection left in TIME_WAIT is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    if shutil.which("redis-cli") is None:
        pytest.skip("no redis-cli (apt-get install redis-tools)")
    c = Cluster(tmp_path)
    yield c
    c.down()


@pytest.fixture
async def redis(server: Server) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.Redis.from_url(server.url)
    await r.flushall()
    yield r
    await r.aclose()


@contextlib.asynccontextmanager
async def instances(
    url: str, namespace: str = "t", **options: Any
) -> AsyncIterator[tuple[HybridCache, HybridCache]]:
    """Two instances of ``namespace`` at ``url`` with ``options`` (a heartbeat of 0.1 s unless
    given), both closed on the way out."""
    options.setdefault("heartbeat", 0.1)
    a = await HybridCache.connect(url, namespace, **options)
    try:
        b = await HybridCache.connect(url, namespace, **options)
        try:
            yield a, b
        finally:
            await b.close()
    finally:
        await a.close()


@pytest.fixture
async def pair(
    server: Server, redis: aioredis.Redis
) -> AsyncIterator[tuple[HybridCache, HybridCache]]:
    """Two instances of namespace ``t`` on an emptied server, heartbeat 0.1 s."""
    async with instances(server.url) as both:
        yield both
