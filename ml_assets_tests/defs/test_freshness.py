"""Freshness: a stale table shows as a failed check; fresh data passes; the policy is on the asset."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from ml_assets.core.settings import load_settings
from ml_assets.definitions import build_definitions
from ml_assets.defs.freshness import staleness
from ml_assets.simulator.game import SimulationParams, simulate
from ml_assets_tests.conftest import TEST_SETTINGS, check_results, run_graph


def test_staleness_rule():
    now = datetime(2025, 3, 2, 12, tzinfo=UTC)
    assert staleness(now - timedelta(hours=5), now - timedelta(hours=1), 36, now)[0]
    fresh, reason = staleness(now - timedelta(hours=50), now - timedelta(hours=1), 36, now)
    assert not fresh and "50.0 h old" in reason
    assert not staleness(now - timedelta(hours=1), now - timedelta(hours=40), 36, now)[0]
    assert staleness(None, None, 36, now) == (False, "no data yet")


def _lake(home, start):
    simulate(home / "landing", SimulationParams(players=150, days=20, start=start, seed=3))
    (home / "ml_assets.toml").write_text(TEST_SETTINGS + "\n[freshness]\npredictions = 0\n")
    return load_settings(home)


def test_stale_table_fails_its_freshness_check_and_fresh_one_passes(tmp_path, instance):
    today = datetime.now(UTC).date()
    stale = _lake(tmp_path / "stale", today - timedelta(days=60))
    result = run_graph(
        stale,
        instance,
        str(today - timedelta(days=60)),
        str(today - timedelta(days=41)),
        ["raw_events", "clean_events"],
    )
    assert check_results(result)["clean_events:freshness"] is False
    # Dagster's daily partitions hold finished days: the freshest complete data ends yesterday
    fresh = _lake(tmp_path / "fresh", today - timedelta(days=20))
    result = run_graph(
        fresh,
        instance,
        str(today - timedelta(days=20)),
        str(today - timedelta(days=1)),
        ["raw_events", "clean_events"],
    )
    assert check_results(result)["clean_events:freshness"] is True


def test_policies_and_checks_follow_settings(tmp_path):
    settings = _lake(tmp_path / "h", datetime(2025, 1, 1, tzinfo=UTC).date())
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    policy = graph.get(dg.AssetKey("clean_events")).freshness_policy
    assert policy is not None and policy.fail_window.to_timedelta() == timedelta(hours=36)
    checks = {k.asset_key.to_user_string() for k in graph.asset_check_keys if k.name == "freshness"}
    # predictions' SLA is switched off (0) in these settings
    assert checks == {"raw_events", "clean_events", "player_features"}
