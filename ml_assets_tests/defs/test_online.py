"""online_features and served performance run after their inputs update, even with days missing."""

import dagster as dg

from ml_assets.definitions import build_definitions
from ml_assets.defs.online import ONLINE_FEATURES
from ml_assets.lake.tables import CLEAN_EVENTS, PLAYER_FEATURES, model_assets
from ml_assets_tests.conftest import make_lake


def test_online_assets_follow_an_update_of_one_day_while_other_days_are_missing(tmp_path):
    settings = make_lake(tmp_path / "home", players=40, days=10)
    defs = build_definitions(settings)
    targets = [dg.AssetKey(ONLINE_FEATURES), dg.AssetKey(model_assets("churn").served_performance)]
    selection = dg.AssetSelection.assets(*targets)
    with dg.DagsterInstance.ephemeral() as instance:
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection)
        assert first.total_requested == 0  # nothing updated yet
        # one day of the daily tables materialized; the other nine still missing
        for key in (PLAYER_FEATURES, CLEAN_EVENTS):
            instance.report_runless_asset_event(dg.AssetMaterialization(key, partition="2025-01-05"))
        second = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=selection, cursor=first.cursor
        )
        requested = {k for k in targets if second.get_num_requested(k)}
        assert requested == set(targets)
        third = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=selection, cursor=second.cursor
        )
        assert third.total_requested == 0  # handled: not requested again until the next update
