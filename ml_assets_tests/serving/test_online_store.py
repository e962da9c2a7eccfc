"""The online store keeps the newest row per player, hides expired rows and fails fast when down.

Behaviour tests run on both stores: SQLite in tmp_path and a real redis-server on a loopback port.
"""

import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import redis

from ml_assets.serving.online_features import online_batch, online_rows
from ml_assets.serving.online_store import (
    OnlineRow,
    OnlineStore,
    RedisOnlineStore,
    SqliteOnlineStore,
    StoreUnavailable,
    open_store,
)

TTL = 3600.0
TODAY = date(2025, 6, 2)
YESTERDAY = TODAY - timedelta(days=1)


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path: Path) -> Iterator[OnlineStore]:
    if request.param == "redis":
        url = request.getfixturevalue("redis_server").url
    else:
        url = "redis://unused"
    opened = open_store(request.param, sqlite_path=tmp_path / "online.db", redis_url=url, ttl_seconds=TTL)
    yield opened
    opened.close()


def _row(player_id: str, as_of: date, updated_at: datetime, source: str = "batch", **features) -> OnlineRow:
    return OnlineRow(player_id, as_of, updated_at, source, features or {"v": 1})


def test_open_store_picks_the_kind(tmp_path):
    sqlite = open_store("sqlite", sqlite_path=tmp_path / "a.db", redis_url="redis://x", ttl_seconds=60)
    assert isinstance(sqlite, SqliteOnlineStore) and sqlite.kind == "sqlite"
    sqlite.close()
    remote = open_store("redis", sqlite_path=tmp_path / "a.db", redis_url="redis://x", ttl_seconds=60)
    assert isinstance(remote, RedisOnlineStore) and remote.kind == "redis"
    with pytest.raises(ValueError, match="'memcached'"):
        open_store("memcached", sqlite_path=tmp_path / "a.db", redis_url="redis://x", ttl_seconds=60)


def test_upsert_keeps_newest_as_of_then_newest_update(store):
    now = datetime.now(UTC)
    batch_yesterday = _row("p1", YESTERDAY, now - timedelta(minutes=50), "batch", v=1)
    warm_today = _row("p1", TODAY, now - timedelta(minutes=40), "warm", v=2)
    batch_today = _row("p1", TODAY, now - timedelta(minutes=30), "batch", v=3)

    assert store.write([batch_yesterday]) == 1
    assert store.write([warm_today]) == 1  # newer as_of replaces
    assert store.get(["p1"])["p1"] == warm_today
    assert store.write([batch_today]) == 1  # equal as_of, newer updated_at replaces
    assert store.get(["p1"])["p1"] == batch_today

    # an older day re-run, although computed later, never overwrites newer data
    rerun = _row("p1", YESTERDAY, now - timedelta(minutes=1), "batch", v=4)
    # equal as_of but older updated_at, and an identical re-write: no-ops
    stale_warm = _row("p1", TODAY, now - timedelta(minutes=35), "warm", v=5)
    assert store.write([rerun, stale_warm, batch_today]) == 0
    assert store.get(["p1"])["p1"] == batch_today


def test_rows_past_the_ttl_are_hidden_and_purged(store):
    now = datetime.now(UTC)
    old = _row("old", TODAY, now - timedelta(seconds=TTL + 60))
    fresh = _row("fresh", TODAY, now - timedelta(seconds=60))
    assert store.write([old, fresh]) == 2

    assert set(store.get(["old", "fresh"])) == {"fresh"}
    # at a time when `old` was still young it is served: the TTL counts from updated_at
    assert set(store.get(["old", "fresh"], now=now - timedelta(seconds=120))) == {"old", "fresh"}
    assert store.get(["fresh"], now=now + timedelta(seconds=TTL)) == {}

    assert store.status().rows == 2
    assert store.purge_expired(now=now) == 1
    assert store.status().rows == 1
    # gone, not just hidden
    assert set(store.get(["old", "fresh"], now=now - timedelta(seconds=120))) == {"fresh"}


