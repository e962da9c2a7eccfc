"""The collector's core: what it refuses and why, durability before the answer, no repeats, rolls."""

import shutil
import threading
import time
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from ml_assets.core.events.cleaning import FieldLimits
from ml_assets.core.events.landing import list_batches, read_window, scan_landing
from ml_assets.serving.collector import Collector, NotDurable, parse_time, validate_event

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)


def event(i: int, player: str = "p1", **extra) -> dict:
    return {
        "event_id": f"e{i}",
        "player_id": player,
        "event_time": (NOW - timedelta(minutes=i)).isoformat(),
        "event_type": "level_complete",
        **extra,
    }


@pytest.fixture
def collector(tmp_path):
    c = Collector(tmp_path / "landing", tmp_path / "spool", roll_seconds=3600, clock=lambda: NOW)
    yield c
    c.close()


def landed(tmp_path) -> pl.DataFrame:
    return scan_landing(tmp_path / "landing").collect()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not an object", "not_an_object"),
        ({**event(1), "event_id": ""}, "missing_event_id"),
        ({**event(1), "player_id": None}, "missing_player_id"),
        ({**event(1), "event_type": "  "}, "missing_event_type"),
        ({**event(1), "player_id": ["a"]}, "field_not_text"),
        ({**event(1), "event_time": "yesterday"}, "malformed_event_time"),
        ({**event(1), "event_time": "2026-03-04T12:00:00"}, "malformed_event_time"),  # no zone
        ({**event(1), "value": "12"}, "malformed_value"),
        ({**event(1), "value": True}, "malformed_value"),
        ({**event(1), "properties": [1, 2]}, "malformed_properties"),
        ({**event(1), "country": "x" * 1001}, "field_too_long"),
        ({**event(1), "properties": {"k": "x" * 200}}, "field_too_long"),
    ],
)
def test_validate_event_names_the_problem(raw, reason):
    row, why = validate_event(raw, FieldLimits(text=1000, properties=100))
    assert row is None and why == reason


def test_validate_event_types_a_good_event():
    row, why = validate_event(
        {**event(1), "player_id": 42, "value": 3, "properties": {"a": 1}}, FieldLimits()
    )
    assert why is None and row is not None
    assert row["player_id"] == "42" and row["value"] == 3.0 and row["properties"] == '{"a":1}'
    assert row["event_time"] == NOW - timedelta(minutes=1)


def test_times_are_iso_with_a_zone_or_epoch_milliseconds():
    assert parse_time("2026-03-04T13:00:00+01:00") == NOW
    assert parse_time(int(NOW.timestamp() * 1000)) == NOW
    assert parse_time(float("nan")) is None and parse_time(True) is None


def test_accepted_events_are_durable_in_the_spool_before_the_answer(collector, tmp_path):
    receipt = collector.accept([event(1), event(2), {"event_id": "bad"}])
    assert (receipt.accepted, receipt.duplicates) == (2, 0)
    assert [(r.index, r.event_id, r.reason) for r in receipt.rejected] == [(2, "bad", "missing_player_id")]
    spooled = pl.read_parquet(collector.spool_files())
    assert sorted(spooled["event_id"]) == ["e1", "e2"]
    assert set(spooled["source"]) == {"collector"} and spooled["received_at"].to_list() == [NOW, NOW]


def test_repeats_are_dropped_within_a_batch_across_batches_and_after_a_restart(collector, tmp_path):
    assert collector.accept([event(1), event(1), event(2)]).accepted == 2
    again = collector.accept([event(2), event(3)])
    assert (again.accepted, again.duplicates) == (1, 1)
    collector.close()  # lands the spool
    restarted = Collector(tmp_path / "landing", tmp_path / "spool", roll_seconds=3600, clock=lambda: NOW)
    try:
        after = restarted.accept([event(1), event(2), event(3), event(4)])
        assert (after.accepted, after.duplicates) == (1, 3)
    finally:
        restarted.close()
    ids = landed(tmp_path)["event_id"]
    assert sorted(ids) == ["e1", "e2", "e3", "e4"]


def test_ids_past_the_dedup_horizon_are_new_events(tmp_path):
    clock = [NOW]
    c = Collector(tmp_path / "landing", tmp_path / "spool", dedup_horizon_days=7, clock=lambda: clock[0])
    try:
        c.accept([event(1)])
        c.roll()
        clock[0] = NOW + timedelta(days=9)
        restarted = Collector(
            tmp_path / "landing", tmp_path / "spool", dedup_horizon_days=7, clock=lambda: clock[0]
        )
        assert restarted.accept([event(1)]).accepted == 1
        restarted.close()
    finally:
        c.close()


