"""`ml-assets serve` under load: collector throughput, prediction latency, and three kinds of chaos.

One demo lake (`ml-assets demo`, ~1-2 min) is built in a temporary home; the server runs as a real
subprocess (`python -m ml_assets.app.cli serve`) and is driven by an asyncio load generator that
writes hand-made HTTP/1.1 requests over keep-alive connections. Measured:

1. Collector throughput, durable: batches of 500 events (pre-encoded bodies, unique event ids) over
   several connections; acked events/s, the server's CPU seconds (psutil) and events per server
   CPU-second (goal >= 5,000), the client's CPU; after SIGTERM, the collector rows in landing equal
   the acked ids exactly. Twice: the collector alone (warm path off) and with the warm path (default).
2. Prediction latency, open loop: single-player requests at fixed rates over 16 connections, each
   latency counted from its scheduled send time (no coordinated omission); p50, p99, max, achieved
   rate, errors (goal: p99 < 10 ms at 500 requests/s); 500 requests/s of 10 players each; and 500
   requests/s while 2,500 events/s are collected (the warm path's ticks run in a child process).
   Measured once the warm path's first tick after the start is over. `--also-env KEY=VALUE`
   repeats these on a server with that variable, side by side (e.g. OMP_NUM_THREADS=1).
3. Chaos under load: (a) the server SIGKILLed and restarted while clients retry their batches: lost
   and duplicated events; (b) Redis as the online store, killed mid-run: answers by source, errors,
   p99 in the outage; (c) a promotion (`ml-assets models promote`) under prediction load: time until
   answers carry the new version, failed requests.

    .venv/bin/python benchmarks/bench_serving.py --quick --out /tmp/serving   # smoke, ~5 min
    .venv/bin/python benchmarks/bench_serving.py --also-env OMP_NUM_THREADS=1  # full, ~10 min

Results: `<out>/serving.json` and `<out>/serving.md` (default out: benchmarks/results). On a
failure the work directory (lake, server and CLI logs) is kept and named.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, log, machine, markdown_table, text_table

HOST = "127.0.0.1"
API_KEY = "bench-key"
BATCH_EVENTS = 500
MARK = b"@@@@@@@@"  # stands for the batch number in a pre-encoded batch (same length: %08d)
EVENT_TYPES = ("session_start", "level_start", "level_complete", "ad_impression", "purchase", "session_end")
REQUEST_TIMEOUT_S = 30.0
LATE_GIVE_UP_S = 10.0  # a prediction request this late is not sent: an error (an overloaded server)
RETRY_PAUSE_S = 0.1
NOT_SENT = -1  # the status of a request given up as too late
WARM_SECONDS = 10.0  # `[serving] warm_seconds`' default: the warm path's period
GOAL_EVENTS_PER_CPU_S = 5_000
GOAL_P99_MS, GOAL_RATE = 10.0, 500


@dataclass(frozen=True)
class Plan:
    """Durations of a run: `--quick` for development, the full one for the figures."""

    collector_s: float
    rates: tuple[int, ...]
    rate_s: float
    mixed_s: float  # predictions with collector load alongside: long enough for warm path ticks
    chaos_lead_s: float  # load before the chaos action
    chaos_tail_s: float  # load after it (after the restart, the outage's start, the promotion)
    kills: int
    outage_s: float

    @staticmethod
    def of(quick: bool) -> Plan:
        if quick:
            return Plan(3, (100, 250, 500, 750), 2, 12, 2, 3, 1, 4)
        return Plan(20, (100, 250, 500, 750), 10, 32, 5, 5, 3, 20)


# -- processes ------------------------------------------------------------------------------------

LIVE: list[subprocess.Popen[bytes]] = []  # every child started, killed on exit whatever happens


def spawn(cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start `cmd` with its output appended to `log_path`, remembered for the final cleanup."""
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    LIVE.append(proc)
    return proc


def kill_all() -> None:
    """SIGKILL every child still running (the exit path of the benchmark, normal or not)."""
    for proc in LIVE:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ml_assets.app.cli", *args]


def run_cli(work: Path, *args: str) -> float:
    """Run `ml-assets args...` to completion (output in the work dir's cli.log); its wall seconds."""
    started = time.perf_counter()
    proc = spawn(cli(*args), work / "cli.log")
    if proc.wait() != 0:
        raise RuntimeError(f"ml-assets {' '.join(args)} failed; see {work / 'cli.log'}")
    return time.perf_counter() - started


