"""Runs of the asset graph on a Dagster instance: what the CLI's `materialize` and `demo` call."""

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from ml_assets.app.in_process import CODE_LOCATION, run_in_process
from ml_assets.app.instance_config import write_instance_config
from ml_assets.app.stale_runs import fail_dead_runs
from ml_assets.core.events.landing import read_window
from ml_assets.core.models.registry import Registry
from ml_assets.core.settings import Settings
from ml_assets.definitions import build_definitions
from ml_assets.defs.automation import ALL_ASSETS_JOB
from ml_assets.defs.partitions import daily_partitions, partition_days
from ml_assets.lake import writer_lock
from ml_assets.lake.tables import MODEL_REGISTRY, model_assets, table_uri

# Step progress only: a failed step's error is summarised in one line per step (`RunSummary.errors`);
# its whole log stays in the UI.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}, "progress": {}}}


@dataclass(frozen=True)
class RunSummary:
    """What one run did: its id, success, and the checks that failed."""

    run_id: str
    success: bool
    failed_checks: list[str]
    materialized: list[str]
    errors: list[str] = field(default_factory=list)  # per failed step: its root cause, one line


def instance_for(settings: Settings) -> dg.DagsterInstance:
    """The lake's persistent Dagster instance: SQLite under the home by default, or PostgreSQL
    (`[instance] storage`), as its dagster.yaml says."""
    write_instance_config(settings)
    os.environ["DAGSTER_HOME"] = str(settings.dagster_home)
    instance = dg.DagsterInstance.get()
    for run_id in fail_dead_runs(instance):
        print(f"run {run_id} had been left in progress by a dead process: marked failed", file=sys.stderr)
    return instance


@contextmanager
def writing(settings: Settings, what: str) -> Iterator[None]:
    """Hold the lake's writer lock for a CLI run: at once when free, else after saying whom it waits
    for, up to `[lake] writer_wait_seconds` (then LakeBusy, one line)."""
    lock, wait = settings.writer_lock, settings.lake.writer_wait_seconds
    try:
        writer_lock.acquire(lock, 0, what)
    except writer_lock.LakeBusy as busy:
        if wait <= 0:
            raise
        print(f"waiting up to {wait:g} s for {busy.holder} to finish writing the lake", file=sys.stderr)
        writer_lock.acquire(lock, wait, what)
    try:
        yield
    finally:
        writer_lock.release(lock)


def _check_lake_root(uri: str) -> None:
    """A local lake root exists or can be made, checked before a run (object stores: by the run)."""
    if "://" in uri and not uri.startswith("file://"):
        return
    root = Path(uri.removeprefix("file://"))
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"[lake] uri {uri!r}: cannot create the lake folder: {exc.strerror}") from exc
    if not os.access(root, os.W_OK):
        raise PermissionError(f"[lake] uri {uri!r}: the lake folder is not writable")


def _range_tags(settings: Settings, first_day: str | None, last_day: str | None) -> dict[str, str]:
    """Tags of a run over [first_day, last_day], by default every partition that exists now (a live
    lake's newest is yesterday, even when events of today have landed)."""
    days = partition_days(daily_partitions(read_window(settings.landing_uri), settings.partitions))
    if not days:
        raise ValueError(f"no daily partitions yet in {settings.landing_uri}: land some events first")
    return {
        ASSET_PARTITION_RANGE_START_TAG: first_day or days[0],
        ASSET_PARTITION_RANGE_END_TAG: last_day or days[-1],
    }


