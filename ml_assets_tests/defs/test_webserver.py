"""The Dagster UI serves this project's graph: every asset, every check, the landed days as partitions.

Starts `dagster-webserver -m ml_assets.definitions` on a tiny landed lake (nothing materialized)
and asks its GraphQL API, over loopback only, what it loaded.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import dagster as dg
import polars as pl
import pytest

from ml_assets.app.runner import CODE_LOCATION, execute
from ml_assets.core.events.landing import write_batch
from ml_assets.core.settings import load_settings
from ml_assets.definitions import build_definitions
from ml_assets_tests.service import Server, graphql, running_webserver

EXPECTED_ASSETS = {
    "raw_events",
    "clean_events",
    "quarantined_events",
    "event_type_counts",
    "player_state",
    "player_features",
    *[
        f"{m}_{part}"
        for m in ("churn", "first_purchase")
        for part in ("training_set", "model", "production_model", "predictions")
    ],
}
DAYS = [date(2025, 3, 1), date(2025, 3, 2), date(2025, 3, 3)]

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

RUN_ORIGIN_QUERY = """
query RunOrigin($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { pipelineName repositoryOrigin { repositoryLocationName repositoryName } }
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


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("webserver")
    home = root / "lake"
    # an explicit (absent) config file: the ambient $ML_ASSETS_CONFIG must not leak into this lake
    settings = load_settings(home, home / "ml_assets.toml")
    assert write_batch(settings.landing_uri, _events(), "batch-1", "test_webserver")
    # the lake's instance, the code location named "ml_assets", as `ml-assets ui` serves them
    with running_webserver(settings, root) as server:
        yield server


@pytest.fixture(scope="module")
def expected_defs(server: Server) -> dg.Definitions:
    return build_definitions(server.settings)


@pytest.fixture(scope="module")
def asset_nodes(server: Server) -> dict[str, dict[str, Any]]:
    nodes = graphql(server.url, ASSET_NODES_QUERY)["assetNodes"]
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


def test_cli_runs_show_on_the_job_page_and_the_timeline(server):
    """A run the CLI makes in process is listed on the all_assets job's page, like a UI launch, and
    carries the repository origin the Timeline files runs under (it drops runs without one)."""
    instance = dg.DagsterInstance.from_config(str(server.settings.dagster_home))
    result = execute(server.settings, instance, ["raw_events"])
    assert result.success
    selector = {
        "repositoryLocationName": CODE_LOCATION,
        "repositoryName": "__repository__",
        "pipelineName": "all_assets",
    }
    job = graphql(server.url, JOB_RUNS_QUERY, variables={"selector": selector})["pipelineOrError"]
    assert job["__typename"] == "Pipeline", job
    assert result.run_id in {r["runId"] for r in job["runs"]}
    run = graphql(server.url, RUN_ORIGIN_QUERY, variables={"runId": result.run_id})["runOrError"]
    assert run["__typename"] == "Run", run
    assert run["repositoryOrigin"]["repositoryLocationName"] == CODE_LOCATION
    assert run["repositoryOrigin"]["repositoryName"] == "__repository__"
    assert run["pipelineName"] == "all_assets"