class Serve:
    """`ml-assets serve` on one home and port, started, stopped and killed as a real process."""

    def __init__(self, home: Path, port: int, work: Path, env: dict[str, str]) -> None:
        self.home, self.port, self.work = home, port, work
        self.env = {**os.environ, **env, "ML_ASSETS_API_KEYS": API_KEY, "PYTHONWARNINGS": "ignore"}
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_at = 0.0

    def start(self, timeout_s: float = 120) -> float:
        """Start the server; seconds until /healthz answers."""
        started = time.perf_counter()
        cmd = cli("serve", "--home", str(self.home), "--port", str(self.port))
        self.proc = spawn(cmd, self.work / "serve.log", self.env)
        while time.perf_counter() - started < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the server exited with {self.proc.returncode}; see {self.work}/serve.log"
                )
            try:
                urllib.request.urlopen(f"http://{HOST}:{self.port}/healthz", timeout=1).read()
                self.ready_at = time.perf_counter()
                return self.ready_at - started
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the server did not answer /healthz within {timeout_s} s")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the server process so far (all its threads)."""
        times = psutil.Process(self.pid).cpu_times()
        return times.user + times.system

    def tree_cpu_seconds(self) -> float:
        """CPU seconds of the server and its children (the warm path runs in a child process)."""
        process = psutil.Process(self.pid)
        total = 0.0
        for p in [process, *process.children(recursive=True)]:
            try:
                times = p.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def rss_bytes(self) -> int:
        return int(psutil.Process(self.pid).memory_info().rss)

    def status(self) -> dict[str, Any]:
        """GET /v1/status."""
        request = urllib.request.Request(
            f"http://{HOST}:{self.port}/v1/status", headers={"X-API-Key": API_KEY}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def stop(self) -> float:
        """SIGTERM (the server finishes writes and lands its spool) and wait; seconds to exit."""
        assert self.proc is not None
        started = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=120)
        if code not in (0, -signal.SIGTERM):  # uvicorn re-raises SIGTERM after a graceful shutdown
            log(f"  the server exited with {code} after SIGTERM")
        return time.perf_counter() - started

    def settle(self, timeout_s: float = 180) -> float:
        """Wait for the warm path's first tick (WARM_SECONDS after the server is up; it re-reads
        what landed since the stored state's day) to be over: the server's CPU quiet for 1.5 s."""
        started = time.perf_counter()
        time.sleep(max(0.0, WARM_SECONDS + 1 - (started - self.ready_at)))
        quiet = 0
        while time.perf_counter() - started < timeout_s and quiet < 3:
            quiet = quiet + 1 if idle_cpu(self, 0.5) < 0.25 else 0
        return time.perf_counter() - started

    def kill(self) -> None:
        """SIGKILL: no shutdown, no landing; what is in the spool stays there."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


class Redis:
    """A throwaway redis-server (no persistence) on a free port."""

    def __init__(self, work: Path) -> None:
        self.port = free_port()
        self.url = f"redis://{HOST}:{self.port}/0"
        server = shutil.which("redis-server") or "/usr/bin/redis-server"
        cmd = [server, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no"]
        self.proc = spawn(cmd, work / "redis.log")
        import redis

        client = redis.Redis(host=HOST, port=self.port)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


# -- the lake -------------------------------------------------------------------------------------


def build_lake(home: Path, work: Path, template: Path | None) -> float:
    """A demo lake in `home`: `ml-assets demo` (seconds it took), or a copy of `template`."""
    if template is None:
        return run_cli(work, "demo", "--home", str(home))
    shutil.copytree(template, home)
    # the instance's config names its home by absolute path: point it at the copy
    for path in (home / "dagster").glob("*.yaml"):
        path.write_text(path.read_text().replace(str(template.resolve()), str(home)))
    return 0.0


def write_settings(home: Path, **serving: Any) -> None:
    """`<home>/ml_assets.toml` with these `[serving]` keys (everything else: defaults)."""
    lines = ["[serving]", *(f"{key} = {json.dumps(value)}" for key, value in serving.items())]
    (home / "ml_assets.toml").write_text("\n".join(lines) + "\n")


def online_players(home: Path) -> list[str]:
    """Players with an online vector (SQLite store) and a batch score (the fallback), sorted."""
    with sqlite3.connect(home / "serving" / "online_features.sqlite") as conn:
        online = {row[0] for row in conn.execute("SELECT player_id FROM online_features")}
    scores = pl.scan_delta(str(home / "lake" / "churn_predictions"))
    newest = scores.select(pl.col("snapshot_date").max()).collect().item()
    batch = scores.filter(pl.col("snapshot_date") == newest).select("player_id").collect()["player_id"]
    return sorted(online & set(batch.to_list()))


def register_copy(home: Path, model: str) -> str:
    """Register a copy of `model`'s production version under a new id (as a second trained version
    would be); the new id. What `_second_version` in ml_assets_tests/serving/test_server.py does."""
    import dataclasses

    from ml_assets.core.models.registry import Registry
    from ml_assets.core.settings import load_settings
    from ml_assets.lake.model_store import ModelStore
    from ml_assets.lake.tables import MODEL_REGISTRY, table_uri

    settings = load_settings(home)
    registry = Registry(table_uri(settings.lake_uri, MODEL_REGISTRY))
    store = ModelStore(settings.models_uri)
    current = store.load(model, registry.current(model))
    copy = dataclasses.replace(current, version=current.version + "b")
    store.save(copy)
    registry.register(model, copy.version, "bench", "a second version for the promotion under load")
    return copy.version


def production_change_at(home: Path, model: str, version: str) -> datetime:
    """When the registry recorded `version` of `model` entering production."""
    from ml_assets.core.models.registry import Registry
    from ml_assets.core.settings import load_settings
    from ml_assets.lake.tables import MODEL_REGISTRY, table_uri

    history = Registry(table_uri(load_settings(home).lake_uri, MODEL_REGISTRY)).history(model)
    rows = history.filter((pl.col("version") == version) & (pl.col("stage") == "production"))
    return rows["at"][-1]


def landed_collector_ids(home: Path, prefix: str) -> pl.Series:
    """Event ids of the collector's rows in landing whose id starts with `prefix` (repeats kept)."""
    from ml_assets.core.events.landing import LANDING_SCHEMA

    files = [str(f) for f in sorted((home / "landing").glob("*.parquet"))]
    frame = (
        pl.scan_parquet(files, schema=LANDING_SCHEMA, missing_columns="insert")
        .filter((pl.col("source") == "collector") & pl.col("event_id").str.starts_with(prefix))
        .select("event_id")
        .collect()
    )
    return frame["event_id"]


