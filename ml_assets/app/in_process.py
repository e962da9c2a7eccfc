"""Run a job of the code location in this process, recorded as the UI records the runs it launches.

`JobDefinition.execute_in_process` creates runs with no code origin. The UI lists such runs under
Runs, but its Timeline drops every run without a repository origin, and its job pages find runs
by a tag only. Here the run is created first, with the origin of the job in the `ml_assets` code
location (the name `ml-assets ui` and workspace.yaml load it under) and the tag the UI puts on its
own launches; then Dagster's `execute_run` executes it in this process: no subprocess, no daemon,
the same speed as `execute_in_process`.
"""

from collections.abc import Mapping, Set

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
    run = instance.create_run_for_job(
        job_def=selected.get_definition(),
        execution_plan=plan,
        run_config=config,
        tags={**job_def.run_tags, **UI_TAGS, **process_tags(), **(tags or {})},
        asset_selection=frozenset(asset_selection) if asset_selection else None,
        remote_job_origin=job_origin(job_def.name),
    )
    return execute_run(job, run, instance, raise_on_error=False)