def execute(
    settings: Settings,
    instance: dg.DagsterInstance,
    select: Sequence[str] | None = None,
    first_day: str | None = None,
    last_day: str | None = None,
    run_config: dict | None = None,
    tags: dict[str, str] | None = None,
) -> dg.JobExecutionResult:
    """Materialize the selected assets (default: all) over a partition range (default: every day), as one run.

    Partitioned and unpartitioned assets share the run; each partitioned asset computes the whole
    range in one step (single-run backfill policy), so hundreds of days cost one step, not hundreds.
    Selecting one output of a multi-asset (e.g. clean_events) selects its siblings too.
    """
    _check_lake_root(settings.lake_uri)
    window = read_window(settings.landing_uri)
    if window is None:
        raise ValueError(
            f"nothing has landed in {settings.landing_uri}: run `ml-assets simulate` or `ingest` first"
        )
    defs = build_definitions(settings)
    job = defs.resolve_job_def(ALL_ASSETS_JOB)
    graph = defs.resolve_asset_graph()
    keys = None
    if select:
        wanted = [dg.AssetKey.from_user_string(s) for s in select]
        unknown = [k.to_user_string() for k in wanted if not graph.has(k)]
        if unknown:
            known = sorted(k.to_user_string() for k in graph.get_all_asset_keys())
            raise ValueError(f"unknown asset(s) {unknown}; known: {known}")
        keys = sorted(dg.AssetSelection.assets(*wanted).required_multi_asset_neighbors().resolve(graph))
    partitioned = any(graph.get(k).is_partitioned for k in (keys or graph.get_all_asset_keys()))
    partition_tags = _range_tags(settings, first_day, last_day) if partitioned else {}
    # a subset of the all_assets job, as the UI launches one: the run shows on the job's page and
    # the Timeline, and the checks of the selected assets (freshness included) run with them
    with writing(settings, "ml-assets materialize"):
        return run_in_process(
            instance, job, run_config, {**(tags or {}), **partition_tags}, set(keys) if keys else None
        )


def change_stage(
    settings: Settings,
    instance: dg.DagsterInstance,
    model: str,
    action: str,
    version: str = "",
    reason: str = "",
    actor: str = "",
) -> dg.JobExecutionResult:
    """Promote or roll back `model` through its NAME_stage_change job, the one the UI launches, over
    every landed day: production changes and every day's predictions are re-scored."""
    names = model_assets(settings.spec(model).name)
    if action == "promote":
        # checked here, before a run: a run's failure would bury this line in step logs
        registry = Registry(table_uri(settings.lake_uri, MODEL_REGISTRY))
        if registry.stage_of(model, version) is None:
            known = registry.versions(model)["version"].to_list()
            raise LookupError(f"{model} version {version!r} is not registered; registered: {known}")
    config = {"action": action, "version": version, "reason": reason, "actor": actor}
    defs = build_definitions(settings)
    with writing(settings, f"ml-assets models {action}"):
        return run_in_process(
            instance,
            defs.resolve_job_def(names.stage_change_job),
            {**QUIET, "ops": {names.production_model: {"config": config}}},
            _range_tags(settings, None, None),
        )


def summarize(result: dg.JobExecutionResult) -> RunSummary:
    """What a run did, for the CLI: success, failed checks, materialized assets."""
    failed: list[str] = []
    done: list[str] = []
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.asset_check_evaluation_data
            if not data.passed:
                failed.append(f"{data.asset_key.to_user_string()}:{data.check_name}")
        elif event.event_type_value == "ASSET_MATERIALIZATION":
            key = event.asset_key.to_user_string() if event.asset_key else ""
            if key not in done:
                done.append(key)
    errors = [f"{e.step_key}: {_root_cause(e)}" for e in result.get_step_failure_events()]
    return RunSummary(result.run_id, result.success, failed, done, errors)


def _root_cause(event: dg.DagsterEvent) -> str:
    """The innermost error of a step failure: the one a user can act on, not Dagster's wrapper."""
    error = event.step_failure_data.error
    if error is None:
        return "failed"
    while error.cause is not None:
        error = error.cause
    first = next((line.strip() for line in error.message.splitlines() if line.strip()), "")
    return first[:400]


def materialize(
    settings: Settings,
    instance: dg.DagsterInstance,
    select: Sequence[str] | None = None,
    first_day: str | None = None,
    last_day: str | None = None,
    quiet: bool = True,
    run_config: dict | None = None,
) -> RunSummary:
    """`execute`, with Dagster's log stream reduced to step progress, summarised for the CLI."""
    config = {**(QUIET if quiet else {}), **(run_config or {})}
    return summarize(execute(settings, instance, select, first_day, last_day, config or None))


def write_workspace(settings: Settings) -> Path:
    """The workspace file `ml-assets ui` starts Dagster with: this package's definitions as the
    code location CODE_LOCATION, the name CLI runs are tagged with."""
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    path = settings.dagster_home / "workspace.yaml"
    path.write_text(
        "load_from:\n"
        "  - python_module:\n"
        "      module_name: ml_assets.definitions\n"
        f"      location_name: {CODE_LOCATION}\n"
    )
    return path


def lake_paths(settings: Settings) -> dict[str, Path | str]:
    """Where a user finds things after a run."""
    return {
        "lake (Delta tables)": settings.lake_uri,
        "models": settings.models_uri,
        "Dagster instance": settings.dagster_home,
    }
