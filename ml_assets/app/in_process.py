"""Run a job of the code location in this process, recorded as the UI records the runs it launches.

`JobDefinition.execute_in_process` creates runs with no code origin. The UI lists such runs under
Runs, but its Timeline drops every run without a repository origin, and its job pages find runs
by a tag only. Here the run is created first, with the origin of the job in the `ml_assets` code
location (the name `ml-assets ui` and workspace.yaml load it under) and the tag the UI puts on its
own launches; then Dagster's `execute_run` executes it in this process: no subprocess, no daemon,
the same speed as `execute_in_process`.
"""

import os
from collections.abc import Iterator, Mapping, Set
from contextlib import contextmanager

import dagster as dg
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.execution.api import create_execution_plan, execute_run
from dagster._core.remote_origin import (
    InProcessCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.storage.tags import REPOSITORY_LABEL_TAG
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from ml_assets.app.stale_runs import process_tags

# The code location's name wherever the UI loads it, and its single repository (dg.Definitions)
CODE_LOCATION = "ml_assets"
REPOSITORY = "__repository__"
DEFINITIONS_MODULE = "ml_assets.definitions"
UI_TAGS = {REPOSITORY_LABEL_TAG: f"{REPOSITORY}@{CODE_LOCATION}"}
PLANNED_AS_RANGE = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"


def job_origin(job_name: str) -> RemoteJobOrigin:
    """Where the UI finds `job_name`: the module's definitions in the `ml_assets` code location."""
    location = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name=DEFINITIONS_MODULE), location_name=CODE_LOCATION
    )
    return RemoteJobOrigin(RemoteRepositoryOrigin(location, REPOSITORY), job_name)


def run_in_process(
    instance: dg.DagsterInstance,
    job_def: dg.JobDefinition,
    run_config: Mapping[str, object] | None = None,
    tags: Mapping[str, str] | None = None,
    asset_selection: Set[dg.AssetKey] | None = None,
) -> dg.JobExecutionResult:
    """Create a run of `job_def` (the selected assets only, when given) carrying the code location's
    origin and UI tag, then execute it here; failures are in the result, not raised."""
    job = InMemoryJob(job_def)
    selected = job.get_subset(asset_selection=asset_selection) if asset_selection else job
    config = dict(run_config or {})
    plan = create_execution_plan(
        selected, run_config=config, instance_ref=instance.get_ref() if instance.is_persistent else None
    )
    with _planned_events_per_asset():
        run = instance.create_run_for_job(
            job_def=selected.get_definition(),
            execution_plan=plan,
            run_config=config,
            tags={**job_def.run_tags, **UI_TAGS, **process_tags(), **(tags or {})},
            asset_selection=frozenset(asset_selection) if asset_selection else None,
            remote_job_origin=job_origin(job_def.name),
        )
    return execute_run(job, run, instance, raise_on_error=False)


@contextmanager
def _planned_events_per_asset() -> Iterator[None]:
    """Creating a run records a "materialization planned" event per asset and day: a backfill of
    546 days spent 8 s on them per asset before any step ran (Dagster's SQLite event log takes
    ~15 ms an event). Dagster's own switch, read while the run is created, records one event per
    asset carrying the range instead. What it costs: the days of a failed range run stay as they
    were in the UI instead of showing failed; the run itself shows the failure."""
    before = os.environ.get(PLANNED_AS_RANGE)
    os.environ[PLANNED_AS_RANGE] = "true"
    try:
        yield
    finally:
        if before is None:
            del os.environ[PLANNED_AS_RANGE]
        else:
            os.environ[PLANNED_AS_RANGE] = before
