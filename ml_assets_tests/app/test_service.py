"""`ml-assets ui` as a service: the real webserver and daemon keep a live lake current, unattended.

The lake's data ends nine days before yesterday when the service starts. While it runs, the
simulator lands the missing days in two deliveries: two ordinary days, then seven days of a game
patch that changes how people play. Nothing is reloaded and nothing is launched by hand: the
daemon's sensors must carry every new day through predictions, drift and performance, the patch
must cause exactly one retrain whose reason names the statistic that fired, and the instance must
record no failed run and no failed sensor or schedule tick.

The soak runs twice: on the embedded SQLite instance with one run at a time, and on PostgreSQL
(Debian's server in a temporary folder) with the daemon's queue running up to three at once.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from dagster._core.events import DagsterEventType
from dagster._core.scheduler.instigation import TickStatus

from ml_assets.app.runner import CODE_LOCATION, execute, instance_for
from ml_assets.core.models.registry import Registry
from ml_assets.core.settings import POSTGRES_URL_ENV, Settings, load_settings
from ml_assets.definitions import build_definitions
from ml_assets.defs.automation import REASON_TAG, TRIGGER_TAG
from ml_assets.simulator.game import SimulationParams, extend, simulate
from ml_assets_tests.conftest import require
from ml_assets_tests.service import Server, graphql, running_ui

TODAY = datetime.now(UTC).date()
YESTERDAY = TODAY - timedelta(days=1)
LOADED = YESTERDAY - timedelta(days=9)  # the newest day in the lake when the service starts
QUIET = LOADED + timedelta(days=2)  # the first delivery ends here: ordinary days
SHIFT = QUIET + timedelta(days=1)  # the patch: every day from here to yesterday
NEW_DAYS = [LOADED + timedelta(days=k) for k in range(1, (YESTERDAY - LOADED).days + 1)]
PHASE_TIMEOUT_S = 300.0
IN_PROGRESS = {
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
}
RETRAIN_TRIGGERS = {"drift", "degradation", "weekly_schedule"}

# One model keeps the service quick; a three-day label horizon lets the retrain learn from patch
# days. The sensors tick every few seconds instead of every minute or ten. A 15% share of drifted
# features (the default is 30%) catches the patch within its first week: it moves the 7-day
# features as post-patch days fill their windows.
SETTINGS = """
[models.churn]
label = "rolling"
horizon_days = 3
tuning_trials = 0

[drift]
share_drifted = 0.15

[automation]
landing_sensor_seconds = 3
monitoring_sensor_seconds = 3
alert_sensor_seconds = 5
"""


# The daemon's queue runs up to three runs at once; runs that write the lake still take turns on its
# writer lock, but they start, wait and end side by side.
POSTGRES_SETTINGS = """
[instance]
storage = "postgres"
max_concurrent_runs = 3
"""


STAGE_CHANGE_CONFIG = """ops:
  churn_production_model:
    config:
      action: promote
      version: '{version}'
      reason: promoted from the Launchpad
      actor: test_service
"""


def _lake(home: Path, extra_settings: str = "") -> Settings:
    """45 days of a 1,500-player game ending on LOADED, materialized as `ml-assets materialize` does."""
    start = LOADED - timedelta(days=44)
    params = SimulationParams(players=1500, days=55, start=start, seed=5, dirty_rate=0.0, shift_day=SHIFT)
    simulate(home / "landing", params, until=LOADED)
    (home / "ml_assets.toml").write_text(SETTINGS + extra_settings)
    settings = load_settings(home, home / "ml_assets.toml")
    assert settings.partitions.mode == "auto"  # live: data within live_within_days of today
    assert execute(settings, instance_for(settings), None, str(start), str(LOADED)).success
    return settings


def _ticks(instance: dg.DagsterInstance) -> dict[str, list]:
    """Every sensor's and schedule's ticks, by name, read from the instance's schedule storage."""
    return {
        state.instigator_name: list(instance.get_ticks(state.instigator_origin_id, state.selector_id))
        for state in instance.all_instigator_state()
    }


def _days(settings: Settings, table: str) -> set[date]:
    return set(pl.read_delta(f"{settings.lake_uri}/{table}")["snapshot_date"].unique().to_list())


def _wait(what: str, done: Callable[[], bool], server: Server, instance: dg.DagsterInstance) -> None:
    """Poll `done` until it holds, and fail naming `what` with the runs and the server log if not."""
    deadline = time.monotonic() + PHASE_TIMEOUT_S
    while not done():
        if time.monotonic() > deadline:
            runs = [(r.run_id[:8], r.status.value, r.tags.get(TRIGGER_TAG)) for r in instance.get_runs()]
            pytest.fail(
                f"{what} not within {PHASE_TIMEOUT_S}s; runs {runs}\n{server.log.read_text()[-3000:]}"
            )
        time.sleep(1.0)


