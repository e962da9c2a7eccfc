"""The online feature store: the latest feature vector per player, in SQLite or Redis.

Both stores keep one row per player and apply the same upsert rule: the row with the newest
`as_of` wins, and on equal `as_of` the newest `updated_at` (strictly newer: an identical re-write is
a no-op). So a warm row for today replaces yesterday's batch row, today's batch row written later
replaces the warm one, and an older batch re-run never overwrites newer data.

A row is served while `updated_at >= now - ttl_seconds`; older rows are absent from `get`. SQLite
keeps them until `purge_expired`; Redis also expires each key `ttl_seconds` after its last accepted
write. Any failure to reach or use the store raises `StoreUnavailable` naming the store.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

SOURCES = ("batch", "warm")
SQLITE_CHUNK = 500  # ids per `IN (...)`: well under SQLite's bound-parameter limit
REDIS_CHUNK = 2000  # rows per pipeline round trip when writing
_COMPACT = (",", ":")


class StoreUnavailable(RuntimeError):
    """The online store cannot be reached or used (connection refused, I/O error)."""


@dataclass(frozen=True)
class OnlineRow:
    """One player's latest features, and which snapshot day and path produced them."""

    player_id: str
    as_of: date  # the snapshot day the features describe
    updated_at: datetime  # when the row was computed (UTC, tz-aware)
    source: str  # "batch" (the online_features asset) or "warm" (the warm path)
    features: dict[str, Any]  # JSON-ready values: int/float/str/bool/None (NaN -> None)

    def __post_init__(self) -> None:
        # a naive datetime would be read as local time by .timestamp(), silently shifting the TTL
        if self.updated_at.tzinfo is None:
            raise ValueError(f"OnlineRow {self.player_id!r}: updated_at must be tz-aware")
        # datetime is a date subclass; a datetime here would not compare as a day in the upsert rule
        if isinstance(self.as_of, datetime):
            raise ValueError(f"OnlineRow {self.player_id!r}: as_of must be a date, not a datetime")
        if self.source not in SOURCES:
            raise ValueError(f"OnlineRow {self.player_id!r}: source must be one of {SOURCES}")


@dataclass(frozen=True)
class EncodedRows:
    """Rows ready for a store, as columns: features already JSON text, times already numbers.

    What `OnlineStore.write_encoded` takes: the online_features asset builds one for every player
    in a few vectorized steps (`online_batch`) instead of one `OnlineRow` and one `json.dumps` each.
    """

    player_ids: list[str]
    as_of: list[str]  # ISO days: string order is day order in both stores
    updated_at: list[float]  # unix seconds
    sources: list[str]
    features: list[str]  # JSON objects, non-finite floats as null

    def __post_init__(self) -> None:
        n = len(self.player_ids)
        if any(len(c) != n for c in (self.as_of, self.updated_at, self.sources, self.features)):
            raise ValueError("EncodedRows: every column must hold one value per player")
        unknown = set(self.sources) - set(SOURCES)
        if unknown:
            raise ValueError(f"EncodedRows: source must be one of {SOURCES}, got {sorted(unknown)}")

    def __len__(self) -> int:
        return len(self.player_ids)

    @classmethod
    def from_rows(cls, rows: Sequence[OnlineRow]) -> EncodedRows:
        """`rows` encoded one by one; a value JSON cannot hold raises TypeError naming the player."""
        return cls(
            player_ids=[r.player_id for r in rows],
            as_of=[r.as_of.isoformat() for r in rows],
            updated_at=[r.updated_at.timestamp() for r in rows],
            sources=[r.source for r in rows],
            features=[encode_features(r.player_id, r.features) for r in rows],
        )


@dataclass(frozen=True)
class StoreStatus:
    """Size and freshness of a store, for `ml-assets status` and the prediction server's health."""

    kind: str  # "sqlite" | "redis"
    rows: int  # sqlite: rows incl. expired not yet purged; redis: keys counted since the last purge
    # sqlite: newest of the stored rows; redis: newest ever accepted (kept in a status hash, so rows
    # since expired or purged still count). The same while nothing has been purged.
    newest_update: datetime | None
    newest_as_of: date | None
    ttl_seconds: float


