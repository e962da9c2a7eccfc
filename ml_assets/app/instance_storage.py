"""Dagster's SQLite event log with pooled connections: the embedded instance's per-event cost.

A range run of a daily-partitioned graph stores one materialization event per asset per day. Dagster's
`SqliteEventLogStorage` builds a new SQLAlchemy engine for every statement batch (`NullPool`), so each
event pays for an engine, a cold statement-compile cache, two connects and two closes; closing the
last connection of a WAL database also checkpoints it. Measured on a no-op asset of 547 daily
partitions in one run: 13.5 ms per event with Dagster's storage, 4 ms with this one
(benchmarks/bench_long_log.py has the whole-graph figures).

This subclass keeps one engine per shard with SQLAlchemy's default pool, for the index shard and
the most recently used run shards, so a connection and its compiled statements are reused. It also
stores a step's batch of asset events (Dagster's `DAGSTER_EVENT_BATCH_SIZE` batching, which it turns
on: one batch per ranged output) in one transaction per shard instead of two commits per event:
on the CDNOW long log (546 days, 4,900 materializations) the commits went from 10,300 to about 30.
Its connections write with `PRAGMA synchronous=NORMAL` (Dagster's files are WAL databases, whose
default FULL syncs the disk at every commit: 1.9 ms a commit on this machine against 0.02 ms, and a
daily run commits a few hundred times). In WAL mode that keeps the database consistent through any
crash; what a power cut can lose is the last commits' events, of runs that then show as failed. A
new shard's tables are created in WAL mode too, not with a synced journal per statement.
Storage format, tables and queries are Dagster's own: a home can switch between the two classes freely.
Locks are only held inside transactions, so the daemon, the webserver and CLI runs still share the
files as with Dagster's class.
"""

import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, cast

from dagster import StringSource
from dagster import _check as check
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluationPlanned
from dagster._core.events import ASSET_CHECK_EVENTS, ASSET_EVENTS
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log.base import EventLogStorage
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
)
from dagster._core.storage.sqlalchemy_compat import db_result
from dagster._serdes import ConfigurableClassData, serialize_value
from sqlalchemy import create_engine
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy.engine import Connection, Engine

# Run shards kept open at once: the running run's and a few the webserver reads; the index is always kept
OPEN_RUN_SHARDS = 8
INDEX_SHARD = "index"
# Dagster buffers a step's asset events of a partition range up to this many, then hands them to
# `store_event_batch`; 0 (Dagster's default) stores them one by one
EVENT_BATCH_SIZE = "1000"
BATCH_SIZE_VARIABLE = "DAGSTER_EVENT_BATCH_SIZE"
BATCHED = ASSET_EVENTS | ASSET_CHECK_EVENTS


