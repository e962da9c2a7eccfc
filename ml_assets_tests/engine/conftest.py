"""A real local Ray cluster: a head and one worker node, each `ray start --block` in its own process
group, started from the venv's `ray` CLI in a temp dir and killed (group and all) at teardown. It
uses Ray's token authentication with a token of its own, in the environment only: Ray otherwise
reads, or for a new local cluster writes, ~/.ray/auth_token."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ml_assets.engine.engines import RAY_INSTALL
from ml_assets_tests.conftest import require
from ml_assets_tests.service import free_port

START_TIMEOUT_S = 60.0


def _ray_cli() -> Path:
    """The `ray` CLI of this interpreter's environment (the venv), not whatever is on PATH."""
    return Path(sys.executable).parent / "ray"


def _listening(port: int) -> bool:
    """Whether the head's GCS accepts connections yet (a `ray status` per poll costs seconds)."""
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        # --block keeps `ray start` as the parent of the node's daemons, all in this new process group
        return subprocess.Popen(
            [str(_ray_cli()), "start", "--block", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the node's process group: SIGTERM makes a node drain for up to 30 s, and the test
    cluster's state is thrown away anyway."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """The cluster's address (host:port of its GCS), with two alive nodes of one CPU each."""
    with pytest.MonkeyPatch.context() as env:
        # the nodes inherit it; the driver (this process) connects with it
        env.setenv("RAY_AUTH_MODE", "token")
        env.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
        try:
            import ray
            from ray._private.authentication_test_utils import reset_auth_token_state
        except ImportError:
            ray = None
        require(ray is not None and _ray_cli().exists(), "Ray", RAY_INSTALL)
        assert ray is not None
        # Ray caches the auth mode and token per process: Ray's own test helper re-reads them
        reset_auth_token_state()
        # a short folder of its own: Ray's unix sockets live under it, and a socket path is limited to
        # 107 bytes (pytest's tmp paths under a worker of pytest-xdist are longer)
        tmp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
        try:
            yield from _cluster(ray, tmp)
        finally:
            reset_auth_token_state()
            shutil.rmtree(tmp, ignore_errors=True)


def _cluster(ray: Any, tmp: Path) -> Iterator[str]:
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus=1", "--object-store-memory=100000000", "--disable-usage-stats"]
    head = _start(
        [
            "--head",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            f"--ray-client-server-port={free_port()}",
            "--include-dashboard=false",
            f"--temp-dir={tmp}",
            *common,
        ],
        tmp / "head.log",
    )
    nodes = [head]
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _listening(port):
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Ray head did not start:\n{(tmp / 'head.log').read_text()[-4000:]}")
            time.sleep(0.5)
        worker = _start([f"--address={address}", "--node-ip-address=127.0.0.1", *common], tmp / "worker.log")
        nodes.append(worker)
        ray.init(address=address, log_to_driver=False, configure_logging=False)
        while sum(n["Alive"] for n in ray.nodes()) < 2:
            if worker.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Ray worker did not join:\n{(tmp / 'worker.log').read_text()[-4000:]}")
            time.sleep(0.2)
        yield address
    finally:
        ray.shutdown()
        for proc in reversed(nodes):
            _kill(proc)