# -- HTTP/1.1 by hand -----------------------------------------------------------------------------


def http_request(path: str, port: int, body: bytes) -> bytes:
    """A complete POST request with the API key, ready to write on a keep-alive connection."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nX-API-Key: {API_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Connection:
    """One keep-alive HTTP/1.1 connection, reopened after an error; responses read by Content-Length."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send a pre-encoded request; (status, body). Raises OSError/EOFError when the server went."""
        try:
            await self.open()
            assert self.reader is not None and self.writer is not None
            self.writer.write(raw)
            await self.writer.drain()
            head = await self.reader.readuntil(b"\r\n\r\n")
            length, close = 0, False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection":
                    close = value.strip().lower() == b"close"
            body = await self.reader.readexactly(length) if length else b""
        except BaseException:
            self.close()
            raise
        if close:
            self.close()
        return int(head[9:12]), body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


CONNECTION_ERRORS = (OSError, EOFError, ValueError, TimeoutError)  # refused/reset, closed, garbled, hung


def run_async(coro: Awaitable[Any]) -> Any:
    """Run `coro` on uvloop when installed (a cheaper client), else asyncio's own loop."""
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def now() -> float:
    """The clock of every load timing: uvloop's loop.time() only has millisecond resolution."""
    return time.perf_counter()


def client_cpu_seconds() -> float:
    """CPU seconds of this process (the load generator) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- collector load -------------------------------------------------------------------------------


class Batches:
    """Pre-encoded requests of BATCH_EVENTS events each; batch k's event ids are `{prefix}{k:08d}-{i:03d}`.

    A few templates (each a different slice of players) hold MARK where the batch number goes, so a
    batch costs the client one bytes.replace, and its ids can be recomputed from k for the checks.
    The prefix is `name` and a number unique in the run: the collector would drop ids it has seen.
    """

    sets = itertools.count()

    def __init__(self, name: str, players: list[str], port: int, variants: int = 8) -> None:
        self.prefix = f"{name}{next(Batches.sets)}-"
        at = datetime.now(UTC)
        self.templates = [self._template(v, players, port, at) for v in range(variants)]

    def _template(self, variant: int, players: list[str], port: int, at: datetime) -> bytes:
        events = []
        for i in range(BATCH_EVENTS):
            kind = EVENT_TYPES[i % len(EVENT_TYPES)]
            event = {
                "event_id": f"{self.prefix}{MARK.decode()}-{i:03d}",
                "player_id": players[(variant * BATCH_EVENTS + i) % len(players)],
                "event_time": (at - timedelta(milliseconds=37 * i)).isoformat(),
                "event_type": kind,
            }
            if kind != "session_start":
                event["value"] = float(i % 7)
            events.append(event)
        body = json.dumps({"events": events}, separators=(",", ":")).encode()
        return http_request("/v1/events", port, body)

    def request(self, k: int) -> bytes:
        return self.templates[k % len(self.templates)].replace(MARK, b"%08d" % k)

    def ids(self, k: int) -> list[str]:
        return [f"{self.prefix}{k:08d}-{i:03d}" for i in range(BATCH_EVENTS)]

    @property
    def body_bytes(self) -> int:
        return len(self.templates[0])


@dataclass
class CollectorTally:
    """What the collector clients saw: acked batches, the server's counts, retries and failures."""

    acked: list[int] = field(default_factory=list)
    given_up: list[int] = field(default_factory=list)
    accepted: int = 0
    duplicates: int = 0
    retries: int = 0
    connection_errors: int = 0
    statuses: Counter[int] = field(default_factory=Counter)


async def deliver(conn: Connection, raw: bytes, tally: CollectorTally, give_up_at: float) -> bool:
    """Send one batch until a 200 (the same bytes, so the same event ids, on every retry)."""
    while True:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                status, body = await conn.request(raw)
        except CONNECTION_ERRORS:
            tally.connection_errors += 1
        else:
            tally.statuses[status] += 1
            if status == 200:
                reply = json.loads(body)
                tally.accepted += reply["accepted"]
                tally.duplicates += reply["duplicates"]
                return True
        if now() > give_up_at:
            return False
        tally.retries += 1
        await asyncio.sleep(RETRY_PAUSE_S)


async def collector_clients(
    port: int, batches: Batches, connections: int, chaos: Callable[[asyncio.Event], Awaitable[None]]
) -> CollectorTally:
    """`connections` clients sending batches back to back until `chaos` (run alongside) sets stop."""
    stop = asyncio.Event()
    tally = CollectorTally()
    numbers = itertools.count()

    async def client() -> None:
        conn = Connection(port)
        while not stop.is_set():
            k = next(numbers)
            ok = await deliver(conn, batches.request(k), tally, now() + 120)
            (tally.acked if ok else tally.given_up).append(k)
        conn.close()

    await asyncio.gather(chaos(stop), *(client() for _ in range(connections)))
    return tally