def _sync_at_checkpoints(dbapi_connection: Any, _record: Any) -> None:
    # WAL first (a no-op on Dagster's files, which are WAL already; a new file's tables are then
    # created without a synced rollback journal per statement), then sync at checkpoints only
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """`SqliteEventLogStorage` that reuses one pooled engine per shard (see the module docstring).

    `base_dir` may be relative: it is then taken from `$DAGSTER_HOME`, so a home can be moved.
    """

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        # Set before the parent's __init__, which may already connect (first use of a home)
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._present_tables: set[str] = set()
        if not os.path.isabs(base_dir):
            base_dir = os.path.join(os.environ.get("DAGSTER_HOME", os.getcwd()), base_dir)
        super().__init__(base_dir, inst_data)
        # read by Dagster at each event, in the process that runs the step: every such process
        # builds its instance's storage, so this reaches CLI runs and the daemon's run workers
        os.environ.setdefault(BATCH_SIZE_VARIABLE, EVENT_BATCH_SIZE)

    @classmethod
    def config_type(cls) -> Mapping[str, Any]:
        return {"base_dir": StringSource}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> "PooledSqliteEventLogStorage":
        return cls(inst_data=inst_data, **config_value)

    def has_table(self, table_name: str) -> bool:
        # Only presence is remembered: a table a migration in another process adds is still found
        if table_name in self._present_tables:
            return True
        present = super().has_table(table_name)
        if present:
            self._present_tables.add(table_name)
        return present

    def _engine(self, shard: str) -> Engine:
        engine = self._engines.get(shard)
        if engine is not None:
            self._engines.move_to_end(shard)
            return engine
        engine = create_engine(
            self.conn_string_for_shard(shard), connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
        )
        sqlalchemy_event.listen(engine, "connect", _sync_at_checkpoints)
        if shard not in self._initialized_dbs:
            self._initdb(engine)
            self._initialized_dbs.add(shard)
        self._engines[shard] = engine
        run_shards = [name for name in self._engines if name != INDEX_SHARD]
        for stale in run_shards[: max(0, len(run_shards) - OPEN_RUN_SHARDS)]:
            self._engines.pop(stale).dispose()
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            with self._engine(shard).connect() as conn:
                with conn.begin():
                    yield conn

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """A run's asset and asset check events in one transaction on its shard and one on the index
        shard (checks' own rows after it); the same rows and index entries as `store_event` one by
        one. Any other mix: one by one."""
        if len({event.run_id for event in events}) != 1 or not all(
            event.is_dagster_event and event.dagster_event_type in BATCHED for event in events
        ):
            EventLogStorage.store_event_batch(self, events)
            return
        statements = [self.prepare_insert_event(event) for event in events]
        with self.run_connection(events[0].run_id) as conn:
            for statement in statements:
                conn.execute(statement)
        with self.index_transaction() as conn:
            ids = []
            for statement in statements:
                with db_result(conn, statement) as result:
                    ids.append(result.inserted_primary_key[0])
            assets = [i for i, event in enumerate(events) if event.dagster_event_type in ASSET_EVENTS]
            self._store_asset_event_tags(conn, [events[i] for i in assets], [ids[i] for i in assets])
            # an asset's index row is overwritten by each event with the columns of its type, so
            # the last event of each type, applied in order, leaves the row as every event would
            last = {(events[i].dagster_event.asset_key, events[i].dagster_event_type): i for i in assets}  # type: ignore[union-attr]
            for i in sorted(last.values()):
                self._store_asset_event(conn, events[i], ids[i])
        for event, event_id in zip(events, ids, strict=True):
            if event.dagster_event_type in ASSET_CHECK_EVENTS:
                self.store_asset_check_event(event, event_id)

    def _store_asset_check_evaluation_planned(self, event: EventLogEntry, event_id: int | None) -> None:
        # Dagster's own serializes the planned event once per partition of the range (546 times
        # for a long log's check), the same text each time: the same rows, serialized once
        planned = cast("AssetCheckEvaluationPlanned", check.not_none(event.dagster_event).event_specific_data)
        keys = planned.partitions_subset.get_partition_keys() if planned.partitions_subset else [None]
        common = {
            "asset_key": planned.asset_key.to_string(),
            "check_name": planned.check_name,
            "run_id": event.run_id,
            "execution_status": AssetCheckExecutionRecordStatus.PLANNED.value,
            "evaluation_event": serialize_value(event),
            "evaluation_event_timestamp": self._event_insert_timestamp(event),
            "evaluation_event_storage_id": event_id,
        }
        with self.index_connection() as conn:
            # executemany: one statement compiled, not one with a parameter set per day
            conn.execute(AssetCheckExecutionsTable.insert(), [{**common, "partition": k} for k in keys])

    def _dispose_engines(self) -> None:
        with self._db_lock:
            while self._engines:
                self._engines.popitem()[1].dispose()

    def wipe(self) -> None:
        self._dispose_engines()
        super().wipe()

    def upgrade(self) -> None:
        self._dispose_engines()
        super().upgrade()

    def dispose(self) -> None:
        self._dispose_engines()
        super().dispose()
