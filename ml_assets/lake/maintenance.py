"""Delta maintenance: compact small files, checkpoint the log, vacuum what no version needs.

Every rerun of a day replaces its partition with new files and leaves the old ones for time travel,
so without maintenance a lake grows with each rerun and its logs with each commit (opening a table
replays the log from its last checkpoint). `maintain` runs delta-rs' own OPTIMIZE (compaction),
checkpoint, log cleanup and VACUUM on every table of the lake. Run it with the writer lock held:
compaction commits, and vacuum must not delete files a concurrent writer is adding.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from deltalake import DeltaTable

from ml_assets.core.settings import Settings
from ml_assets.lake import writer_lock
from ml_assets.lake.files import folder
from ml_assets.lake.tables import lake_tables, open_table, table_uri


@dataclass(frozen=True)
class TableMaintenance:
    """What maintenance did to one table."""

    table: str
    files_compacted: int
    files_added: int
    files_vacuumed: int
    bytes_before: int
    bytes_after: int


def _folder_bytes(uri: str) -> int:
    return sum(f.size for f in folder(uri).list(recursive=True))


def maintain_table(table: DeltaTable, uri: str, name: str, retention_hours: int) -> TableMaintenance:
    """Compact, checkpoint, clean the log and vacuum one table."""
    before = _folder_bytes(uri)
    metrics = table.optimize.compact()
    table.create_checkpoint()
    table.cleanup_metadata()
    vacuumed = table.vacuum(retention_hours=retention_hours, dry_run=False, enforce_retention_duration=False)
    return TableMaintenance(
        table=name,
        files_compacted=int(metrics.get("numFilesRemoved", 0)),
        files_added=int(metrics.get("numFilesAdded", 0)),
        files_vacuumed=len(vacuumed),
        bytes_before=before,
        bytes_after=_folder_bytes(uri),
    )


def maintain(lake_uri: str, tables: Iterable[str], retention_hours: int) -> list[TableMaintenance]:
    """Maintain each existing table of the lake; tables not written yet are skipped."""
    done = []
    for name in tables:
        uri = table_uri(lake_uri, name)
        table = open_table(uri)
        if table is not None:
            done.append(maintain_table(table, uri, name, retention_hours))
    return done


def maintain_lake(settings: Settings, who: str) -> list[TableMaintenance]:
    """`maintain` every table of the lake at `settings`, holding its writer lock (as `who`)."""
    lock, wait = settings.writer_lock, settings.lake.writer_wait_seconds
    tables = lake_tables([spec.name for spec in settings.specs])
    with writer_lock.holding(lock, wait, who):
        return maintain(settings.lake_uri, tables, settings.lake.vacuum_retention_hours)