def _idle(instance: dg.DagsterInstance) -> bool:
    return not any(r.status in IN_PROGRESS for r in instance.get_runs())


def _most_at_once(instance: dg.DagsterInstance, run_ids: list[str]) -> int:
    """The most of these runs ever in progress together, as the run queue counts them: from the
    queue's launch (STARTING) to the run's end, read from the instance's run and event records."""
    edges: list[tuple[float, int]] = []
    for record in instance.get_run_records(dg.RunsFilter(run_ids=run_ids)):
        launched = instance.all_logs(record.dagster_run.run_id, of_type=DagsterEventType.RUN_STARTING)
        assert launched and record.end_time is not None, record.dagster_run.run_id
        edges += [(launched[0].timestamp, 1), (record.end_time, -1)]
    at_once = most = 0
    for _, step in sorted(edges):  # at a tie an end comes first: no overlap
        at_once += step
        most = max(most, at_once)
    return most


LAUNCH_RUN = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message }
  }
}
"""


def _check_freshness_from_the_ui(server: Server, tables: list[str]) -> None:
    """One run per table of its `freshness` check, launched as the UI's "Execute" of a check does:
    queued together, dequeued by the daemon as its limit allows."""
    for table in tables:
        selector = {
            "repositoryLocationName": CODE_LOCATION,
            "repositoryName": "__repository__",
            "jobName": "all_assets",
            "assetSelection": [],
            "assetCheckSelection": [{"assetKey": {"path": [table]}, "name": "freshness"}],
        }
        tags = [{"key": TRIGGER_TAG, "value": "test_service"}]
        params = {"selector": selector, "runConfigData": {}, "executionMetadata": {"tags": tags}}
        launched = graphql(server.url, LAUNCH_RUN, variables={"params": params})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        assert launched["run"]["status"] == "QUEUED"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dg.DagsterInstance]]:
    root = tmp_path_factory.mktemp("service")
    settings = _lake(root / "home")
    with running_ui(settings, root) as server:
        yield server, dg.DagsterInstance.from_config(str(settings.dagster_home))


@pytest.fixture
def postgres_service(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Server, dg.DagsterInstance]]:
    # the URL reaches dagster.yaml as {env: ...}: the webserver, daemon and run workers inherit it
    monkeypatch.setenv(POSTGRES_URL_ENV, postgres_url)
    settings = _lake(tmp_path / "home", POSTGRES_SETTINGS)
    with running_ui(settings, tmp_path) as server:
        yield server, dg.DagsterInstance.from_config(str(settings.dagster_home))


# PostgreSQL first: its service stops before the SQLite one, which the Chromium test reuses, starts.
# On PostgreSQL, three check runs are queued with the first landing run: its queue must run several
# of them side by side. SQLite's one-at-a-time queue is spared them: run one after another, their
# process starts alone would add about half a minute.
@pytest.mark.parametrize(
    ("storage", "checked", "at_once"),
    [("postgres", ["raw_events", "clean_events", "player_features"], {2, 3}), ("sqlite", [], {1})],
    ids=["postgres", "sqlite"],
)
def test_the_daemon_carries_new_days_through_the_graph_and_retrains_once(storage, checked, at_once, request):
    server, instance = request.getfixturevalue("postgres_service" if storage == "postgres" else "service")
    settings = server.settings
    assert settings.instance.storage == storage
    before = {r.run_id for r in instance.get_runs()}

    # the landing sensor's first tick takes what landed before it as history (its baseline)
    _wait(
        "the landing sensor's baseline tick",
        lambda: any(
            t.status != TickStatus.STARTED for t in _ticks(instance).get("new_landing_batches_sensor", [])
        ),
        server,
        instance,
    )
    extend(settings.landing_uri, QUIET)
    # while the daemon carries the first delivery, a user runs checks (queued with its landing run)
    _check_freshness_from_the_ui(server, checked)
    _wait(
        f"drift and performance of {QUIET}",
        lambda: QUIET in _days(settings, "churn_model_performance") and _idle(instance),
        server,
        instance,
    )
    extend(settings.landing_uri, YESTERDAY)
    _wait(
        "a drift retrain after the patch",
        lambda: (
            any(r.tags.get(TRIGGER_TAG) == "drift" for r in instance.get_runs())
            and YESTERDAY in _days(settings, "churn_model_performance")
            and _idle(instance)
        ),
        server,
        instance,
    )
    time.sleep(8)  # a few more sensor ticks: a second retrain request would show now
    _wait("the queue to drain", lambda: _idle(instance), server, instance)

    runs = [r for r in instance.get_runs() if r.run_id not in before]
    failed = [
        (r.run_id, r.status.value, dict(r.tags)) for r in runs if r.status != dg.DagsterRunStatus.SUCCESS
    ]
    assert failed == []
    landing = [r for r in runs if r.tags.get(TRIGGER_TAG) == "new_files"]
    assert len(landing) >= 2  # one per delivery at least (a tick may split a delivery in two)
    # the queue's limit held, and on PostgreSQL several runs were in progress at once
    most = _most_at_once(instance, [r.run_id for r in runs])
    assert most in at_once, f"{most} runs in progress at once on {storage}"

    # every new day reached predictions, drift and performance
    for table in ("churn_predictions", "churn_feature_drift", "churn_model_performance"):
        missing = set(NEW_DAYS) - _days(settings, table)
        assert not missing, f"{table} lacks {sorted(missing)}"

    # the patch caused exactly one retrain, and its reason names what fired with value and threshold
    retrains = [r for r in runs if r.tags.get(TRIGGER_TAG) in RETRAIN_TRIGGERS]
    assert len(retrains) == 1, [(r.tags.get(TRIGGER_TAG), r.tags.get(REASON_TAG)) for r in retrains]
    reason = retrains[0].tags[REASON_TAG]
    fired_on = date.fromisoformat(reason.split(":")[0])
    assert SHIFT <= fired_on <= YESTERDAY, reason
    assert "features drifted: share" in reason and "> 0.15" in reason, reason

    # no sensor or schedule tick failed
    ticks = _ticks(instance)
    assert {"new_landing_batches_sensor", "churn_drift_sensor", "failed_check_alert_sensor"} <= set(ticks)
    failed_ticks = {
        name: [t.error.message if t.error else "" for t in group if t.status == TickStatus.FAILURE]
        for name, group in ticks.items()
    }
    assert {k: v for k, v in failed_ticks.items() if v} == {}


SCREENSHOTS = Path(__file__).resolve().parents[2] / ".screenshots"
CHROMIUM = Path("/usr/bin/chromium")
PLOTS = {"ROC curve", "precision-recall curve", "calibration", "feature importance (gain)"}


def _until_shown(action: Callable[[], None], shown, attempts: int = 6) -> None:
    """Do `action` until `shown` (a locator) appears: a control acted on before the page has loaded
    its data does nothing, so the action is repeated, each time waiting up to 10 s."""
    for attempt in range(attempts):
        try:
            action()
            shown.wait_for(timeout=10_000)
            return
        except Exception:
            if attempt == attempts - 1:
                raise


def _run_succeeded(page, server: Server, instance: dg.DagsterInstance, run_id: str) -> None:
    """Wait for the run in the instance, then see its Success badge on its page in the UI."""
    _wait(
        f"run {run_id}",
        lambda: instance.get_run_by_id(run_id).status not in IN_PROGRESS,
        server,
        instance,
    )
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
    page.goto(f"{server.url}/runs/{run_id}")
    page.get_by_text("Success", exact=True).first.wait_for(timeout=30_000)


def test_a_user_in_chromium_sees_the_graph_plots_and_runs_and_promotes(service):
    """Headless Debian Chromium, driven by Playwright, does what a user does in the UI."""
    require(CHROMIUM.exists(), "Chromium", "sudo apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    server, instance = service
    settings = server.settings
    SCREENSHOTS.mkdir(exist_ok=True)
    expected = {
        k.to_user_string() for k in build_definitions(settings).resolve_asset_graph().get_all_asset_keys()
    }
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 1100})
        page.set_default_timeout(30_000)
        # a fresh profile gets a "Join the Dagster community" modal, on whichever page and whenever
        # it loads: Playwright skips it before any action it would block
        # forced, and without waiting for it to go: the modal can open over another dialog
        page.add_locator_handler(
            page.get_by_role("button", name="Skip"),
            lambda skip: skip.click(force=True, timeout=5_000),
            no_wait_after=True,
        )
        try:
            # the lineage graph, one group at a time: every asset is a node
            page.goto(f"{server.url}/asset-groups")
            seen: set[str] = set()
            for group in ("events", "features", "model_churn", "serving"):
                page.goto(f"{server.url}/locations/{CODE_LOCATION}/asset-groups/{group}/lineage")
                page.locator("svg foreignObject").first.wait_for()
                page.wait_for_timeout(1000)
                nodes = [e.text_content() or "" for e in page.locator("svg foreignObject").all()]
                seen |= {name for name in expected for text in nodes if text.startswith(name + "Latest")}
                page.screenshot(path=str(SCREENSHOTS / f"lineage-{group}.png"))
            assert seen == expected

            # the Timeline files runs by job: the CLI's in-process runs (this lake's build) and the
            # daemon's are all there, under all_assets and the ad hoc asset job
            page.goto(f"{server.url}/overview/activity/timeline")
            page.get_by_text("all_assets", exact=True).first.wait_for()
            page.screenshot(path=str(SCREENSHOTS / "timeline.png"))

            # churn_model's page: its plots metadata renders four images
            page.goto(f"{server.url}/assets/churn_model")
            row = page.locator("tr", has=page.get_by_text("plots", exact=True))
            row.first.get_by_text("Show Markdown").click()
            images = page.get_by_role("dialog").locator("img")
            images.first.wait_for()
            shown = {
                i.get_attribute("alt"): i.evaluate("e => e.complete && e.naturalWidth") for i in images.all()
            }
            page.screenshot(path=str(SCREENSHOTS / "churn-model-plots.png"))
            assert set(shown) == PLOTS and all(width > 0 for width in shown.values()), shown
            page.keyboard.press("Escape")

            # a one-day materialization of churn_predictions from its page: the newest day
            before = {r.run_id for r in instance.get_runs()}
            page.goto(f"{server.url}/assets/churn_predictions")
            page.get_by_role("button", name="Materialize…").first.click()
            dialog = page.get_by_role("dialog")
            # the buttons work once the partitions have loaded, which takes longer on a busy machine
            _until_shown(
                lambda: dialog.get_by_role("button", name="Latest").click(),
                dialog.get_by_text("1 partition", exact=True),
            )
            page.screenshot(path=str(SCREENSHOTS / "materialize-latest.png"))
            dialog.get_by_role("button", name=re.compile(r"^Launch")).click()
            _wait(
                "the UI's run",
                lambda: bool({r.run_id for r in instance.get_runs()} - before),
                server,
                instance,
            )
            (run_id,) = {r.run_id for r in instance.get_runs()} - before
            _run_succeeded(page, server, instance, run_id)
            run = instance.get_run_by_id(run_id)
            assert run.tags.get("dagster/partition") == str(YESTERDAY) or (
                run.tags.get("dagster/asset_partition_range_start") == str(YESTERDAY)
                and run.tags.get("dagster/asset_partition_range_end") == str(YESTERDAY)
            ), run.tags
            page.screenshot(path=str(SCREENSHOTS / "materialize-run.png"))

            # promote the version that is not serving, through churn_stage_change in the Launchpad
            registry = Registry(f"{settings.lake_uri}/model_registry")
            serving = registry.current("churn")
            others = [v for v in registry.versions("churn")["version"].to_list() if v != serving]
            assert others, "the soak's retrain left a second version to promote"
            target = others[-1]
            page.goto(f"{server.url}/locations/{CODE_LOCATION}/jobs/churn_stage_change/playground")

            def choose_day() -> None:
                page.get_by_placeholder("Partition").fill(str(YESTERDAY))
                page.keyboard.press("Enter")

            # choosing a partition loads that partition's config into the editor: wait for it first
            _until_shown(choose_day, page.get_by_text("partition_set: churn_stage_change_partition_set"))
            editor = page.locator(".CodeMirror").first
            expect = sync_api.expect
            expect(editor).to_contain_text("action: 'sync'")
            # CodeMirror re-indents typed newlines, so the YAML goes in through the editor's own API
            config = STAGE_CHANGE_CONFIG.format(version=target)
            page.evaluate("text => document.querySelector('.CodeMirror').CodeMirror.setValue(text)", config)
            expect(editor).to_contain_text(f"version: '{target}'")
            page.get_by_text("No errors").wait_for()
            expect(page.get_by_role("button", name="Launch Run")).to_be_enabled()
            page.screenshot(path=str(SCREENSHOTS / "launchpad-promote.png"))
            page.get_by_role("button", name="Launch Run").click()
            page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
            promote_id = page.url.rstrip("/").split("/runs/")[1].split("?")[0]
            _run_succeeded(page, server, instance, promote_id)
            page.screenshot(path=str(SCREENSHOTS / "promote-run.png"))
        except Exception:
            page.screenshot(path=str(SCREENSHOTS / "failure.png"))
            raise
        finally:
            browser.close()
    assert registry.current("churn") == target
    rescored = pl.read_delta(f"{settings.lake_uri}/churn_predictions").filter(
        pl.col("snapshot_date") == YESTERDAY
    )
    assert rescored.height > 0 and set(rescored["model_version"]) == {target}
