"""Start Dagster the way users do, on a test lake, and talk to it: GraphQL over loopback only.

`running_ui` starts `ml-assets ui` (webserver, daemon and code server, as `dagster dev`);
`running_webserver` starts only `dagster-webserver`. Both wait until the code location has loaded
and stop the whole process group on exit, the gRPC code server and run workers included.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ml_assets.app.runner import write_instance_config, write_workspace
from ml_assets.core.settings import CONFIG_ENV, HOME_ENV, Settings

START_TIMEOUT_S = 120.0

WORKSPACE_QUERY = """
query Workspace {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
    ... on PythonError { message }
  }
}
"""


@dataclass(frozen=True)
class Server:
    url: str
    settings: Settings
    log: Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(
    url: str, query: str, timeout: float = 30.0, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The `data` of one GraphQL request; fails the test on any GraphQL error."""
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = json.loads(response.read())
    assert not body.get("errors"), body["errors"]
    return body["data"]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the process group, escalating to SIGKILL: nothing may outlive the test."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc.poll() is None:
        proc.wait(timeout=10)


def _wait_until_ready(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    """Poll /server_info, then the workspace, until the code location has loaded (bounded)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"the server was not ready after {START_TIMEOUT_S}s:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
                if response.status == 200:
                    workspace = graphql(url, WORKSPACE_QUERY, timeout=5)["workspaceOrError"]
                    entries = workspace.get("locationEntries", [])
                    if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                        for entry in entries:
                            loaded = entry["locationOrLoadError"]
                            assert loaded["__typename"] == "RepositoryLocation", loaded
                        return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)


@contextmanager
def _serving(command: Sequence[str], settings: Settings, cwd: Path, port: int) -> Iterator[Server]:
    # the lake's own settings file only: an ambient $ML_ASSETS_CONFIG must not leak in
    env = {k: v for k, v in os.environ.items() if k != CONFIG_ENV}
    env.update(
        {HOME_ENV: str(settings.home), "DAGSTER_HOME": str(settings.dagster_home), "PYTHONUNBUFFERED": "1"}
    )
    url = f"http://127.0.0.1:{port}"
    log = cwd / f"server-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group, so teardown reaches the code server too
        )
        try:
            _wait_until_ready(proc, url, log)
            yield Server(url=url, settings=settings, log=log)
        finally:
            _stop(proc)


def _script(name: str) -> Path:
    return Path(sys.executable).with_name(name)


@contextmanager
def running_ui(settings: Settings, cwd: Path) -> Iterator[Server]:
    """`ml-assets --home HOME ui` on a free port: the webserver, the daemon and the code server."""
    port = free_port()
    command = [str(_script("ml-assets")), "--home", str(settings.home), "ui", "--port", str(port)]
    with _serving(command, settings, cwd, port) as server:
        yield server


@contextmanager
def running_webserver(settings: Settings, cwd: Path) -> Iterator[Server]:
    """`dagster-webserver` alone (no daemon) on the lake's instance and code location."""
    workspace = write_workspace(settings)
    write_instance_config(settings)
    port = free_port()
    executable = _script("dagster-webserver")
    launcher = [str(executable)] if executable.exists() else [sys.executable, "-m", "dagster_webserver"]
    command = [*launcher, "-w", str(workspace), "-h", "127.0.0.1", "-p", str(port)]
    with _serving(command, settings, cwd, port) as server:
        yield server
