"""Fixtures of the online half: a real redis-server on a loopback port."""

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from ml_assets_tests.conftest import require


@dataclass
class RedisServer:
    url: str
    process: subprocess.Popen

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)  # a frozen server must run to die cleanly
            self.process.kill()
            self.process.wait(timeout=5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, no persistence; killed at teardown."""
    exe = shutil.which("redis-server")
    if exe is None:
        require(False, "redis-server", "sudo apt-get install redis-server")
    port = _free_port()
    log_path = tmp_path / "redis.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            + ["--dir", str(tmp_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = RedisServer(f"redis://127.0.0.1:{port}/0", process)
    try:
        client = redis.Redis.from_url(server.url, socket_timeout=0.2, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 5
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"redis-server did not start: {log_path.read_text()}")
                time.sleep(0.01)
        client.close()
        yield server
    finally:
        server.stop()
