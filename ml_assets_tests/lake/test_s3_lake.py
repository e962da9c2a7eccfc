"""The lake on an S3 API: a real S3-compatible server (moto's server mode, its own process) holds the
Delta tables, the landing batches and the model store; writers on several processes share it with
conditional-put commits and no lock service."""

from __future__ import annotations

import multiprocessing
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable, write_deltalake

from ml_assets.core.events.landing import DataWindow, extend_window, list_batches, read_window, write_batch
from ml_assets.core.settings import load_settings
from ml_assets.lake.files import folder
from ml_assets.lake.model_store import ModelStore
from ml_assets.lake.tables import EVENT_TABLES, table_uri
from ml_assets.simulator.game import SimulationParams, simulate
from ml_assets_tests.conftest import data_checks_passed, run_graph
from ml_assets_tests.s3 import S3Server, s3_server

START = date(2025, 1, 1)
DAYS = 30
MODEL = """
[models.churn]
label = "rolling"
horizon_days = 7
tuning_trials = 0
"""


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    with s3_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


def test_the_whole_graph_runs_on_an_s3_lake_with_its_landing_and_model_store(
    s3: S3Server, tmp_path, instance
):
    home = tmp_path / "home"
    home.mkdir()
    (home / "ml_assets.toml").write_text(f'[lake]\nuri = "{s3.uri("studio")}"\n{MODEL}')
    settings = load_settings(home)
    assert settings.landing_uri == s3.uri("studio/_landing")
    simulate(settings.landing_uri, SimulationParams(players=150, days=DAYS, start=START, seed=5))
    last = (START + timedelta(days=DAYS - 1)).isoformat()

    result = run_graph(settings, instance, START.isoformat(), last)
    assert result.success and data_checks_passed(result)

    stored = {e.name.split("/")[0] for e in folder(settings.lake_uri).list(recursive=True)}
    assert {
        "_landing",
        "_models",
        "raw_events",
        "clean_events",
        "player_features",
        "churn_predictions",
    } <= stored
    # the home keeps only settings and the Dagster instance: nothing of the lake is on local disk
    assert not any((home / name).exists() for name in ("lake", "landing", "models"))
    raw = pl.scan_delta(table_uri(settings.lake_uri, "raw_events")).select(pl.len()).collect().item()
    clean = pl.scan_delta(table_uri(settings.lake_uri, "clean_events")).select(pl.len()).collect().item()
    quarantined = pl.scan_delta(table_uri(settings.lake_uri, "quarantined_events")).select(pl.len())
    assert raw == clean + quarantined.collect().item() > 0
    registry = pl.read_delta(table_uri(settings.lake_uri, "model_registry"))
    version = registry["version"][0]
    model = ModelStore(settings.models_uri).load("churn", version)
    predictions = pl.read_delta(table_uri(settings.lake_uri, "churn_predictions"))
    assert predictions.height > 0 and set(predictions["model_version"]) == {model.version}

    # a rerun of the same days replaces them (one commit each) instead of adding rows
    features = table_uri(settings.lake_uri, "player_features")
    rows_before = pl.scan_delta(features).select(pl.len()).collect().item()
    version_before = DeltaTable(features).version()
    again = run_graph(
        settings,
        instance,
        START.isoformat(),
        last,
        select=list(EVENT_TABLES),  # the event and feature tables
    )
    assert again.success
    assert pl.scan_delta(features).select(pl.len()).collect().item() == rows_before
    assert DeltaTable(features).version() == version_before + 1


def _write_concurrently(table: str, landing: str, writer: int, rounds: int) -> None:
    """One writer's share: Delta appends, window widenings and landing batches, interleaved."""
    for i in range(rounds):
        write_deltalake(table, pl.DataFrame({"writer": [writer], "seq": [i]}).to_arrow(), mode="append")
        day = date(2025, 1 + writer, 1) + timedelta(days=i)
        extend_window(landing, DataWindow(day, day))
        event = {"event_id": [f"{writer}-{i}"], "player_id": ["p"], "received_date": [day]}
        write_batch(landing, pl.DataFrame(event), f"w{writer}-{i}", "test")


def test_two_concurrent_writers_never_lose_a_commit(s3: S3Server):
    table, landing = s3.uri("concurrent/table"), s3.uri("concurrent/_landing")
    write_deltalake(table, pl.DataFrame({"writer": [-1], "seq": [-1]}).to_arrow())
    rounds = 12
    # two processes (spawned: delta-rs' runtime does not survive a fork), no lock between them
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_write_concurrently, args=(table, landing, w, rounds)) for w in (0, 1)]
    for p in writers:
        p.start()
    for p in writers:
        p.join(timeout=180)
    assert [p.exitcode for p in writers] == [0, 0]

    # Delta: every commit has its own log entry (a conditional put), none overwrote another
    assert DeltaTable(table).version() == 2 * rounds
    rows = pl.read_delta(table).filter(pl.col("writer") >= 0)
    assert rows.sort("writer", "seq").rows() == [(w, s) for w in (0, 1) for s in range(rounds)]
    # the window file (compare-and-swap): neither writer narrowed what the other widened
    assert read_window(landing) == DataWindow(date(2025, 1, 1), date(2025, 2, rounds))
    assert len(list_batches(landing)) == 2 * rounds
    # a batch is created once: landing it again (a retry, another writer) adds nothing
    again = {"event_id": ["0-0"], "player_id": ["p"], "received_date": [date(2025, 1, 1)]}
    assert write_batch(landing, pl.DataFrame(again), "w0-0", "test") is False


def test_an_object_store_lake_without_the_s3_extra_names_the_install(monkeypatch, tmp_path: Path):
    import builtins

    real_import = builtins.__import__

    def no_obstore(name, *args, **kwargs):
        if name.startswith("obstore"):
            raise ModuleNotFoundError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_obstore)
    with pytest.raises(ModuleNotFoundError, match=r"pip install -e '\.\[s3\]'"):
        folder("s3://bucket/lake")


def test_the_collector_lands_on_the_s3_lake_and_remembers_its_ids_after_a_restart(s3: S3Server, tmp_path):
    from ml_assets.serving.collector import Collector
    from ml_assets_tests.serving.test_collector import NOW, event

    landing = s3.uri("collected/_landing")
    collector = Collector(landing, tmp_path / "spool", clock=lambda: NOW)
    try:
        assert collector.accept([event(1), event(2)]).accepted == 2
        assert collector.roll() == 2
    finally:
        collector.close()
    [batch] = list_batches(landing)
    assert sorted(pl.read_parquet(batch.uri)["event_id"]) == sorted(
        [event(1)["event_id"], event(2)["event_id"]]
    )
    # the dedup memory is rebuilt from the landing batches in the bucket
    restarted = Collector(landing, tmp_path / "spool", clock=lambda: NOW)
    try:
        assert restarted.accept([event(1)]).accepted == 0
    finally:
        restarted.close()
