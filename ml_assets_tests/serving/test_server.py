"""`ml-assets serve` on a lake the graph built: the HTTP contract, online scores equal to batch scores,
hot reload with notifications, A/B and shadow splits, the warm path, and the fallback when the
online store is down. The app runs in process (FastAPI's TestClient), its threads and all."""

import dataclasses
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from fastapi.testclient import TestClient

from ml_assets.core.events.landing import read_window
from ml_assets.core.features.snapshots import player_features
from ml_assets.core.models.registry import Registry
from ml_assets.core.settings import Settings, load_settings
from ml_assets.defs.online import ONLINE_FEATURES
from ml_assets.lake.model_store import ModelStore
from ml_assets.lake.tables import CLEAN_EVENTS, MODEL_REGISTRY, SERVED_PREDICTIONS, model_assets, table_uri
from ml_assets.serving.app import API_KEYS_ENV, create_app
from ml_assets.serving.online_store import SqliteOnlineStore, open_store
from ml_assets.serving.traffic import Traffic, arm_version, write_override
from ml_assets.serving.warm import WarmPath
from ml_assets_tests.conftest import TEST_SETTINGS, make_lake, read_table, run_graph

KEY = {"X-API-Key": "test-key"}
SERVING = """
[serving]
api_keys = ["test-key"]
reload_seconds = 0.2
warm_seconds = 3600
log_flush_seconds = 3600
breaker_failures = 2
breaker_reset_seconds = 60
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Settings:
    """A lake with both models trained and promoted, and online_features written by the graph."""
    home = tmp_path_factory.mktemp("served") / "home"
    settings = make_lake(home, players=300, days=45, settings=TEST_SETTINGS + SERVING)
    window = read_window(settings.landing_uri)
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_graph(settings, instance, str(window.first_day), str(window.last_day))
    assert result.success
    return settings


@pytest.fixture
def lake(built, tmp_path) -> Settings:
    """A private copy of the built lake: servers write to it."""
    home = tmp_path / "home"
    shutil.copytree(built.home, home)
    return load_settings(home)


def newest_features(settings: Settings) -> pl.DataFrame:
    features = read_table(settings, "player_features")
    return features.filter(pl.col("snapshot_date") == features["snapshot_date"].max())


def test_online_features_asset_holds_each_players_newest_vector(built):
    store = SqliteOnlineStore(built.serving_dir / "online_features.sqlite", ttl_seconds=1e9)
    newest = newest_features(built)
    rows = store.get(newest["player_id"].to_list())
    assert len(rows) == newest.height
    one = newest.row(0, named=True)
    stored = rows[one["player_id"]]
    assert stored.as_of == one["snapshot_date"] and stored.source == "batch"
    assert stored.features["events_total"] == one["events_total"]
    assert ONLINE_FEATURES == "online_features"


def test_the_collector_contract(lake):
    with TestClient(create_app(lake, warm=False)) as client:
        now = datetime.now(UTC).isoformat()
        events = [
            {"event_id": f"c{i}", "player_id": "p1", "event_time": now, "event_type": "x"} for i in range(3)
        ]
        assert client.post("/v1/events", json={"events": events}).status_code == 401
        assert (
            client.post("/v1/events", json={"events": events}, headers={"X-API-Key": "nope"}).status_code
            == 401
        )
        ok = client.post("/v1/events", json={"events": events}, headers=KEY)
        assert ok.status_code == 200 and ok.json() == {"accepted": 3, "duplicates": 0}
        retry = client.post("/v1/events", json=events, headers={"Authorization": "Bearer test-key"})
        assert retry.status_code == 200 and retry.json() == {"accepted": 0, "duplicates": 3}
        mixed = client.post("/v1/events", json={"events": [events[0], {"event_id": "z"}]}, headers=KEY)
        assert mixed.status_code == 400
        assert mixed.json()["rejected"] == [{"index": 1, "event_id": "z", "reason": "missing_player_id"}]
        too_many = [{**events[0], "event_id": f"m{i}"} for i in range(2001)]
        assert client.post("/v1/events", json={"events": too_many}, headers=KEY).status_code == 413
        big = [{**events[0], "properties": {"blob": "x" * 99_000}, "event_id": f"b{i}"} for i in range(11)]
        assert client.post("/v1/events", json={"events": big}, headers=KEY).status_code == 413
        assert client.post("/v1/events", content=b"{not json", headers=KEY).status_code == 400
    # a clean stop lands the spool: the graph's landing sensor sees one collector batch
    landed = pl.read_parquet(sorted(Path(lake.landing_uri).glob("collector-*.parquet")))
    assert sorted(landed["event_id"]) == ["c0", "c1", "c2"]


def test_online_scores_are_the_batch_scores_of_the_same_features(lake):
    predictions = read_table(lake, model_assets("churn").predictions)
    newest = predictions.filter(pl.col("snapshot_date") == predictions["snapshot_date"].max())
    explained = newest.filter(pl.col("reason_1").is_not_null()).head(20)
    assert explained.height > 0
    with TestClient(create_app(lake, warm=False)) as client:
        body = client.post(
            "/v1/predict/churn", json={"player_ids": explained["player_id"].to_list()}, headers=KEY
        )
        assert body.status_code == 200
        served = {p["player_id"]: p for p in body.json()["predictions"]}
        for row in explained.iter_rows(named=True):
            got = served[row["player_id"]]
            assert got["source"] == "online" and got["arm"] == "production"
            assert got["version"] == row["model_version"]
            assert got["probability"] == pytest.approx(row["probability"], abs=1e-6)
            assert got["reasons"][0]["feature"] == row["reason_1"]
            assert got["features_as_of"] == row["snapshot_date"].isoformat()
        assert client.post("/v1/predict/nope", json={"player_id": "x"}, headers=KEY).status_code == 404
        assert client.post("/v1/predict/churn", json={"player_id": "x"}).status_code == 401
        unknown = client.post("/v1/predict/churn", json={"player_id": "never-seen"}, headers=KEY).json()
        assert "error" in unknown["predictions"][0]


def _second_version(lake: Settings, model: str, register: bool = True) -> str:
    """Store (and register) a copy of the production version under a new version id."""
    registry = Registry(table_uri(lake.lake_uri, MODEL_REGISTRY))
    store = ModelStore(lake.models_uri)
    current = store.load(model, registry.current(model))
    copy = dataclasses.replace(current, version=current.version + "b")
    store.save(copy)
    if register:
        registry.register(model, copy.version, "test", "a second version")
    return copy.version


def test_a_promotion_is_served_within_seconds_and_pushed_to_subscribers(lake):
    registry = Registry(table_uri(lake.lake_uri, MODEL_REGISTRY))
    old = registry.current("churn")
    new = _second_version(lake, "churn")
    player = newest_features(lake)["player_id"][0]
    with TestClient(create_app(lake, warm=False)) as client:
        with client.websocket_connect("/v1/models/ws", headers=KEY) as socket:
            registry.set_stage("churn", new, "production", "test", "hot reload")
            message = socket.receive_json()
        assert message["model"] == "churn" and message["version"] in (old, new)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            got = client.post("/v1/predict/churn", json={"player_id": player}, headers=KEY).json()
            if got["predictions"][0]["version"] == new:
                break
            time.sleep(0.1)
        assert got["predictions"][0]["version"] == new
        assert client.get("/readyz").json()["models"]["churn"]["production"] == new


def test_ab_split_by_stable_hash_and_shadow_logged_not_served(lake):
    candidate = _second_version(lake, "churn")
    shadow = _second_version(lake, "first_purchase")
    path = lake.serving_dir / "traffic.json"
    write_override(path, "churn", Traffic(arms={candidate: 0.5}))
    write_override(path, "first_purchase", Traffic(shadow=shadow))
    players = newest_features(lake)["player_id"].to_list()[:200]
    with TestClient(create_app(lake, warm=False)) as client:
        first = client.post("/v1/predict/churn", json={"player_ids": players}, headers=KEY).json()[
            "predictions"
        ]
        again = client.post("/v1/predict/churn", json={"player_ids": players}, headers=KEY).json()[
            "predictions"
        ]
        fp = client.post("/v1/predict/first_purchase", json={"player_ids": players}, headers=KEY).json()
        app_server = client.app.state.server
        app_server.log.flush()
    arms = {p["player_id"]: (p["arm"], p["version"]) for p in first}
    assert arms == {p["player_id"]: (p["arm"], p["version"]) for p in again}
    for player, (arm, version) in arms.items():
        expected = arm_version("churn", player, Traffic(arms={candidate: 0.5}))
        assert (arm == "candidate") == (expected == candidate) and (version == candidate) == (
            arm == "candidate"
        )
    share = sum(a == "candidate" for a, _ in arms.values()) / len(arms)
    assert 0.35 < share < 0.65
    assert all(p["version"] != shadow for p in fp["predictions"])
    log = read_table(lake, SERVED_PREDICTIONS)
    shadowed = log.filter(pl.col("arm") == "shadow")
    assert set(shadowed["version"]) == {shadow} and shadowed.height == len(players)
    assert log.filter(pl.col("model") == "churn").height == 2 * len(players)


def test_the_warm_path_gives_todays_features_as_a_full_recompute_would(lake):
    player = newest_features(lake)["player_id"][0]
    now = datetime.now(UTC).replace(microsecond=0)
    events = [
        {
            "event_id": f"w{i}",
            "player_id": player,
            "event_time": (now - timedelta(minutes=i)).isoformat(),
            "event_type": t,
            "value": v,
        }
        for i, (t, v) in enumerate([("session_start", None), ("level_complete", 3.0), ("purchase", 4.99)])
    ]
    with TestClient(create_app(lake, warm=False)) as client:
        assert client.post("/v1/events", json={"events": events}, headers=KEY).status_code == 200
        server = client.app.state.server
        report = WarmPath(lake, server.store).tick()
        assert report is not None and report.players == 1 and report.lag_seconds < 60
        answer = client.post("/v1/predict/churn", json={"player_id": player}, headers=KEY).json()
        got = answer["predictions"][0]
        assert got["features_as_of"] == now.date().isoformat() and got["source"] == "online"
        stored = server.store.get([player])[player]
    clean = pl.read_delta(table_uri(lake.lake_uri, CLEAN_EVENTS)).filter(pl.col("player_id") == player)
    today = pl.DataFrame(
        {
            "event_id": [e["event_id"] for e in events],
            "player_id": player,
            "event_time": [datetime.fromisoformat(e["event_time"]) for e in events],
            "event_type": [e["event_type"] for e in events],
            "value": [e["value"] for e in events],
        }
    ).with_columns(pl.col("event_time").dt.date().alias("event_date"))
    everything = pl.concat([clean, today], how="diagonal_relaxed").sort("event_time", "event_id")
    full = player_features(everything.lazy(), now.date(), now.date()).collect().row(0, named=True)
    for name, value in full.items():
        if name in ("player_id", "snapshot_date"):
            continue
        assert stored.features.get(name) == pytest.approx(value, nan_ok=True), name


def test_the_servers_warm_path_process_applies_collected_events_within_seconds(lake):
    (lake.home / "ml_assets.toml").write_text(
        TEST_SETTINGS + SERVING.replace("warm_seconds = 3600", "warm_seconds = 0.5")
    )
    lake = load_settings(lake.home)
    player = newest_features(lake)["player_id"][1]
    now = datetime.now(UTC)
    event = {"event_id": "warm-1", "player_id": player, "event_time": now.isoformat(), "event_type": "x"}
    with TestClient(create_app(lake)) as client:
        assert client.post("/v1/events", json=[event], headers=KEY).status_code == 200
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = client.post("/v1/predict/churn", json={"player_id": player}, headers=KEY).json()
            if got["predictions"][0]["features_as_of"] == now.date().isoformat():
                break
            time.sleep(0.2)
        assert got["predictions"][0]["features_as_of"] == now.date().isoformat()
        warm = client.get("/v1/status").json()["warm"]
        assert warm["ticks"] >= 1 and warm["max_lag_seconds"] < 60


def test_store_down_serves_batch_scores_and_says_so(lake, redis_server):
    store = open_store("redis", sqlite_path=Path("unused"), redis_url=redis_server.url, ttl_seconds=1e9)
    newest = newest_features(lake)
    batch = read_table(lake, model_assets("churn").predictions)
    player = batch.filter(pl.col("snapshot_date") == batch["snapshot_date"].max())["player_id"][0]
    from ml_assets.serving.online_features import online_rows

    store.write(online_rows(newest, datetime.now(UTC), "batch"))
    with TestClient(create_app(lake, store=store, warm=False)) as client:
        up = client.post("/v1/predict/churn", json={"player_id": player}, headers=KEY).json()
        assert up["predictions"][0]["source"] == "online" and not up["degraded"]
        redis_server.stop()
        answers = []
        for _ in range(4):
            started = time.perf_counter()
            answers.append(client.post("/v1/predict/churn", json={"player_id": player}, headers=KEY).json())
            assert time.perf_counter() - started < 2.0
        assert all(a["degraded"] and a["predictions"][0]["source"] == "batch_fallback" for a in answers)
        assert answers[-1]["predictions"][0]["probability"] == pytest.approx(
            up["predictions"][0]["probability"], abs=1e-6
        )
        status = client.get("/v1/status").json()["online_store"]
        assert status["up"] is False and status["breaker"] == "open"
        assert client.get("/readyz").status_code == 200  # degraded, still serving


def test_served_performance_per_arm_once_labels_mature(lake):
    features = read_table(lake, "player_features")
    day = features["snapshot_date"].max() - timedelta(days=20)
    rows = features.filter(pl.col("snapshot_date") == day).head(200)
    served_at = datetime.combine(day, datetime.min.time(), UTC)
    log = pl.DataFrame(
        {
            "served_date": day,
            "served_at": served_at,
            "request_id": "r",
            "model": "churn",
            "version": ["v1", "v2"] * (rows.height // 2),
            "arm": ["production", "candidate"] * (rows.height // 2),
            "player_id": rows["player_id"][: rows.height // 2 * 2],
            "probability": pl.Series([0.9, 0.1] * (rows.height // 2)),
            "source": "online",
            "features_as_of": day,
        }
    )
    log.write_delta(table_uri(lake.lake_uri, SERVED_PREDICTIONS), mode="append")
    from ml_assets.app.runner import execute

    with dg.DagsterInstance.ephemeral() as instance:
        result = execute(lake, instance, [model_assets("churn").served_performance], None, None)
    assert result.success
    table = read_table(lake, model_assets("churn").served_performance)
    assert sorted(table["arm"]) == ["candidate", "production"]
    assert table["matured"].to_list() == [rows.height // 2] * 2
    for row in table.iter_rows(named=True):
        assert row["predictions"] == row["players"] == rows.height // 2
        assert 0 < row["positives"] < row["matured"]  # 20 days back: churners and stayers both
        assert 0.0 <= row["roc_auc"] <= 1.0


def test_traffic_cli_sets_and_clears_a_split(lake, capsys):
    from ml_assets.app.cli import main

    candidate = _second_version(lake, "churn")
    assert main(["traffic", "churn", "--arm", f"{candidate}=0.1", "--home", str(lake.home)]) == 0
    assert f'"{candidate}": 0.1' in capsys.readouterr().out
    assert main(["traffic", "churn", "--arm", "nope=0.1", "--home", str(lake.home)]) == 2
    assert main(["traffic", "churn", "--clear", "--home", str(lake.home)]) == 0
    assert '"arms": {}' in capsys.readouterr().out


def test_keys_come_from_the_environment_too(lake, monkeypatch):
    monkeypatch.setenv(API_KEYS_ENV, "from-env, other")
    with TestClient(create_app(lake, warm=False)) as client:
        ok = client.post("/v1/events", json=[], headers={"X-API-Key": "other"})
        assert ok.status_code == 200 and ok.json()["accepted"] == 0
        assert client.post("/v1/events", json=[], headers={"X-API-Key": "test-key"}).status_code == 200


def test_a_split_naming_a_version_not_stored_yet_serves_production_and_picks_it_up_later(lake):
    player = newest_features(lake)["player_id"][0]
    registry = Registry(table_uri(lake.lake_uri, MODEL_REGISTRY))
    production = registry.current("churn")
    write_override(lake.serving_dir / "traffic.json", "churn", Traffic(arms={production + "b": 1.0}))
    with TestClient(create_app(lake, warm=False)) as client:
        before = client.post("/v1/predict/churn", json={"player_id": player}, headers=KEY).json()
        assert before["predictions"][0]["version"] == production  # the arm is not stored: production
        assert client.get("/readyz").status_code == 200
        _second_version(lake, "churn", register=False)  # stored now; no registry or traffic change
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            got = client.post("/v1/predict/churn", json={"player_id": player}, headers=KEY).json()
            if got["predictions"][0]["version"] == production + "b":
                break
            time.sleep(0.1)
        assert got["predictions"][0]["arm"] == "candidate"
        assert got["predictions"][0]["version"] == production + "b"