def test_bulk_write_then_batch_get_round_trips_features(store):
    now = datetime.now(UTC).replace(microsecond=123456)
    rows = [
        OnlineRow(
            f"p{i}",
            TODAY,
            now - timedelta(milliseconds=i),
            "batch",
            {
                "events_7d": i,
                "spend_30d": i / 4,
                "country": f"c{i % 7}",
                "payer": i % 2 == 0,
                "last_level": None,
                "ratio": math.nan,
                "rate": math.inf,
                "count_np": np.int64(i),
                "share_np": np.float32("nan"),
            },
        )
        for i in range(5000)
    ]
    assert store.write(rows) == 5000

    wanted = [f"p{i}" for i in range(0, 5000, 50)]
    got = store.get([*wanted, "nobody", "p99999"])
    assert sorted(got) == sorted(wanted)
    p150 = got["p150"]
    assert p150.as_of == TODAY and p150.source == "batch"
    assert p150.updated_at == now - timedelta(milliseconds=150)
    assert p150.features == {
        "events_7d": 150,
        "spend_30d": 37.5,
        "country": "c3",
        "payer": True,
        "last_level": None,
        "ratio": None,
        "rate": None,
        "count_np": 150,
        "share_np": None,
    }
    assert type(p150.features["events_7d"]) is int and type(p150.features["spend_30d"]) is float
    assert got["p0"].features["spend_30d"] == 0.0 and type(got["p0"].features["spend_30d"]) is float


def test_encoded_rows_write_as_rows_do(store):
    now = datetime.now(UTC).replace(microsecond=654321)
    frame = pl.DataFrame(
        {
            "player_id": ["a", "b", "a"],
            "snapshot_date": [YESTERDAY, TODAY, TODAY],
            "spend": [1.25, math.nan, 1 / 3],
            "events": [3, None, 4],
            "country": ["fr", 'é"x', None],
        }
    )
    assert store.write_encoded(online_batch(frame, now, "batch")) == 2
    got = store.get(["a", "b"])
    expected = {r.player_id: r for r in online_rows(frame, now, "batch")}
    assert got["a"] == expected["a"] and got["a"].features == {"spend": 1 / 3, "events": 4, "country": None}
    assert got["b"].features == {"spend": None, "events": None, "country": 'é"x'}
    assert got["b"].as_of == TODAY and got["b"].updated_at == now and got["b"].source == "batch"
    # the same upsert rule: an identical re-write is a no-op, a newer one replaces
    assert store.write_encoded(online_batch(frame, now, "batch")) == 0
    assert store.write_encoded(online_batch(frame, now + timedelta(seconds=1), "warm")) == 2
    assert store.get(["a"])["a"].source == "warm"
    assert store.write_encoded(online_batch(frame.clear(), now, "batch")) == 0
    assert store.status().rows == 2


def test_features_json_cannot_hold_are_rejected(store):
    row = _row("p1", TODAY, datetime.now(UTC), last_seen=datetime(2025, 6, 1))
    with pytest.raises(TypeError, match="'p1'"):
        store.write([row])
    assert store.get(["p1"]) == {}


def test_rows_must_be_tz_aware_days_from_a_known_source():
    with pytest.raises(ValueError, match="tz-aware"):
        _row("p1", TODAY, datetime(2025, 6, 2, 12))
    with pytest.raises(ValueError, match="date, not a datetime"):
        _row("p1", datetime(2025, 6, 2, tzinfo=UTC), datetime.now(UTC))
    with pytest.raises(ValueError, match="source"):
        _row("p1", TODAY, datetime.now(UTC), "stream")


def test_status_reports_rows_newest_update_and_day(store):
    empty = store.status()
    assert (empty.rows, empty.newest_update, empty.newest_as_of) == (0, None, None)

    now = datetime.now(UTC).replace(microsecond=0)
    store.write([_row("a", YESTERDAY, now), _row("b", TODAY, now - timedelta(minutes=5))])
    store.write([_row("a", YESTERDAY, now - timedelta(minutes=1), "warm")])  # rejected: older update
    store.write([_row("b", TODAY, now - timedelta(minutes=2), "warm")])  # replaces: not a new row
    status = store.status()
    assert status.kind == store.kind
    assert status.rows == 2
    assert status.newest_update == now
    assert status.newest_as_of == TODAY
    assert status.ttl_seconds == TTL


