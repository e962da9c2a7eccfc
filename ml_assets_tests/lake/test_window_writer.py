"""Chunked outputs written as files plus one commit (ml_assets.lake.window_writer through the IO manager)."""

import json
from collections.abc import Iterator
from datetime import date, datetime, timedelta

import dagster as dg
import polars as pl
from deltalake import DeltaTable

from ml_assets.lake import window_writer
from ml_assets.lake.io_manager import DeltaLakeIOManager, FrameChunks
from ml_assets.lake.tables import committed_rows, newest_value, rows_per_day

daily = dg.DailyPartitionsDefinition(start_date="2025-01-01", end_date="2025-01-11", timezone="UTC")


def _asset(tag: int, extra_column: bool = False, fail_after: int | None = None) -> dg.AssetsDefinition:
    @dg.asset(
        name="pieces",
        partitions_def=daily,
        metadata={"partition_expr": "day"},
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def pieces(context: dg.AssetExecutionContext) -> FrameChunks:
        start, end = context.partition_time_window
        days = pl.date_range(start.date(), end.date() - timedelta(days=1), eager=True)

        def chunks() -> Iterator[pl.DataFrame]:
            # two pieces of whole players, each spanning every day (like the feature step's)
            for i, player in enumerate(["a", "b"]):
                if fail_after is not None and i >= fail_after:
                    raise RuntimeError("crash in the middle of the write")
                frame = pl.DataFrame(
                    {"player": player, "day": days, "x": pl.Series([tag] * len(days), dtype=pl.Int32)}
                )
                if extra_column:
                    frame = frame.with_columns(y=pl.lit(1.5))
                yield frame

        return FrameChunks(chunks())

    return pieces


def _run(root: str, first: str, last: str, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [_asset(**kwargs)],
        resources={"io_manager": DeltaLakeIOManager(root_uri=root)},
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
        raise_on_error=False,
    )


def test_pieces_land_in_one_commit_and_a_rerun_replaces_only_its_window(tmp_path):
    root = str(tmp_path / "lake")
    assert _run(root, "2025-01-01", "2025-01-10", tag=1).success
    assert DeltaTable(f"{root}/pieces").version() == 0  # created with its files in one commit
    assert _run(root, "2025-01-03", "2025-01-04", tag=2).success
    assert DeltaTable(f"{root}/pieces").version() == 1
    table = pl.read_delta(f"{root}/pieces")
    assert table.height == 20  # 2 players x 10 days, no duplicates
    by_day = dict(table.group_by("day").agg(pl.col("x").max()).iter_rows())
    assert by_day[date(2025, 1, 3)] == by_day[date(2025, 1, 4)] == 2
    assert by_day[date(2025, 1, 2)] == by_day[date(2025, 1, 5)] == 1
    # partition pruning sees the partition column; min/max statistics are recorded per file
    files = pl.DataFrame(DeltaTable(f"{root}/pieces").get_add_actions(flatten=True))
    assert files.height == 10  # the two thin pieces are written together: a file per day, not two
    assert files["num_records"].sum() == 20
    assert files["null_count.player"].sum() == 0
    assert files.filter(pl.col("partition.day") == date(2025, 1, 3))["min.x"].to_list() == [2]
    assert files.filter(pl.col("partition.day") == date(2025, 1, 5))["max.x"].to_list() == [1]
    # delta-rs' own reader agrees (not only Polars'): files, partition values and types line up
    arrow = DeltaTable(f"{root}/pieces").to_pyarrow_table()
    assert arrow.num_rows == 20 and set(arrow.column_names) == {"player", "day", "x"}


def test_pieces_with_many_rows_a_day_are_written_as_they_come(tmp_path, monkeypatch):
    monkeypatch.setattr(window_writer, "MIN_FILE_ROWS", 1)  # every piece holds enough rows a day
    writer = window_writer.WindowWriter(str(tmp_path / "t"), "day")
    days = pl.date_range(date(2025, 1, 1), date(2025, 1, 3), eager=True)
    for player in ["a", "b"]:
        writer.write(pl.DataFrame({"player": player, "day": days, "x": 1}))
        assert not writer.held  # written, not held
    assert len(writer.actions) == 6
    writer.commit(pl.DataFrame({"day": days, "player": "a", "x": 1}), date(2025, 1, 1), date(2025, 1, 4))
    assert pl.read_delta(str(tmp_path / "t")).height == 6


def test_a_crash_between_pieces_leaves_the_previous_version(tmp_path):
    root = str(tmp_path / "lake")
    assert _run(root, "2025-01-01", "2025-01-05", tag=1).success
    result = _run(root, "2025-01-01", "2025-01-05", tag=2, fail_after=1)
    assert not result.success
    assert DeltaTable(f"{root}/pieces").version() == 0
    table = pl.read_delta(f"{root}/pieces")
    assert table.height == 10 and table["x"].unique().to_list() == [1]


def test_a_new_column_merges_into_the_schema(tmp_path):
    root = str(tmp_path / "lake")
    assert _run(root, "2025-01-01", "2025-01-05", tag=1).success
    assert _run(root, "2025-01-04", "2025-01-05", tag=2, extra_column=True).success
    table = pl.read_delta(f"{root}/pieces").sort("day", "player")
    assert table.height == 10
    assert table.filter(pl.col("day") >= date(2025, 1, 4))["y"].to_list() == [1.5] * 4
    assert table.filter(pl.col("day") < date(2025, 1, 4))["y"].null_count() == 6


def test_rows_per_day_come_from_the_delta_log(tmp_path):
    uri = str(tmp_path / "t")
    frame = pl.DataFrame(
        {"event_date": [date(2024, 1, 1)] * 3 + [date(2024, 1, 3)] * 2, "v": [1, 2, 3, 4, 5]}
    )
    frame.write_delta(uri, delta_write_options={"partition_by": ["event_date"]})
    assert rows_per_day(uri, "event_date", date(2023, 12, 31), date(2024, 1, 4)) == [0, 3, 0, 2, 0]
    assert rows_per_day(str(tmp_path / "none"), "event_date", date(2024, 1, 1), date(2024, 1, 2)) == [0, 0]


def test_newest_value_reads_the_newest_day_that_has_one(tmp_path):
    uri = str(tmp_path / "raw")
    day = [date(2024, 1, 1), date(2024, 1, 2), date(2024, 1, 3)]
    rows = pl.DataFrame(
        {
            "partition_date": [day[0], day[1], day[1], day[2]],
            # the newest day holds only a row without a time (filed by its delivery day)
            "event_time": [datetime(2024, 1, 1, 9), datetime(2024, 1, 2, 8), datetime(2024, 1, 2, 23), None],
        }
    )
    rows.write_delta(uri, delta_write_options={"partition_by": ["partition_date"]})
    table = DeltaTable(uri)
    assert newest_value(table, "event_time", "partition_date") == datetime(2024, 1, 2, 23)
    assert newest_value(table, "partition_date", "partition_date") == day[2]
    nothing = rows.filter(pl.col("event_time").is_null())
    nothing.write_delta(str(tmp_path / "nulls"), delta_write_options={"partition_by": ["partition_date"]})
    assert newest_value(DeltaTable(str(tmp_path / "nulls")), "event_time", "partition_date") is None


def test_committed_rows_follow_the_log_through_a_hand_edit(tmp_path):
    uri = str(tmp_path / "clean")
    days = [date(2024, 1, 1), date(2024, 1, 2), date(2024, 1, 3)]
    frame = pl.DataFrame({"event_date": [days[0]] * 4 + [days[1]] * 3 + [days[2]] * 2, "v": range(9)})
    frame.write_delta(uri, delta_write_options={"partition_by": ["event_date"]})
    assert committed_rows(uri, "event_date", days[0], days[1]) == 7
    DeltaTable(uri).delete("v = 5")  # a hand edit: a new file for the day, with its own statistics
    assert committed_rows(uri, "event_date", days[0], days[1]) == 6
    scanned = pl.scan_delta(uri).filter(pl.col("event_date").is_between(days[0], days[1])).collect()
    assert scanned.height == 6
    assert committed_rows(str(tmp_path / "none"), "event_date", days[0], days[1]) == 0


def test_a_piece_in_any_order_is_one_file_per_day_with_its_rows_in_order(tmp_path):
    uri = str(tmp_path / "table")
    day = pl.Series([date(2025, 1, d) for d in (3, 1, 3, 2, 1)])
    piece = pl.DataFrame({"player": ["a", "b", "c", "d", "e"], "day": day, "x": [1, 2, None, 4, 5]})
    added = window_writer.write_piece_files(uri, "day", piece)
    assert [a["partition_values"]["day"] for a in added] == ["2025-01-01", "2025-01-02", "2025-01-03"]
    for action in added:
        rows = pl.read_parquet(tmp_path / "table" / action["path"])
        wanted = piece.filter(pl.col("day") == date.fromisoformat(action["partition_values"]["day"]))
        assert rows.equals(wanted.drop("day"))
        stats = json.loads(action["stats"])
        assert stats["numRecords"] == wanted.height
        assert stats["nullCount"]["x"] == wanted["x"].null_count()


def test_a_big_commit_is_checkpointed_and_a_small_one_is_not(tmp_path, monkeypatch):
    monkeypatch.setattr(window_writer, "CHECKPOINT_ACTIONS", 4)
    uri = str(tmp_path / "table")
    days = [date(2025, 1, d) for d in range(1, 6)]
    backfill = pl.DataFrame({"day": days, "x": list(range(5))})
    writer = window_writer.WindowWriter(uri, "day")
    writer.write(backfill)
    version = writer.commit(backfill, days[0], days[-1] + timedelta(days=1))  # 5 files
    log = tmp_path / "table" / "_delta_log"
    assert [p.name for p in log.glob("*.checkpoint.parquet")] == [f"{version:020d}.checkpoint.parquet"]
    one_day = pl.DataFrame({"day": [days[-1]], "x": [50]})
    writer = window_writer.WindowWriter(uri, "day")
    writer.write(one_day)
    writer.commit(one_day, days[-1], days[-1] + timedelta(days=1))  # 1 add, 1 remove
    assert len(list(log.glob("*.checkpoint.parquet"))) == 1
    read = pl.read_delta(uri).sort("day")
    assert read["x"].to_list() == [0, 1, 2, 3, 50]