class OnlineStore(Protocol):
    """What the online_features asset, the warm path and the prediction server use."""

    kind: str
    ttl_seconds: float

    def write(self, rows: Sequence[OnlineRow]) -> int:
        """Upsert `rows` in bulk; the number of rows that were inserted or replaced one."""
        ...

    def write_encoded(self, rows: EncodedRows) -> int:
        """`write` for rows already encoded (same upsert rule); the number inserted or replaced."""
        ...

    def get(self, player_ids: Sequence[str], now: datetime | None = None) -> dict[str, OnlineRow]:
        """The live row of each player that has one; missing and expired players are absent."""
        ...

    def status(self) -> StoreStatus:
        """Row count, newest update and newest snapshot day."""
        ...

    def ping(self) -> None:
        """Raise `StoreUnavailable` when the store cannot be used."""
        ...

    def purge_expired(self, now: datetime | None = None) -> int:
        """Drop rows past the TTL; how many rows `status().rows` fell by."""
        ...

    def close(self) -> None:
        """Release connections; do not use the store afterwards."""
        ...


def open_store(
    kind: str, *, sqlite_path: Path, redis_url: str, ttl_seconds: float, prefix: str = "ml_assets"
) -> OnlineStore:
    """The store named by `kind` ("sqlite" or "redis"); Redis connects lazily (call `ping` to check)."""
    if kind == "sqlite":
        return SqliteOnlineStore(sqlite_path, ttl_seconds)
    if kind == "redis":
        return RedisOnlineStore(redis_url, ttl_seconds, prefix=prefix)
    raise ValueError(f"online store kind must be 'sqlite' or 'redis', got {kind!r}")


def encode_features(player_id: str, features: dict[str, Any]) -> str:
    """Features as JSON text, non-finite floats as null; a value JSON cannot hold raises TypeError."""
    try:
        try:
            return json.dumps(features, allow_nan=False, separators=_COMPACT, default=_json_scalar)
        except ValueError:  # NaN or inf: only rows holding one pay for the cleaned copy
            clean = {
                k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in features.items()
            }
            return json.dumps(clean, allow_nan=False, separators=_COMPACT, default=_json_scalar)
    except (TypeError, ValueError) as error:
        raise TypeError(f"features of player {player_id!r} are not JSON-ready: {error}") from error


def _json_scalar(value: Any) -> Any:
    # numpy scalars (np.int64 is not an int) become Python ones; anything else is a caller bug
    item = getattr(value, "item", None)
    if callable(item):
        out = item()
        if isinstance(out, float) and not math.isfinite(out):
            return None
        if isinstance(out, int | float | str | bool) or out is None:
            return out
    raise TypeError(f"{type(value).__name__} is not JSON-ready")


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be tz-aware")
    return now


def _check_ttl(ttl_seconds: float) -> float:
    if not ttl_seconds > 0:
        raise ValueError(f"ttl_seconds must be > 0, got {ttl_seconds}")
    return float(ttl_seconds)


def _row(player_id: str, as_of: str, updated_at: float, source: str, features: str | bytes) -> OnlineRow:
    return OnlineRow(
        player_id=player_id,
        as_of=date.fromisoformat(as_of),
        updated_at=datetime.fromtimestamp(updated_at, UTC),
        source=source,
        features=json.loads(features),
    )


# ---------------------------------------------------------------------------------------------- SQLite

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS online_features (
    player_id TEXT PRIMARY KEY,
    as_of TEXT NOT NULL,
    updated_at REAL NOT NULL,
    source TEXT NOT NULL,
    features TEXT NOT NULL
)
"""

# as_of is ISO text, so string order is day order
_SQLITE_UPSERT = """
INSERT INTO online_features (player_id, as_of, updated_at, source, features) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (player_id) DO UPDATE SET
    as_of = excluded.as_of, updated_at = excluded.updated_at,
    source = excluded.source, features = excluded.features
