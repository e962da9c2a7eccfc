"""The engine setting: player_state, player_features and predictions as player-shard tasks write the
same tables as the local engine, in process (three shards, no Ray) and on a real Ray cluster."""

from __future__ import annotations

import zlib
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ml_assets.core.settings import Settings, load_settings
from ml_assets.engine.engines import LocalEngine, RayEngine, engine_for
from ml_assets.engine.shards import in_shard, shard_of
from ml_assets_tests.conftest import data_checks_passed, make_lake, read_table, run_graph

SETTINGS = """
[models.churn]
label = "rolling"
horizon_days = 14
tuning_trials = 0
"""
FIRST, LAST = "2025-01-01", "2025-02-14"
SHARDED = ["player_state", "player_features", "churn_predictions"]
TABLES = {
    "player_state": "state_date",
    "player_features": "snapshot_date",
    "churn_predictions": "snapshot_date",
}


def _tables(settings: Settings) -> dict[str, pl.DataFrame]:
    out = {}
    for name, column in TABLES.items():
        frame = read_table(settings, name)
        out[name] = frame.select(sorted(frame.columns)).sort(column, "player_id")
    return out


@pytest.fixture(scope="module")
def local_lake(tmp_path_factory: pytest.TempPathFactory):
    """A lake built by the local engine (the whole graph), its tables, and its instance."""
    home = tmp_path_factory.mktemp("lake") / "home"
    settings = make_lake(home, players=300, days=45, settings=SETTINGS)
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_graph(settings, instance, FIRST, LAST)
        assert result.success and data_checks_passed(result)
        tables = _tables(settings)
        assert tables["churn_predictions"]["reason_1"].is_not_null().sum() > 100
        yield settings, instance, tables


def _rerun_with(settings: Settings, instance: dg.DagsterInstance, engine: str) -> dg.JobExecutionResult:
    (settings.home / "ml_assets.toml").write_text(SETTINGS + engine)
    try:
        result = run_graph(load_settings(settings.home), instance, FIRST, LAST, SHARDED)
    finally:
        (settings.home / "ml_assets.toml").write_text(SETTINGS)
    assert result.success and data_checks_passed(result)
    return result


def _assert_same_tables(settings: Settings, expected: dict[str, pl.DataFrame]) -> None:
    got = _tables(settings)
    for name, frame in expected.items():
        assert got[name].height == frame.height > 0, name
        assert_frame_equal(got[name], frame, check_exact=True)


def _shard_metadata(result: dg.JobExecutionResult, asset: str) -> dict:
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        if materialization.asset_key.to_user_string() == asset and "shards" in materialization.metadata:
            return {k: v.value for k, v in materialization.metadata.items()}
    raise AssertionError(f"no shard metadata on {asset}")


def test_a_player_always_lands_in_the_same_shard():
    # CRC-32 is a fixed standard: these values hold on any machine and any Polars version
    assert [shard_of(p, 4) for p in ("p1", "p2", "player-0042")] == [
        zlib.crc32(p.encode()) % 4 for p in ("p1", "p2", "player-0042")
    ]
    assert shard_of("p1", 4) == 3 and shard_of("player-0042", 7) == zlib.crc32(b"player-0042") % 7
    frame = pl.LazyFrame({"player_id": [f"p{i % 50}" for i in range(500)], "n": range(500)})
    parts = [in_shard(frame, s, 3).collect() for s in range(3)]
    assert sum(p.height for p in parts) == 500
    assert all(shard_of(pid, 3) == s for s, p in enumerate(parts) for pid in p["player_id"])
    # each shard keeps its rows in their order (a player's last attributes depend on it)
    assert all(p["n"].is_sorted() for p in parts)


def test_the_engine_comes_from_settings(tmp_path: Path):
    (tmp_path / "ml_assets.toml").write_text('[engine]\nkind = "ray"\naddress = "auto"\nshards = 8\n')
    assert engine_for(load_settings(tmp_path).engine) == RayEngine("auto", 8)
    assert engine_for(load_settings(tmp_path / "none").engine) == LocalEngine()


def test_sharded_steps_in_process_write_the_local_engine_tables(local_lake, monkeypatch):
    settings, instance, expected = local_lake
    # the sharded path without Ray: three shards one after another in this process
    monkeypatch.setattr(
        "ml_assets.defs.resources.engine_for", lambda _: LocalEngine(shards=3, distributed=True)
    )
    result = _rerun_with(settings, instance, "")
    _assert_same_tables(settings, expected)
    meta = _shard_metadata(result, "player_features")
    assert meta["shards"] == 3 and all(rows > 0 for rows in meta["shard_rows"])


def test_ray_engine_writes_the_local_engine_tables(local_lake, ray_cluster):
    settings, instance, expected = local_lake
    engine = f'\n[engine]\nkind = "ray"\naddress = "{ray_cluster}"\nshards = 3\n'
    result = _rerun_with(settings, instance, engine)
    _assert_same_tables(settings, expected)
    for asset in SHARDED:
        meta = _shard_metadata(result, asset)
        assert meta["engine"] == "RayEngine" and len(meta["shard_seconds"]) == 3, asset


def test_a_failed_ray_task_fails_with_its_own_error(ray_cluster):
    # shard 0 computes crc32 % 0: the task's ZeroDivisionError reaches the caller (and fails the step)
    with pytest.raises(ZeroDivisionError):
        RayEngine(ray_cluster, shards=2).map_shards(shard_of, "p1")