def test_a_roll_lands_the_spool_as_one_batch_and_a_repeated_roll_lands_nothing(collector, tmp_path):
    for i in range(3):
        collector.accept([event(10 * i), event(10 * i + 1)])
    files = collector.spool_files()
    assert len(files) == 3
    saved = tmp_path / "saved"
    saved.mkdir()
    for f in files:
        shutil.copy(f, saved / f.name)
    assert collector.roll() == 6
    assert collector.spool_files() == [] and len(list_batches(tmp_path / "landing")) == 1
    # a crash after landing but before the spool was deleted: the same files roll to the same batch
    for f in saved.iterdir():
        shutil.copy(f, tmp_path / "spool" / f.name)
    collector.roll()
    assert len(list_batches(tmp_path / "landing")) == 1 and collector.spool_files() == []
    assert landed(tmp_path).height == 6
    assert read_window(tmp_path / "landing").last_day == NOW.date()


def test_a_write_that_fails_is_a_503_and_the_events_can_be_sent_again(collector, tmp_path):
    shutil.rmtree(tmp_path / "spool")
    (tmp_path / "spool").write_text("not a folder")  # even root cannot write into a file
    with pytest.raises(NotDurable):
        collector.accept([event(1)])
    (tmp_path / "spool").unlink()
    (tmp_path / "spool").mkdir()
    assert collector.accept([event(1)]).accepted == 1  # not remembered as seen: never acknowledged


def test_concurrent_batches_share_fsyncs_and_land_each_event_once(collector, tmp_path):
    def send(k: int) -> None:
        for j in range(10):
            collector.accept([event(1000 * k + 10 * j + i, player=f"p{k}") for i in range(5)])

    threads = [threading.Thread(target=send, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    requests = 8 * 10
    assert len(collector.spool_files()) < requests  # group commit: waiting requests share a file
    collector.roll()
    ids = landed(tmp_path)["event_id"]
    assert ids.len() == requests * 5 and ids.n_unique() == requests * 5


def test_a_retry_during_the_first_write_waits_for_it_and_fails_with_it(tmp_path):
    release = threading.Event()

    class SlowDisk(Collector):
        def _commit(self, group):
            release.wait(10)
            raise OSError("disk gone")

    c = SlowDisk(tmp_path / "landing", tmp_path / "spool", roll_seconds=3600, clock=lambda: NOW)
    outcomes: dict[str, object] = {}

    def send(name: str) -> None:
        try:
            outcomes[name] = c.accept([event(1), event(2)])
        except NotDurable as exc:
            outcomes[name] = exc

    first = threading.Thread(target=send, args=("first",))
    first.start()
    time.sleep(0.2)
    retry = threading.Thread(target=send, args=("retry",))
    retry.start()
    time.sleep(0.2)
    assert retry.is_alive()  # no early "duplicate" 200 while the first write is undecided
    release.set()
    first.join(5)
    retry.join(5)
    assert isinstance(outcomes["first"], NotDurable) and isinstance(outcomes["retry"], NotDurable)
    c.close()


def test_the_dedup_memory_freezes_past_days_and_still_finds_every_id():
    from datetime import date

    from ml_assets.serving.collector import DedupIndex, _digest

    index = DedupIndex(horizon_days=7)
    ids = [f"id{i}" for i in range(5000)]
    index.add(ids[:2500], date(2026, 1, 1))
    index.add(ids[2500:4000], date(2026, 1, 2))
    index.expire(date(2026, 1, 2))  # the 1st is frozen into a sorted array of digests
    assert any(_digest(i).endswith(b"\0") for i in ids[:2500])  # the case numpy's bytes trim
    assert all(i in index for i in ids[:4000]) and not any(i in index for i in ids[4000:])
    index.expire(date(2026, 1, 9))  # the 1st is now past the 7-day horizon: forgotten
    assert ids[0] not in index and len(index) == 1500


def test_two_servers_on_one_home_roll_the_spool_once(tmp_path):
    first = Collector(tmp_path / "landing", tmp_path / "spool", roll_seconds=3600, clock=lambda: NOW)
    second = Collector(tmp_path / "landing", tmp_path / "spool", roll_seconds=3600, clock=lambda: NOW)
    try:
        for i in range(20):
            (first if i % 2 else second).accept([event(i)])
        errors: list[BaseException] = []

        def roll(c: Collector) -> None:
            try:
                c.roll()
            except BaseException as exc:  # collected: the test fails on any, naming it
                errors.append(exc)

        threads = [threading.Thread(target=roll, args=(c,)) for c in (first, second) * 3]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        ids = landed(tmp_path)["event_id"]
        assert ids.len() == 20 and ids.n_unique() == 20
    finally:
        first.close()
        second.close()