WHERE excluded.as_of > online_features.as_of
   OR (excluded.as_of = online_features.as_of AND excluded.updated_at > online_features.updated_at)
"""


class SqliteOnlineStore:
    """The online store in one SQLite file (WAL), safe to share between threads."""

    kind: str = "sqlite"

    def __init__(self, path: Path, ttl_seconds: float) -> None:
        self.path = Path(path)
        self.ttl_seconds = _check_ttl(ttl_seconds)
        self._local = threading.local()
        self._lock = threading.Lock()
        # every open connection with its thread, so close() reaches them all and the connections
        # of finished threads (a ThreadingHTTPServer starts one per request) are closed, not leaked
        self._conns: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._closed = False
        with self._errors("open"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._conn()
            # WAL lets the prediction server read while the asset writes; persistent in the file
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(_SQLITE_SCHEMA)

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OSError) as error:
            raise StoreUnavailable(f"sqlite online store {self.path}: {action} failed: {error}") from error

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreUnavailable(f"sqlite online store {self.path} is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        # autocommit mode: write() opens its own transaction; reads need none.
        # check_same_thread=False only so close() may close other threads' connections: each
        # connection is otherwise used by the one thread that opened it.
        conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints: enough for a cache
        with self._lock:
            keep = [(threading.current_thread(), conn)]
            for thread, other in self._conns:
                if thread.is_alive():
                    keep.append((thread, other))
                else:
                    other.close()
            self._conns = keep
        self._local.conn = conn
        return conn

    def write(self, rows: Sequence[OnlineRow]) -> int:
        """Upsert `rows` in one transaction; the number of rows that were inserted or replaced one."""
        return self.write_encoded(EncodedRows.from_rows(rows))

    def write_encoded(self, rows: EncodedRows) -> int:
        """Upsert encoded `rows` in one transaction; the number inserted or replaced."""
        if not len(rows):
            return 0
        params = zip(rows.player_ids, rows.as_of, rows.updated_at, rows.sources, rows.features, strict=True)
        with self._errors("write"):
            conn = self._conn()
            before = conn.total_changes
            conn.execute("BEGIN IMMEDIATE")  # take the write lock now: no deferred-upgrade deadlock
            try:
                conn.executemany(_SQLITE_UPSERT, params)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # a failed COMMIT may have ended it already
                    conn.execute("ROLLBACK")
                raise
            return conn.total_changes - before

    def get(self, player_ids: Sequence[str], now: datetime | None = None) -> dict[str, OnlineRow]:
        """The live row of each player that has one; missing and expired players are absent."""
        ids = list(dict.fromkeys(player_ids))
        if not ids:
            return {}
        cutoff = _now(now).timestamp() - self.ttl_seconds
        out: dict[str, OnlineRow] = {}
        with self._errors("get"):
            conn = self._conn()
            for start in range(0, len(ids), SQLITE_CHUNK):
                chunk = ids[start : start + SQLITE_CHUNK]
                sql = (
                    "SELECT player_id, as_of, updated_at, source, features FROM online_features"
                    f" WHERE player_id IN ({','.join('?' * len(chunk))}) AND updated_at >= ?"
                )
                for row in conn.execute(sql, (*chunk, cutoff)):
                    out[row[0]] = _row(*row)
        return out

    def status(self) -> StoreStatus:
        """Rows (expired not yet purged included), newest update and newest snapshot day."""
        with self._errors("status"):
            rows, newest_update, newest_as_of = (
                self._conn()
                .execute("SELECT count(*), max(updated_at), max(as_of) FROM online_features")
                .fetchone()
            )
        return StoreStatus(
            kind=self.kind,
            rows=rows,
            newest_update=None if newest_update is None else datetime.fromtimestamp(newest_update, UTC),
            newest_as_of=None if newest_as_of is None else date.fromisoformat(newest_as_of),
            ttl_seconds=self.ttl_seconds,
        )

    def ping(self) -> None:
        """Raise `StoreUnavailable` when the file cannot be read."""
        with self._errors("ping"):
            self._conn().execute("SELECT 1 FROM online_features LIMIT 1").fetchall()

    def purge_expired(self, now: datetime | None = None) -> int:
        """Delete rows past the TTL; how many were deleted."""
        cutoff = _now(now).timestamp() - self.ttl_seconds
        with self._errors("purge"):
            return (
                self._conn().execute("DELETE FROM online_features WHERE updated_at < ?", (cutoff,)).rowcount
            )

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            self._closed = True
            conns, self._conns = self._conns, []
        for _, conn in conns:
            conn.close()


# ----------------------------------------------------------------------------------------------- Redis

# KEYS: the player's hash, the status hash. ARGV: as_of, updated_at, source, features, ttl seconds.
# Returns 1 when the row was written, 0 when the stored row is as new or newer.
# Row count: a counter of keys this script created, not SCAN, so status() stays O(1). Keys Redis
# expires are not subtracted (Redis does not tell us); purge_expired recounts with SCAN. So, like
# SQLite's, the count includes expired rows until the next purge.
_REDIS_UPSERT = """
local cur = redis.call('HMGET', KEYS[1], 'as_of', 'updated_at')
if cur[1] then
  if ARGV[1] < cur[1] or (ARGV[1] == cur[1] and tonumber(ARGV[2]) <= tonumber(cur[2])) then
    return 0
  end
