"""A real ``redis-server`` per test session, on a free loopback port, killed at the end."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

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


@pytest.fixture
async def redis(server: Server) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.Redis.from_url(server.url)
    await r.flushall()
    yield r
    await r.aclose()