@dataclass
class Bench:
    """What every measurement shares: the lake home, the work dir, the port, the server's extra
    environment, the players with online features, the durations."""

    home: Path
    work: Path
    port: int
    env: dict[str, str]
    players: list[str]
    plan: Plan
    connections: int

    def server(self, env: dict[str, str] | None = None, **serving: Any) -> Serve:
        """A started server on settings `serving` (the rest: defaults), `env` added to its environment."""
        write_settings(self.home, **serving)
        server = Serve(self.home, self.port, self.work, {**self.env, **(env or {})})
        server.start()
        return server


def check_landed(home: Path, batches: Batches, tally: CollectorTally) -> dict[str, Any]:
    """Acked ids against the collector's rows in landing (after SIGTERM): lost, duplicated, extra."""
    acked = {i for k in tally.acked for i in batches.ids(k)}
    landed = landed_collector_ids(home, batches.prefix)
    landed_set = set(landed.to_list())
    spool = list((home / "serving" / "spool").glob("*.parquet"))
    return {
        "acked_events": len(acked),
        "landed_rows": landed.len(),
        "lost": len(acked - landed_set),
        "duplicates": landed.len() - len(landed_set),
        "landed_not_acked": len(landed_set - acked),
        "spool_files_left": len(spool),
        "exact": acked == landed_set and landed.len() == len(landed_set),
    }