end
redis.call('HSET', KEYS[1], 'as_of', ARGV[1], 'updated_at', ARGV[2], 'source', ARGV[3], 'features', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
local st = redis.call('HMGET', KEYS[2], 'newest_update', 'newest_as_of')
if not st[1] or tonumber(ARGV[2]) > tonumber(st[1]) then
  redis.call('HSET', KEYS[2], 'newest_update', ARGV[2])
end
if not st[2] or ARGV[1] > st[2] then
  redis.call('HSET', KEYS[2], 'newest_as_of', ARGV[1])
end
if not cur[1] then
  redis.call('HINCRBY', KEYS[2], 'rows', 1)
end
return 1
"""

# KEYS: player hashes. ARGV: the cutoff. Deletes the expired ones; returns how many live ones remain.
# A script, so a row rewritten between the read and the delete is never deleted.
_REDIS_PURGE = """
local live = 0
for _, key in ipairs(KEYS) do
  local t = redis.call('HGET', key, 'updated_at')
  if t then
    if tonumber(t) < tonumber(ARGV[1]) then redis.call('DEL', key) else live = live + 1 end
  end
end
return live
"""

_FIELDS = ("as_of", "updated_at", "source", "features")


class RedisOnlineStore:
    """The online store in Redis: one hash per player under `{prefix}:f:`, written by a Lua upsert."""

    kind: str = "redis"

    def __init__(
        self, url: str, ttl_seconds: float, prefix: str = "ml_assets", socket_timeout_s: float = 0.5
    ) -> None:
        self.url = url
        self.ttl_seconds = _check_ttl(ttl_seconds)
        self.prefix = prefix
        self._status_key = f"{prefix}:status"
        # no retries: a down or frozen server fails a call within one socket timeout instead of
        # stalling a prediction through redis-py's default backoff (the pool still replaces a
        # connection the server closed before using it)
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )
        self._upsert = self._client.register_script(_REDIS_UPSERT)
        self._purge = self._client.register_script(_REDIS_PURGE)

    def _key(self, player_id: str) -> str:
        return f"{self.prefix}:f:{player_id}"

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except redis.exceptions.RedisError as error:
            raise StoreUnavailable(f"redis online store {self.url}: {action} failed: {error}") from error

    def write(self, rows: Sequence[OnlineRow]) -> int:
        """Upsert `rows` through pipelines of the Lua upsert; the number inserted or replaced."""
        return self.write_encoded(EncodedRows.from_rows(rows))

    def write_encoded(self, rows: EncodedRows) -> int:
        """Upsert encoded `rows` through pipelines of the Lua upsert; the number inserted or replaced."""
        ttl = max(1, math.ceil(self.ttl_seconds))  # EXPIRE takes whole seconds
        written = 0
        with self._errors("write"):
            for start in range(0, len(rows), REDIS_CHUNK):
                pipe = self._client.pipeline(transaction=False)
                for i in range(start, min(start + REDIS_CHUNK, len(rows))):
                    args: list[str | int] = [
                        rows.as_of[i],
                        repr(rows.updated_at[i]),
                        rows.sources[i],
                        rows.features[i],
                        ttl,
                    ]
                    keys = [self._key(rows.player_ids[i]), self._status_key]
                    self._upsert(keys=keys, args=args, client=pipe)
                written += sum(int(x) for x in pipe.execute())
        return written

    def get(self, player_ids: Sequence[str], now: datetime | None = None) -> dict[str, OnlineRow]:
        """The live row of each player that has one, in one round trip; missing and expired are absent."""
        ids = list(dict.fromkeys(player_ids))
        if not ids:
            return {}
        cutoff = _now(now).timestamp() - self.ttl_seconds
        with self._errors("get"):
            pipe = self._client.pipeline(transaction=False)
            for pid in ids:
                pipe.hmget(self._key(pid), _FIELDS)
            replies = pipe.execute()
        out: dict[str, OnlineRow] = {}
        for pid, (as_of, updated_at, source, features) in zip(ids, replies, strict=True):
            # EXPIRE counts from the write, the TTL from updated_at: filter here too
            if as_of is not None and float(updated_at) >= cutoff:
                out[pid] = _row(pid, as_of, float(updated_at), source, features)
        return out

    def status(self) -> StoreStatus:
        """Rows counted since the last purge, newest update and newest snapshot day: one HMGET."""
        with self._errors("status"):
            reply = self._client.hmget(self._status_key, ["rows", "newest_update", "newest_as_of"])
        rows, update, as_of = cast("list[str | None]", reply)  # decode_responses: str, not bytes
        return StoreStatus(
            kind=self.kind,
            rows=int(rows or 0),
            newest_update=None if update is None else datetime.fromtimestamp(float(update), UTC),
            newest_as_of=None if as_of is None else date.fromisoformat(as_of),
            ttl_seconds=self.ttl_seconds,
        )

    def ping(self) -> None:
        """Raise `StoreUnavailable` when the server does not answer within the socket timeout."""
        with self._errors("ping"):
            self._client.ping()

    def purge_expired(self, now: datetime | None = None) -> int:
        """Delete keys past the TTL and recount the rest with SCAN; how many rows the count fell by.

        Maintenance, not the hot path: it walks every key under the prefix. Writes made during the
        walk may be missed by the new count until the next purge.
        """
        cutoff = _now(now).timestamp() - self.ttl_seconds
        live = 0
        with self._errors("purge"):
            before = int(self._client.hget(self._status_key, "rows") or 0)
            batch: list[str] = []
            # the prefix is text, not a pattern: a home named "lake[1]" must match itself
            pattern = re.sub(r"([\\*?\[\]])", r"\\\1", self.prefix) + ":f:*"
            for key in self._client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) == 1000:
                    live += self._purge_batch(batch, cutoff)
                    batch = []
            live += self._purge_batch(batch, cutoff)
            self._client.hset(self._status_key, "rows", live)
        return max(0, before - live)

    def _purge_batch(self, keys: list[str], cutoff: float) -> int:
        """Delete the expired keys of `keys`; how many live ones remain."""
        if not keys:
            return 0
        return int(self._purge(keys=keys, args=[repr(cutoff)]))

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()
