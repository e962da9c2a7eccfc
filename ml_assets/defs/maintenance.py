"""lake_maintenance: the job (and its daily schedule) that keeps the lake from growing with reruns."""

import dagster as dg

from ml_assets.core.settings import Settings
from ml_assets.defs.resources import LakeResource
from ml_assets.lake.maintenance import maintain_lake

JOB = "lake_maintenance"


@dg.op(description="OPTIMIZE (compaction), checkpoint, log cleanup and VACUUM of every Delta table.")
def maintain_tables(context: dg.OpExecutionContext, lake: LakeResource) -> None:
    # compaction commits and vacuum deletes files: it holds the writer lock like any run
    done = maintain_lake(lake.settings(), f"{JOB} run {context.run_id}")
    for t in done:
        context.log.info(
            f"{t.table}: {t.files_compacted} files compacted into {t.files_added}, "
            f"{t.files_vacuumed} vacuumed; {t.bytes_before} -> {t.bytes_after} bytes"
        )


def maintenance_defs(settings: Settings) -> dg.Definitions:
    """The maintenance job and its schedule ([lake] maintenance_cron, UTC)."""

    @dg.job(name=JOB, description="Compact, checkpoint and vacuum the lake's Delta tables.")
    def lake_maintenance() -> None:
        maintain_tables()

    schedule = dg.ScheduleDefinition(
        name=f"{JOB}_schedule",
        job=lake_maintenance,
        cron_schedule=settings.lake.maintenance_cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Keep the lake's size and table open time flat however often days are rerun.",
    )
    return dg.Definitions(jobs=[lake_maintenance], schedules=[schedule])
