"""The Dagster UI serves this project's graph: every asset, every check, the landed days as partitions.

Starts `dagster-webserver -m ml_assets.definitions` on a tiny landed lake (nothing materialized)
and asks its GraphQL API, over loopback only, what it loaded.
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
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from ml_assets.app.runner import CODE_LOCATION, execute, write_workspace
from ml_assets.core.events.landing import write_batch
from ml_assets.core.settings import CONFIG_ENV, HOME_ENV, Settings, load_settings
from ml_assets.definitions import build_definitions

EXPECTED_ASSETS = {
    "raw_events",
    "clean_events",
    "quarantined_events",
    "player_features",
    *[
        f"{m}_{part}"
        for m in ("churn", "first_purchase")
        for part in ("training_set", "model", "production_model", "predictions")
    ],
}
DAYS = [date(2025, 3, 1), date(2025, 3, 2), date(2025, 3, 3)]
START_TIMEOUT_S = 90.0

ASSET_NODES_QUERY = """
query AssetNodes {
  assetNodes {
    assetKey { path }
    isPartitioned
    partitionDefinition { type }
    partitionKeysByDimension { name partitionKeys }
    assetChecksOrError {
      __typename
      ... on AssetChecks { checks { name assetKey { path } } }
      ... on Error { message }
    }
  }
}
"""

JOB_RUNS_QUERY = """
query JobRuns($selector: PipelineSelector!) {
  pipelineOrError(params: $selector) {
    __typename
    ... on Pipeline { runs { runId } }
  }
}
"""

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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _events() -> pl.DataFrame:
    """Six events over three days from two players."""
    times = [datetime(d.year, d.month, d.day, hour, tzinfo=UTC) for d in DAYS for hour in (9, 17)]
    return pl.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(len(times))],
            "player_id": ["p1", "p2"] * len(DAYS),
            "event_time": times,
            "event_type": ["session_start", "purchase"] * len(DAYS),
            "value": [0.0, 4.99] * len(DAYS),
            "received_date": [t.date() for t in times],
        }
    )


def _graphql(
    url: str, query: str, timeout: float = 30.0, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
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
    """Terminate the webserver and its code-server child (own process group), escalating to SIGKILL."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    # the group may outlive its leader (the gRPC code server): make sure nothing is left behind
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
            pytest.fail(f"dagster-webserver exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"dagster-webserver not ready after {START_TIMEOUT_S}s:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
                if response.status == 200:
                    workspace = _graphql(url, WORKSPACE_QUERY, timeout=5)["workspaceOrError"]
                    entries = workspace.get("locationEntries", [])
                    if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                        for entry in entries:
                            loaded = entry["locationOrLoadError"]
                            assert loaded["__typename"] == "RepositoryLocation", loaded
                        return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("webserver")
    home = root / "lake"
    # an explicit (absent) config file: the ambient $ML_ASSETS_CONFIG must not leak into this lake
    settings = load_settings(home, home / "ml_assets.toml")
    assert write_batch(settings.landing_dir, _events(), "batch-1", "test_webserver")
    # started as `ml-assets ui` starts it: the lake's instance, the code location named "ml_assets"
    workspace = write_workspace(settings)
    dagster_home = settings.dagster_home
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")

    env = {k: v for k, v in os.environ.items() if k != CONFIG_ENV}
    env.update({HOME_ENV: str(home), "DAGSTER_HOME": str(dagster_home), "PYTHONUNBUFFERED": "1"})
    executable = Path(sys.executable).with_name("dagster-webserver")
    launcher = [str(executable)] if executable.exists() else [sys.executable, "-m", "dagster_webserver"]
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = root / "webserver.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*launcher, "-w", str(workspace), "-h", "127.0.0.1", "-p", str(port)],
            cwd=root,
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


@pytest.fixture(scope="module")
def expected_defs(server: Server) -> dg.Definitions:
    return build_definitions(server.settings)


@pytest.fixture(scope="module")
def asset_nodes(server: Server) -> dict[str, dict[str, Any]]:
    nodes = _graphql(server.url, ASSET_NODES_QUERY)["assetNodes"]
    by_key = {dg.AssetKey(n["assetKey"]["path"]).to_user_string(): n for n in nodes}
    assert len(by_key) == len(nodes), "an asset key appears twice"
    return by_key


def test_ui_serves_exactly_the_defined_assets(asset_nodes, expected_defs):
    expected = {k.to_user_string() for k in expected_defs.resolve_asset_graph().get_all_asset_keys()}
    assert EXPECTED_ASSETS <= expected
    assert set(asset_nodes) == expected


def test_ui_serves_every_asset_check(asset_nodes, expected_defs):
    expected = {
        (k.asset_key.to_user_string(), k.name) for k in expected_defs.resolve_asset_graph().asset_check_keys
    }
    assert expected, "the definitions declare asset checks"
    served = set()
    for key, node in asset_nodes.items():
        checks = node["assetChecksOrError"]
        assert checks["__typename"] == "AssetChecks", checks
        for c in checks["checks"]:
            assert dg.AssetKey(c["assetKey"]["path"]).to_user_string() == key
            served.add((key, c["name"]))
    assert served == expected


def test_partitioned_assets_span_the_landed_days(asset_nodes, expected_defs):
    graph = expected_defs.resolve_asset_graph()
    partitioned = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).is_partitioned}
    assert partitioned, "some assets are daily partitioned"
    assert {k for k, n in asset_nodes.items() if n["isPartitioned"]} == partitioned
    for key in partitioned:
        node = asset_nodes[key]
        assert node["partitionDefinition"]["type"] == "TIME_WINDOW", key
        (dimension,) = node["partitionKeysByDimension"]
        assert dimension["partitionKeys"] == [d.isoformat() for d in DAYS], key


def test_cli_runs_show_on_the_job_page(server):
    """A run the CLI makes in process is listed on the all_assets job's page, like a UI launch."""
    instance = dg.DagsterInstance.from_config(str(server.settings.dagster_home))
    result = execute(server.settings, instance, ["raw_events"])
    assert result.success
    selector = {
        "repositoryLocationName": CODE_LOCATION,
        "repositoryName": "__repository__",
        "pipelineName": "all_assets",
    }
    job = _graphql(server.url, JOB_RUNS_QUERY, variables={"selector": selector})["pipelineOrError"]
    assert job["__typename"] == "Pipeline", job
    assert result.run_id in {r["runId"] for r in job["runs"]}
