"""What the catalog shows for each asset: owners from settings, a description of its own."""

from ml_assets.core.settings import load_settings
from ml_assets.definitions import build_definitions


def test_every_asset_has_the_owners_from_settings_and_its_own_description(small_lake):
    (small_lake.home / "ml_assets.toml").write_text(
        '[catalog]\nowners = ["ml@studio.example", "team:games"]\n'
    )
    graph = build_definitions(load_settings(small_lake.home)).resolve_asset_graph()
    nodes = {k.to_user_string(): graph.get(k) for k in graph.get_all_asset_keys()}
    assert {tuple(n.owners) for n in nodes.values()} == {("ml@studio.example", "team:games")}
    assert all(n.description for n in nodes.values()), [k for k, n in nodes.items() if not n.description]
    assert nodes["clean_events"].description != nodes["quarantined_events"].description
    assert "quarantine" in nodes["quarantined_events"].description.lower() or "rejected" in (
        nodes["quarantined_events"].description.lower()
    )


def test_default_owner_is_the_analytics_team(small_lake):
    graph = build_definitions(small_lake).resolve_asset_graph()
    assert {tuple(graph.get(k).owners) for k in graph.get_all_asset_keys()} == {("team:analytics",)}
