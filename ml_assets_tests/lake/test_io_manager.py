from collections import Counter
from datetime import date, timedelta

import dagster as dg
import polars as pl
import pytest
from deltalake import DeltaTable

from ml_assets.lake.io_manager import DeltaLakeIOManager, FrameChunks, WrittenFiles
from ml_assets.lake.window_writer import write_piece_files

daily = dg.DailyPartitionsDefinition(start_date="2025-01-01", end_date="2025-01-11", timezone="UTC")


def _assets(bad: bool = False):
    @dg.asset(
        partitions_def=daily,
        metadata={"partition_expr": "day"},
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def table(context: dg.AssetExecutionContext) -> pl.DataFrame:
        start, end = context.partition_time_window
        days = pl.date_range(start.date(), end.date() - timedelta(days=1), eager=True)
        frame = pl.DataFrame({"day": days, "x": [i for i in range(len(days))]})
        if bad:  # a row outside the run's window
            frame = pl.concat([frame, pl.DataFrame({"day": [date(2030, 1, 1)], "x": [0]})])
        return frame

    @dg.asset(
        partitions_def=daily,
        metadata={"partition_expr": "day"},
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def doubled(table: pl.LazyFrame) -> pl.DataFrame:
        return table.with_columns(y=pl.col("x") * 2).collect()

    return [table, doubled]


def _run(root: str, first: str, last: str, bad: bool = False) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        _assets(bad),
        resources={"io_manager": DeltaLakeIOManager(root_uri=root)},
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
        raise_on_error=False,
    )


def test_range_write_then_rerun_replaces_without_duplicates(tmp_path):
    root = str(tmp_path / "lake")
    assert _run(root, "2025-01-01", "2025-01-10").success
    assert _run(root, "2025-01-01", "2025-01-10").success
    assert _run(root, "2025-01-03", "2025-01-04").success
    table = pl.read_delta(f"{root}/doubled")
    assert table.height == 10
    assert table["day"].n_unique() == 10
    # the rerun of days 3-4 rewrote them from a 2-day window: their x restarts at 0
    assert table.filter(pl.col("day") == date(2025, 1, 4))["y"].to_list() == [2]
    assert table.filter(pl.col("day") == date(2025, 1, 10))["y"].to_list() == [18]


def test_a_failed_write_leaves_the_previous_version(tmp_path):
    root = str(tmp_path / "lake")
    assert _run(root, "2025-01-01", "2025-01-05").success
    before = DeltaTable(f"{root}/table").version()
    result = _run(root, "2025-01-01", "2025-01-05", bad=True)
    assert not result.success
    assert DeltaTable(f"{root}/table").version() == before
    assert pl.read_delta(f"{root}/table").height == 5


def test_output_metadata_has_row_count_and_schema(tmp_path):
    result = _run(str(tmp_path / "lake"), "2025-01-01", "2025-01-02")
    mats = result.asset_materializations_for_node("table")
    assert [m.metadata["dagster/row_count"].value for m in mats] == [1, 1]  # each day its own
    # the schema, URI and version go to the newest day only: serialized on every day they cost seconds
    newest = next(m.metadata for m in mats if m.partition == "2025-01-02")
    assert [c.name for c in newest["dagster/column_schema"].value.columns] == ["day", "x"]
    assert "delta_version" in newest and "table_uri" in newest
    assert "dagster/column_schema" not in next(m.metadata for m in mats if m.partition == "2025-01-01")


def test_each_partition_of_a_range_run_carries_its_own_row_count(tmp_path):
    @dg.asset(
        partitions_def=daily,
        metadata={"partition_expr": "day"},
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def pieces() -> FrameChunks:
        # two pieces; the first day has 3 rows, the second 1, the third none
        first = pl.DataFrame({"day": [date(2025, 1, 1)] * 2, "x": [1, 2]})
        second = pl.DataFrame({"day": [date(2025, 1, 1), date(2025, 1, 2)], "x": [3, 4]})
        return FrameChunks(iter([first, second]))

    root = str(tmp_path / "lake")
    tags = {
        "dagster/asset_partition_range_start": "2025-01-01",
        "dagster/asset_partition_range_end": "2025-01-03",
    }
    result = dg.materialize(
        [*_assets(), pieces], resources={"io_manager": DeltaLakeIOManager(root_uri=root)}, tags=tags
    )
    for node, expected in (("pieces", [3, 1, 0]), ("table", [1, 1, 1])):
        mats = sorted(result.asset_materializations_for_node(node), key=lambda m: m.partition)
        assert [m.partition for m in mats] == ["2025-01-01", "2025-01-02", "2025-01-03"]
        assert [m.metadata["dagster/row_count"].value for m in mats] == expected, node


def test_missing_partition_expr_is_a_clear_error(tmp_path):
    @dg.asset(partitions_def=daily)
    def no_expr() -> pl.DataFrame:
        return pl.DataFrame({"day": [date(2025, 1, 1)]})

    with pytest.raises(Exception, match="partition_expr"):
        dg.materialize(
            [no_expr],
            resources={"io_manager": DeltaLakeIOManager(root_uri=str(tmp_path))},
            partition_key="2025-01-01",
        )


def _prewritten(root: str, extra_column: bool = False, outside: bool = False):
    """An asset whose rows an engine's workers already wrote as files of its table (WrittenFiles)."""

    @dg.asset(
        name="sharded",
        partitions_def=daily,
        metadata={"partition_expr": "day"},
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def sharded(context: dg.AssetExecutionContext) -> WrittenFiles:
        start, end = context.partition_time_window
        days = pl.date_range(start.date(), end.date() - timedelta(days=1), eager=True)
        if outside:
            days = pl.Series([date(2030, 1, 1)])
        frame = pl.DataFrame({"day": days, "x": range(len(days))})
        if extra_column:
            frame = frame.with_columns(z=pl.lit("new"))
        # two "shards": odd and even rows, each written on its own
        halves = [frame.gather_every(2), frame.gather_every(2, offset=1)]
        actions = [a for half in halves for a in write_piece_files(f"{root}/sharded", "day", half)]
        rows = Counter({d.isoformat(): 1 for d in days})
        return WrittenFiles(actions, rows, frame.schema)

    return dg.materialize(
        [sharded],
        resources={"io_manager": DeltaLakeIOManager(root_uri=root)},
        tags={
            "dagster/asset_partition_range_start": "2025-01-01",
            "dagster/asset_partition_range_end": "2025-01-10",
        },
        raise_on_error=False,
    )


def test_prewritten_files_are_committed_once_and_a_new_column_merges(tmp_path):
    root = str(tmp_path / "lake")
    assert _prewritten(root).success
    assert DeltaTable(f"{root}/sharded").version() == 0
    assert pl.read_delta(f"{root}/sharded").sort("day")["x"].to_list() == list(range(10))
    # a rerun replaces the window in one more commit; a new column goes through the schema merge
    assert _prewritten(root).success
    assert _prewritten(root, extra_column=True).success
    table = pl.read_delta(f"{root}/sharded").sort("day")
    assert table.height == 10 and table["z"].to_list() == ["new"] * 10
    result = _prewritten(root, outside=True)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "outside the partition window" in failure.step_failure_data.error.cause.message
    assert pl.read_delta(f"{root}/sharded").height == 10