def test_redis_keys_expire_and_live_under_the_prefix(redis_server):
    prefix = "home[1]*"  # glob characters: the purge's SCAN must match them literally
    store = RedisOnlineStore(redis_server.url, ttl_seconds=120, prefix=prefix)
    store.write([_row("p1", TODAY, datetime.now(UTC))])
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    assert sorted(client.keys("*")) == [f"{prefix}:f:p1", f"{prefix}:status"]
    assert 0 < client.ttl(f"{prefix}:f:p1") <= 120
    assert client.ttl(f"{prefix}:status") == -1  # the status outlives any one row

    client.set("home1x:f:other", "not ours")
    assert store.purge_expired() == 0
    assert store.status().rows == 1
    assert client.get("home1x:f:other") == "not ours"
    client.close()
    store.close()


def test_redis_down_raises_store_unavailable_fast(redis_server):
    store = RedisOnlineStore(redis_server.url, ttl_seconds=TTL)
    row = _row("p1", TODAY, datetime.now(UTC))
    store.write([row])
    assert store.get(["p1"]) == {"p1": row}

    redis_server.stop()
    for call in (lambda: store.get(["p1"]), store.ping, lambda: store.write([row]), store.status):
        start = time.monotonic()
        with pytest.raises(StoreUnavailable, match="redis online store"):
            call()
        assert time.monotonic() - start < 1.0
    store.close()


def test_redis_frozen_times_out_then_recovers(redis_server):
    store = RedisOnlineStore(redis_server.url, ttl_seconds=TTL, socket_timeout_s=0.3)
    row = _row("p1", TODAY, datetime.now(UTC))
    store.write([row])

    os.kill(redis_server.process.pid, signal.SIGSTOP)  # accepts connections, never answers
    try:
        for call in (lambda: store.get(["p1"]), store.ping):
            start = time.monotonic()
            with pytest.raises(StoreUnavailable):
                call()
            assert time.monotonic() - start < 1.0
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    assert store.get(["p1"]) == {"p1": row}
    store.close()


def test_sqlite_reads_from_many_threads_while_writing(tmp_path):
    store = SqliteOnlineStore(tmp_path / "online.db", ttl_seconds=TTL)
    base = datetime.now(UTC) - timedelta(seconds=1000)
    players = [f"p{i}" for i in range(50)]

    def version(k: int) -> list[OnlineRow]:
        return [_row(p, TODAY, base + timedelta(seconds=k), k=k, check=7 * k, pad="x" * 200) for p in players]

    store.write(version(0))
    done = threading.Event()
    errors: list[str] = []
    reads: list[int] = []
    lock = threading.Lock()

    def writer() -> None:
        for k in range(1, 60):
            store.write(version(k))
        done.set()

    def reader() -> None:
        seen = dict.fromkeys(players, 0)
        n = 0
        while not done.is_set() or n < 5:  # a few reads even if the writer finishes first
            got = store.get(players)
            n += 1
            for pid, row in got.items():
                k = row.features["k"]
                # the row is never torn (features match its timestamp) and never goes backwards
                if round((row.updated_at - base).total_seconds()) != k or row.features["check"] != 7 * k:
                    errors.append(f"torn row {row}")
                if k < seen[pid]:
                    errors.append(f"{pid} went back from {seen[pid]} to {k}")
                seen[pid] = k
            if len(got) != len(players):
                errors.append(f"{len(got)} rows of {len(players)}")
        with lock:
            reads.append(n)

    threads = [threading.Thread(target=reader) for _ in range(6)] + [threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert len(reads) == 6 and min(reads) >= 5
    assert store.get(["p0"])["p0"].features["k"] == 59
    store.close()


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="counts open files through /proc")
def test_sqlite_closes_connections_of_finished_threads(tmp_path):
    store = SqliteOnlineStore(tmp_path / "online.db", ttl_seconds=TTL)
    store.write([_row("p1", TODAY, datetime.now(UTC))])

    def one_request() -> None:
        assert "p1" in store.get(["p1"])

    def run_threads(n: int) -> None:
        for _ in range(n):
            t = threading.Thread(target=one_request)
            t.start()
            t.join()

    run_threads(3)
    before = len(os.listdir("/proc/self/fd"))
    run_threads(40)  # a ThreadingHTTPServer starts a thread per request
    assert len(os.listdir("/proc/self/fd")) - before <= 3
    store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        store.get(["p1"])


def test_sqlite_unusable_file_raises_store_unavailable(tmp_path):
    path = tmp_path / "online.db"
    path.write_bytes(b"not a database, just some bytes" * 100)
    with pytest.raises(StoreUnavailable, match="sqlite online store"):
        SqliteOnlineStore(path, ttl_seconds=TTL)