def collector_throughput(bench: Bench, warm: bool) -> dict[str, Any]:
    """Batches back to back for plan.collector_s; events/s, server and client CPU, the landing check."""
    warm_s = WARM_SECONDS if warm else 3600
    server = bench.server(warm_seconds=warm_s)
    idle = idle_cpu(server, 2.0)
    batches = Batches("tp", bench.players, bench.port)
    rss0, cpu0, client0 = server.rss_bytes(), server.cpu_seconds(), client_cpu_seconds()
    wall0 = time.perf_counter()

    async def run_for(stop: asyncio.Event) -> None:
        await asyncio.sleep(bench.plan.collector_s)
        stop.set()

    tally: CollectorTally = run_async(collector_clients(bench.port, batches, bench.connections, run_for))
    wall = time.perf_counter() - wall0
    cpu, client = server.cpu_seconds() - cpu0, client_cpu_seconds() - client0
    rss1, status = server.rss_bytes(), server.status()
    stop_s = server.stop()
    events = tally.accepted
    return {
        "variant": "with warm path" if warm else "collector alone",
        "warm_seconds": warm_s,
        "connections": bench.connections,
        "batch_events": BATCH_EVENTS,
        "batch_bytes": batches.body_bytes,
        "idle_cpu_share": round(idle, 3),
        "wall_s": round(wall, 2),
        "batches_acked": len(tally.acked),
        "events_acked": events,
        "duplicates_reported": tally.duplicates,
        "non_200": sum(n for s, n in tally.statuses.items() if s != 200) + tally.connection_errors,
        "events_per_s": round(events / wall),
        "server_cpu_s": round(cpu, 2),
        "events_per_server_cpu_s": round(events / cpu) if cpu else None,
        "client_cpu_s": round(client, 2),
        "client_cpu_share": round(client / wall, 3),
        "server_rss_growth_bytes_per_event": round((rss1 - rss0) / events, 1) if events else None,
        "stop_s": round(stop_s, 2),
        "warm": status.get("warm"),
        "collector_status": status.get("collector"),
        "landing": check_landed(bench.home, batches, tally),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def idle_cpu(server: Serve, seconds: float) -> float:
    """The CPU share of the server and its warm path over `seconds` (idle: their background loops)."""
    before = server.tree_cpu_seconds()
    time.sleep(seconds)
    return (server.tree_cpu_seconds() - before) / seconds


# -- prediction load ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One request of an open-loop run: when it was due, handed to the connections (the
    client's own timer lag), sent and answered (`now()` seconds); status 0: no answer, NOT_SENT:
    given up as LATE_GIVE_UP_S late."""

    scheduled: float
    queued: float
    sent: float
    done: float
    status: int
    body: bytes


async def open_loop(
    port: int,
    requests: list[bytes],
    rate: float,
    seconds: float,
    connections: int = 16,
    stop: asyncio.Event | None = None,
) -> list[Sample]:
    """Requests due every 1/rate s for `seconds` (or until `stop`), handed to the first free of
    `connections` keep-alive connections; a request waiting for a free connection is late, and its
    latency (counted from when it was due) says so. One over LATE_GIVE_UP_S late is not sent."""
    queue: asyncio.Queue[tuple[float, float, bytes] | None] = asyncio.Queue()
    samples: list[Sample] = []
    conns = [Connection(port) for _ in range(connections)]
    await asyncio.gather(*(c.open() for c in conns))

    async def worker(conn: Connection) -> None:
        while (item := await queue.get()) is not None:
            due, queued, raw = item
            sent = now()
            if sent - due > LATE_GIVE_UP_S:
                samples.append(Sample(due, queued, sent, sent, NOT_SENT, b""))
                continue
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    status, body = await conn.request(raw)
            except CONNECTION_ERRORS:
                status, body = 0, b""
            samples.append(Sample(due, queued, sent, now(), status, body))
        conn.close()

    workers = [asyncio.create_task(worker(c)) for c in conns]
    start = now() + 0.01
    for i in itertools.count():
        due = start + i / rate
        if due - start >= seconds or (stop is not None and stop.is_set()):
            break
        if (delay := due - now()) > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((due, now(), requests[i % len(requests)]))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return samples


def predict_requests(port: int, players: list[str], per_request: int) -> list[bytes]:
    """Pre-encoded churn predictions, one player (`player_id`) or several (`player_ids`) each."""
    out = []
    for start in range(0, len(players) - per_request + 1, per_request):
        chunk = players[start : start + per_request]
        payload = {"player_id": chunk[0]} if per_request == 1 else {"player_ids": chunk}
        out.append(http_request("/v1/predict/churn", port, json.dumps(payload).encode()))
    return out


def latency_summary(samples: list[Sample]) -> dict[str, Any]:
    """p50/p99/max from the due time (ms; failures count with their time to fail), achieved rate of
    200s, errors, and the client's own timer lag."""
    if not samples:
        return {"requests": 0}
    ok = [s for s in samples if s.status == 200]
    late = sum(s.status == NOT_SENT for s in samples)
    latency = np.array([(s.done - s.scheduled) * 1000 for s in samples])
    lag = np.array([(s.queued - s.scheduled) * 1000 for s in samples])
    span = max(s.done for s in samples) - min(s.scheduled for s in samples)
    return {
        "requests": len(samples),
        "ok": len(ok),
        "errors": len(samples) - len(ok) - late,  # the server's: non-200 or no answer
        "not_sent_late": late,
        "achieved_rps": round(len(ok) / span, 1) if span > 0 else None,
        "p50_ms": round(float(np.percentile(latency, 50)), 2),
        "p99_ms": round(float(np.percentile(latency, 99)), 2),
        "max_ms": round(float(latency.max()), 2),
        "timer_lag_p99_ms": round(float(np.percentile(lag, 99)), 2),
    }


def answers(samples: list[Sample]) -> list[dict[str, Any]]:
    """The first prediction of each 200 answer (with the answer's `degraded` flag)."""
    out = []
    for s in samples:
        if s.status == 200:
            reply = json.loads(s.body)
            out.append(reply["predictions"][0] | {"degraded": reply["degraded"], "done": s.done})
    return out


def rate_run(server: Serve, requests: list[bytes], rate: int, seconds: float) -> dict[str, Any]:
    """One open-loop run at `rate`, with the server's and the client's CPU."""
    cpu0, client0, wall0 = server.cpu_seconds(), client_cpu_seconds(), time.perf_counter()
    samples: list[Sample] = run_async(open_loop(server.port, requests, rate, seconds))
    wall, cpu = time.perf_counter() - wall0, server.cpu_seconds() - cpu0
    return {
        "rate": rate,
        **latency_summary(samples),
        "item_errors": sum("error" in a for a in answers(samples)),
        "wall_s": round(wall, 2),
        "server_cpu_share": round(cpu / wall, 2),
        "server_cpu_ms_per_request": round(cpu * 1000 / len(samples), 2),
        "client_cpu_share": round((client_cpu_seconds() - client0) / wall, 2),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def prediction_latency(bench: Bench, server: Serve) -> list[dict[str, Any]]:
    """The rate sweep with one player a request, then GOAL_RATE with 10 players a request."""
    singles = predict_requests(bench.port, bench.players, 1)
    tens = predict_requests(bench.port, bench.players, 10)
    run_async(open_loop(bench.port, singles, 100, 1.0))  # warm-up: connections, first scores
    rows = []
    for rate, per_request in [*((r, 1) for r in bench.plan.rates), (GOAL_RATE, 10)]:
        row = rate_run(server, singles if per_request == 1 else tens, rate, bench.plan.rate_s)
        rows.append({"players_per_request": per_request, "load": "-", **row})
        log(
            f"  {rate} rps x {per_request}: p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
            f"errors {row['errors']}"
        )
    return rows


async def paced_batches(
    port: int, batches: Batches, events_per_s: float, stop: asyncio.Event
) -> CollectorTally:
    """One client sending a batch every BATCH_EVENTS / events_per_s seconds until `stop`."""
    conn, tally, start = Connection(port), CollectorTally(), now()
    for k in itertools.count():
        if stop.is_set():
            break
        ok = await deliver(conn, batches.request(k), tally, now() + 30)
        (tally.acked if ok else tally.given_up).append(k)
        await asyncio.sleep(max(0.0, start + (k + 1) * BATCH_EVENTS / events_per_s - now()))
    conn.close()
    return tally


def mixed_load(bench: Bench, server: Serve, events_per_s: int) -> dict[str, Any]:
    """GOAL_RATE predictions while a collector client sends `events_per_s`: the warm path's ticks
    (every WARM_SECONDS, over the players just heard from) run in the same process."""
    singles = predict_requests(bench.port, bench.players, 1)
    batches = Batches("mx", bench.players, bench.port)
    cpu0, client0, wall0 = server.cpu_seconds(), client_cpu_seconds(), time.perf_counter()

    async def load() -> tuple[list[Sample], CollectorTally]:
        stop = asyncio.Event()
        feeder = asyncio.create_task(paced_batches(bench.port, batches, events_per_s, stop))
        samples = await open_loop(bench.port, singles, GOAL_RATE, bench.plan.mixed_s)
        stop.set()
        return samples, await feeder

    samples, tally = run_async(load())
    wall = time.perf_counter() - wall0
    warm = server.status()["warm"]
    row = {
        "rate": GOAL_RATE,
        "players_per_request": 1,
        "load": f"+ {events_per_s:,} events/s collected",
        **latency_summary(samples),
        "item_errors": sum("error" in a for a in answers(samples)),
        "wall_s": round(wall, 2),
        "server_cpu_share": round((server.cpu_seconds() - cpu0) / wall, 2),
        "server_cpu_ms_per_request": None,  # the collector's share is in there too
        "client_cpu_share": round((client_cpu_seconds() - client0) / wall, 2),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "events_acked": tally.accepted,
        "collector_non_200": tally.connection_errors + sum(n for s, n in tally.statuses.items() if s != 200),
        "warm": warm,
    }
    log(
        f"  {GOAL_RATE} rps + {events_per_s} events/s: p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
        f"{tally.accepted:,} events collected, warm ticks {warm['ticks']}, last tick "
        f"{_round(warm['last_seconds'])} s over {warm['last_events']:,} events"
    )
    return row


# -- chaos ----------------------------------------------------------------------------------------


def collector_crash(bench: Bench) -> dict[str, Any]:
    """Batches with retries while the server is SIGKILLed and restarted plan.kills times; then the check."""
    server, plan = bench.server(), bench.plan
    batches = Batches("cr", bench.players, bench.port)
    restarts: list[float] = []

    async def kill_and_restart(stop: asyncio.Event) -> None:
        for _ in range(plan.kills):
            await asyncio.sleep(plan.chaos_lead_s)
            server.kill()
            restarts.append(await asyncio.to_thread(server.start))
            log(f"  killed and restarted in {restarts[-1]:.1f} s")
        await asyncio.sleep(plan.chaos_tail_s)
        stop.set()

    tally: CollectorTally = run_async(
        collector_clients(bench.port, batches, bench.connections, kill_and_restart)
    )
    server.stop()
    return {
        "kills": plan.kills,
        "restart_s": [round(r, 2) for r in restarts],
        "batches_acked": len(tally.acked),
        "batches_given_up": len(tally.given_up),
        "retries": tally.retries,
        "connection_errors": tally.connection_errors,
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "duplicates_reported": tally.duplicates,
        "landing": check_landed(bench.home, batches, tally),
    }


def redis_outage(bench: Bench, rate: int) -> dict[str, Any]:
    """Redis as the online store, filled by `materialize`, killed under prediction load."""
    plan = bench.plan
    redis = Redis(bench.work)
    write_settings(bench.home, online_store="redis", redis_url=redis.url)
    fill_s = run_cli(bench.work, "materialize", "--home", str(bench.home), "--select", "online_features")
    server = bench.server(online_store="redis", redis_url=redis.url)
    try:
        server.settle()
        store_before = server.status()["online_store"]
        requests = predict_requests(bench.port, bench.players, 1)
        run_async(open_loop(bench.port, requests, 100, 1.0))
        killed_at: list[float] = []

        async def kill_redis() -> None:
            await asyncio.sleep(plan.chaos_lead_s)
            redis.kill()
            killed_at.append(now())

        async def load() -> list[Sample]:
            seconds = plan.chaos_lead_s + plan.outage_s
            samples, _ = await asyncio.gather(open_loop(bench.port, requests, rate, seconds), kill_redis())
            return samples

        samples: list[Sample] = run_async(load())
        store_after = server.status()["online_store"]
    finally:
        server.stop()
    # split by when the request reached the server: before or after Redis went
    before = [s for s in samples if s.sent < killed_at[0]]
    during = [s for s in samples if s.sent >= killed_at[0]]
    return {
        "rate": rate,
        "fill_s": round(fill_s, 1),
        "store_before": store_before,
        "store_after": {k: store_after.get(k) for k in ("kind", "breaker", "up")},
        "before": latency_summary(before) | {"sources": dict(Counter(a["source"] for a in answers(before)))},
        "outage": latency_summary(during) | {"sources": dict(Counter(a["source"] for a in answers(during)))},
        "item_errors": sum("error" in a for a in answers(samples)),
    }


def promotion(bench: Bench, server: Serve, rate: int, new: str) -> dict[str, Any]:
    """`ml-assets models promote churn NEW` under open-loop load: when answers switch, what failed."""
    plan = bench.plan
    requests = predict_requests(bench.port, bench.players, 1)
    marks: dict[str, float] = {}
    offset = time.time() - now()  # now() -> epoch seconds

    async def promote(stop: asyncio.Event) -> None:
        await asyncio.sleep(plan.chaos_lead_s)
        marks["cli_start"] = now()
        args = ("models", "promote", "churn", new, "--home", str(bench.home))
        await asyncio.to_thread(run_cli, bench.work, *args)
        marks["cli_end"] = now()
        await asyncio.sleep(plan.chaos_tail_s)
        stop.set()

    async def load() -> list[Sample]:
        stop = asyncio.Event()
        samples, _ = await asyncio.gather(
            open_loop(bench.port, requests, rate, 600, stop=stop), promote(stop)
        )
        return samples

    samples: list[Sample] = run_async(load())
    committed = production_change_at(bench.home, "churn", new).timestamp() - offset
    served = answers(samples)
    first_new = min((a["done"] for a in served if a["version"] == new), default=None)
    last_old = max((a["done"] for a in served if a["version"] != new), default=None)
    return {
        "rate": rate,
        "new_version": new,
        "cli_s": round(marks["cli_end"] - marks["cli_start"], 2),
        "commit_after_cli_start_s": round(committed - marks["cli_start"], 2),
        "first_new_after_commit_s": None if first_new is None else round(first_new - committed, 2),
        "last_old_after_commit_s": None if last_old is None else round(last_old - committed, 2),
        "versions": dict(Counter(a["version"] for a in served)),
        "before_cli": latency_summary([s for s in samples if s.scheduled < marks["cli_start"]]),
        "during_cli": latency_summary(
            [s for s in samples if marks["cli_start"] <= s.scheduled < marks["cli_end"]]
        ),
        "after_cli": latency_summary([s for s in samples if s.scheduled >= marks["cli_end"]]),
        "errors": sum(s.status not in (200, NOT_SENT) for s in samples),
        "not_sent_late": sum(s.status == NOT_SENT for s in samples),
    }


# -- report ---------------------------------------------------------------------------------------


def collector_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    headers = [
        "variant", "events acked", "events/s", "server CPU s", "events / server CPU-s",
        "client CPU share", "non-200", "lost", "dup", "exact", "warm ticks", "warm last tick s",
    ]  # fmt: skip
    body = [
        [
            r["variant"], f"{r['events_acked']:,}", f"{r['events_per_s']:,}", r["server_cpu_s"],
            f"{r['events_per_server_cpu_s']:,}", f"{r['client_cpu_share']:.0%}", r["non_200"],
            r["landing"]["lost"], r["landing"]["duplicates"], "yes" if r["landing"]["exact"] else "NO",
            (r["warm"] or {}).get("ticks"), _round((r["warm"] or {}).get("last_seconds")),
        ]
        for r in rows
    ]  # fmt: skip
    return headers, body


def latency_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    headers = [
        "server env", "rate", "players/request", "alongside", "achieved rps", "p50 ms", "p99 ms",
        "max ms", "errors", "not sent (>10 s late)", "client timer lag p99 ms", "server CPU share",
        "server CPU ms / request", "client CPU share", "load avg",
    ]  # fmt: skip
    body = [
        [
            r["server_env"], r["rate"], r["players_per_request"], r["load"], r["achieved_rps"],
            r["p50_ms"], r["p99_ms"], r["max_ms"], r["errors"] + r["item_errors"], r["not_sent_late"],
            r["timer_lag_p99_ms"],
            f"{r['server_cpu_share']:.0%}", r["server_cpu_ms_per_request"] or "-",
            f"{r['client_cpu_share']:.0%}", r["loadavg_1m"],
        ]
        for r in rows
    ]  # fmt: skip
    return headers, body


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def chaos_lines(crash: dict[str, Any], outage: dict[str, Any], promo: dict[str, Any]) -> list[str]:
    """One paragraph per chaos run: what happened."""
    land = crash["landing"]
    return [
        f"- collector crash: {crash['kills']} SIGKILL(s), restarts took {crash['restart_s']} s; "
        f"{crash['batches_acked']} batches acked ({land['acked_events']:,} events) after {crash['retries']} "
        f"retries ({crash['connection_errors']} connection errors, statuses {crash['statuses']}, "
        f"{crash['duplicates_reported']} events answered as duplicates); landed {land['landed_rows']:,}: "
        f"**lost {land['lost']}, duplicated {land['duplicates']}**, landed but never acked "
        f"{land['landed_not_acked']}, spool files left {land['spool_files_left']}.",
        f"- Redis down at {outage['rate']} rps: before the kill {outage['before']['sources']} "
        f"(p99 {outage['before']['p99_ms']} ms); during the outage {outage['outage']['sources']}, "
        f"**{outage['outage']['errors']} non-200** ({outage['outage']['not_sent_late']} not sent, over "
        f"{LATE_GIVE_UP_S:g} s late), {outage['item_errors']} answers without a score, "
        f"**p99 {outage['outage']['p99_ms']} ms** (max {outage['outage']['max_ms']} ms); afterwards the "
        f"breaker is {outage['store_after']['breaker']}, store up: {outage['store_after']['up']}.",
        f"- promotion at {promo['rate']} rps: the CLI took {promo['cli_s']} s (registry commit "
        f"{promo['commit_after_cli_start_s']} s after it started); first answer with the new version "
        f"**{promo['first_new_after_commit_s']} s after the commit**, last with the old one "
        f"{promo['last_old_after_commit_s']} s after it; versions served {promo['versions']}; "
        f"**{promo['errors']} failed requests** ({promo['not_sent_late']} not sent, over "
        f"{LATE_GIVE_UP_S:g} s late); p99 {promo['before_cli']['p99_ms']} ms before the CLI, "
        f"{promo['during_cli']['p99_ms']} ms while it ran, {promo['after_cli']['p99_ms']} ms after.",
    ]


def goal_lines(collector: list[dict[str, Any]], latency: list[dict[str, Any]]) -> list[str]:
    """Each goal, met or not."""
    lines = []
    for r in collector:
        per_cpu = r["events_per_server_cpu_s"] or 0
        met = "met" if per_cpu >= GOAL_EVENTS_PER_CPU_S else "NOT met"
        lines.append(
            f"- collector ({r['variant']}): {per_cpu:,} events per server CPU-second "
            f"(goal >= {GOAL_EVENTS_PER_CPU_S:,}: {met}); landing exact: {r['landing']['exact']}"
        )
    for r in latency:
        if r["rate"] == GOAL_RATE and r["players_per_request"] == 1:
            met = "met" if r["p99_ms"] < GOAL_P99_MS and not r["errors"] else "NOT met"
            alongside = "" if r["load"] == "-" else ", " + r["load"]
            lines.append(
                f"- predictions at {GOAL_RATE} rps ({r['server_env']}{alongside}): "
                f"p99 {r['p99_ms']} ms (goal < {GOAL_P99_MS:g} ms: {met})"
            )
    return lines


def save(out: Path, payload: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "serving.json", out / "serving.md"
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    md_path.write_text(markdown.rstrip() + "\n")
    return json_path, md_path


def report(out: Path, results: dict[str, Any]) -> None:
    """Print the tables and the chaos runs; save them as serving.json and serving.md."""
    c_headers, c_rows = collector_table(results["collector"])
    l_headers, l_rows = latency_table(results["latency"])
    chaos = chaos_lines(results["crash"], results["redis"], results["promotion"])
    goals = goal_lines(results["collector"], results["latency"])
    print("\nCollector throughput (durable: 200 only after fsync)")
    print(text_table(c_headers, c_rows))
    print("\nPrediction latency, open loop (from each request's due time)")
    print(text_table(l_headers, l_rows))
    print("\nChaos under load")
    print("\n".join(chaos))
    print("\nGoals")
    print("\n".join(goals))
    info = results["machine"]
    env = f"; server environment {results['server_env']}" if results["server_env"] else ""
    md = "\n\n".join(
        [
            "# `ml-assets serve` under load",
            f"`{results['command']}` on {info['cpu']}, {info['cores']} cores, load average "
            f"{results['loadavg_before']} before and {results['loadavg_after']} after; demo lake of "
            f"{results['lake']['players']:,} players with online features{env}.",
            "## Collector throughput (durable)",
            markdown_table(c_headers, c_rows),
            "## Prediction latency, open loop",
            markdown_table(l_headers, l_rows),
            "## Chaos under load",
            "\n".join(chaos),
            "## Goals",
            "\n".join(goals),
        ]
    )
    paths = save(out, results, md)
    print(f"saved {paths[0]} and {paths[1]}")


# -- main -----------------------------------------------------------------------------------------


def env_label(env: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in env.items()) or "as run"


def prediction_phases(
    bench: Bench, variants: list[dict[str, str]]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The latency sweep and predictions with collector load alongside, on a server per environment
    variant (each measured once its warm path's first tick is over); on the first, the promotion
    of a second churn version (registered before the server starts)."""
    new = register_copy(bench.home, "churn")
    latency: list[dict[str, Any]] = []
    promo: dict[str, Any] = {}
    for env in variants:
        label = env_label({**bench.env, **env})
        server = bench.server(env)
        try:
            log(f"[serving] prediction latency, {label} (settled {server.settle():.0f} s) ...")
            rows = [*prediction_latency(bench, server), mixed_load(bench, server, 2_500)]
            latency += [{"server_env": label, **r} for r in rows]
            if not promo:
                log(f"[serving] promotion of churn {new} under load ...")
                promo = promotion(bench, server, 250, new)
        finally:
            server.stop()
    return latency, promo


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Every measurement on one demo lake in `work`; the results."""
    home = work / "home"
    log(f"[serving] building the demo lake in {home} ...")
    demo_s = build_lake(home, work, Path(args.lake) if args.lake else None)
    env = dict(kv.split("=", 1) for kv in args.server_env)
    bench = Bench(home, work, free_port(), env, online_players(home), Plan.of(args.quick), args.connections)
    log(f"[serving] lake ready ({demo_s:.0f} s): {len(bench.players):,} players with online features")
    collector = []
    for warm in (False, True):
        log(f"[serving] collector throughput, {'with' if warm else 'without'} the warm path ...")
        collector.append(r := collector_throughput(bench, warm))
        log(f"  {r['events_per_s']:,} events/s, {r['events_per_server_cpu_s']:,} per server CPU-s")
    variants = [{}, *(dict([kv.split("=", 1)]) for kv in args.also_env)]
    latency, promo = prediction_phases(bench, variants)
    log("[serving] collector crash under load ...")
    crash = collector_crash(bench)
    log("[serving] Redis down under load ...")
    outage = redis_outage(bench, 250)
    return {
        "command": "python benchmarks/bench_serving.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "server_env": env,
        "plan": asdict(bench.plan),
        "lake": {"players": len(bench.players), "demo_s": round(demo_s, 1)},
        "collector": collector,
        "latency": latency,
        "promotion": promo,
        "crash": crash,
        "redis": outage,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a few seconds per measurement (development)")
    p.add_argument("--out", default=str(RESULTS_DIR), help="where serving.json and serving.md go")
    p.add_argument("--connections", type=int, default=8, help="collector clients (keep-alive connections)")
    p.add_argument("--lake", help="copy this demo home instead of building one (development)")
    p.add_argument(
        "--server-env", action="append", default=[], metavar="KEY=VALUE", help="extra server environment"
    )
    p.add_argument(
        "--also-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="repeat the latency measurements on a server with this variable too (side by side)",
    )
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, lake)")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally below runs
    loadavg = [round(x, 2) for x in os.getloadavg()]
    work = Path(tempfile.mkdtemp(prefix="ml_assets_serving_"))
    keep = args.keep
    try:
        results = run(args, work)
    except BaseException:
        keep = True  # the logs say what went wrong
        raise
    finally:
        kill_all()
        if keep:
            log(f"[serving] kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["loadavg_before"] = loadavg
    results["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    report(Path(args.out), results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
