"""The monitoring loop end to end: a game patch shifts behaviour, drift is detected on the shifted
days and not before, the drift sensor (evaluated by Dagster against a real SQLite instance) requests
a retrain, the gate decides the new version's stage, and predictions then record the version that
serves. Without a shift nothing fires."""

import time
from datetime import date, timedelta

import dagster as dg
import polars as pl

from ml_assets.app.runner import execute
from ml_assets.core.models.registry import Registry
from ml_assets.core.settings import load_settings
from ml_assets.definitions import build_definitions
from ml_assets.defs.automation import REASON_TAG, TRIGGER_TAG
from ml_assets.defs.resources import LakeResource
from ml_assets.simulator.game import SimulationParams, extend, simulate

SHIFT = date(2025, 2, 15)
DAILY = [
    "raw_events",
    "clean_events",
    "event_type_counts",
    "player_state",
    "player_features",
    "churn_predictions",
    "churn_feature_drift",
]
# a short label horizon, so a retrain a week after the patch has matured post-patch labels to learn from
SETTINGS = (
    '[models.churn]\nlabel = "rolling"\nhorizon_days = 3\ntuning_trials = 0\n\n[freshness]\npredictions = 0\n'
)


def _lake(tmp_path, shifted: bool, webhook: str = ""):
    home = tmp_path / "home"
    params = SimulationParams(
        players=1500, days=45, seed=5, dirty_rate=0.0, shift_day=SHIFT if shifted else None
    )
    simulate(home / "landing", params, until=SHIFT - timedelta(days=1))
    (home / "ml_assets.toml").write_text(SETTINGS + f'\n[alerts]\nwebhook_url = "{webhook}"\n')
    (home / "dagster").mkdir()
    instance = dg.DagsterInstance.local_temp(str(home / "dagster"))
    settings = load_settings(home)
    assert execute(settings, instance, None, "2025-01-01", str(SHIFT - timedelta(days=1))).success
    return home, instance


def _tick(home, instance, sensor_name: str, cursor: str | None):
    defs = build_definitions(load_settings(home))
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"lake": LakeResource(home=str(home))}
    )
    started = time.perf_counter()
    result = defs.get_sensor_def(sensor_name)(context)
    elapsed = time.perf_counter() - started
    requests = result.run_requests if isinstance(result, dg.SensorResult) else []
    return (requests or []), (result.cursor if isinstance(result, dg.SensorResult) else cursor), elapsed


def _feed_day(home, instance, day: date) -> None:
    extend(home / "landing", day)
    assert execute(load_settings(home), instance, DAILY, str(day), str(day)).success


def test_patch_drift_triggers_a_retrain_that_serves(tmp_path, receiver):
    url, alerts = receiver
    home, instance = _lake(tmp_path, shifted=True, webhook=url)
    registry = Registry(f"{load_settings(home).lake_uri}/model_registry")
    v1 = registry.current("churn")
    assert v1 is not None
    requests, cursor, _ = _tick(home, instance, "churn_drift_sensor", None)
    assert requests == []  # before the patch: quiet
    fired_on, ticks = None, []
    for offset in range(12):
        day = SHIFT + timedelta(days=offset)
        _feed_day(home, instance, day)
        requests, cursor, elapsed = _tick(home, instance, "churn_drift_sensor", cursor)
        ticks.append(elapsed)
        if requests:
            fired_on = day
            break
    assert fired_on is not None, "the patch was never detected"
    request = requests[0]
    assert request.tags[TRIGGER_TAG] == "drift"
    # the reason names the statistic that fired, with its value and threshold (here: the score,
    # which the patch moves before a third of the features drift)
    reason = request.tags[REASON_TAG]
    assert reason.startswith(f"{fired_on}: ")
    assert "score drifted: PSI" in reason or "features drifted: share" in reason, reason
    assert " > " in reason
    assert "ev_session_end" in request.tags["ml_assets/drifted_features"]
    assert request.run_key == f"churn-drift-{fired_on}-{v1}"
    # the drift reached the alert hook with its figures
    drift_alerts = [a for a in alerts if a["kind"] == "drift"]
    assert len(drift_alerts) == 1 and drift_alerts[0]["model"] == "churn"
    assert drift_alerts[0]["details"]["alarm"] is True
    # the same tick again: the cooldown holds, no duplicate request
    again, _, _ = _tick(home, instance, "churn_drift_sensor", cursor)
    assert again == []

    selection = [k.to_user_string() for k in request.asset_selection]
    settings = load_settings(home)
    retrain = execute(settings, instance, selection, None, None, tags=dict(request.tags))
    assert retrain.success
    meta = retrain.asset_materializations_for_node("churn_model")[0].metadata
    v2 = meta["model_version"].value
    assert v2 != v1 and registry.stage_of("churn", v2) == meta["stage"].value
    assert meta["gate"].value  # the gate's reason is recorded either way
    run = instance.get_run_by_id(retrain.run_id)
    assert run.tags[TRIGGER_TAG] == "drift"

    next_day = fired_on + timedelta(days=1)
    _feed_day(home, instance, next_day)
    served = registry.current("churn")
    predictions = pl.read_delta(f"{settings.lake_uri}/churn_predictions").filter(
        pl.col("snapshot_date") == next_day
    )
    assert set(predictions["model_version"]) == {served}
    assert served == (v2 if meta["stage"].value == "production" else v1)
    print(
        f"\npatch on {SHIFT}: drift detected on {fired_on} (day {(fired_on - SHIFT).days + 1} of the patch); "
        f"{v2} -> {meta['stage'].value} ({meta['gate'].value}); serving {served} from {next_day}; "
        f"sensor tick max {max(ticks) * 1000:.0f} ms"
    )


def test_without_a_shift_nothing_fires(tmp_path):
    home, instance = _lake(tmp_path, shifted=False)
    cursors = {"churn_drift_sensor": None, "churn_degradation_sensor": None}
    for offset in range(5):
        _feed_day(home, instance, SHIFT + timedelta(days=offset))
        for name in cursors:
            requests, cursors[name], _ = _tick(home, instance, name, cursors[name])
            assert requests == [], f"{name} fired on {SHIFT + timedelta(days=offset)} without a shift"
