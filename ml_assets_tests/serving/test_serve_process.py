"""`ml-assets serve` as users run it (a process on a port), killed with SIGKILL under load: no event
it acknowledged is lost, and clients that retry the same ids leave no duplicates."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from ml_assets.core.events.landing import LANDING_SCHEMA
from ml_assets.core.models.registry import Registry
from ml_assets.lake.tables import MODEL_REGISTRY, table_uri
from ml_assets_tests.service import free_port

KEY = "crash-key"


def start(home: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "ML_ASSETS_API_KEYS": KEY}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ml_assets.app.cli", "serve", "--home", str(home), "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return process
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
        if process.poll() is not None:
            break
    process.kill()
    pytest.fail(f"ml-assets serve did not start: {log.read_text()[-2000:]}")


def serve(tmp_path: Path, setting: str) -> tuple[Path, int, subprocess.Popen]:
    """A new, empty lake home with one extra `[serving]` setting, and a server on a free port."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "ml_assets.toml").write_text(f"[serving]\nwarm_seconds = 3600\n{setting}\n")
    port = free_port()
    return home, port, start(home, port, tmp_path / "serve.log")


def post(port: int, events: list[dict]) -> int:
    body = json.dumps({"events": events}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/events", body, {"X-API-Key": KEY, "Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0  # no answer: the client does not know, and must send the same batch again


def stored_ids(home: Path) -> pl.Series:
    """Event ids in landing batches and the collector's spool (what a restart lands)."""
    files = [*home.glob("landing/*.parquet"), *home.glob("serving/spool/*.parquet")]
    if not files:
        return pl.Series("event_id", [], pl.String)
    return pl.read_parquet(files, schema=LANDING_SCHEMA, missing_columns="insert")["event_id"]


def test_sigkill_under_load_loses_no_acknowledged_event_and_retries_add_no_duplicates(tmp_path):
    home, port, server = serve(tmp_path, "roll_seconds = 0.5")
    log = tmp_path / "serve.log"
    acked: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()
    now = datetime.now(UTC).isoformat()

    def client(k: int) -> None:
        for j in range(12):
            batch = [
                {"event_id": f"c{k}-{j}-{i}", "player_id": f"p{k}", "event_time": now, "event_type": "tap"}
                for i in range(200)
            ]
            while not stop.is_set():  # the same ids again until the collector says they are durable
                if post(port, batch) == 200:
                    with lock:
                        acked.update(e["event_id"] for e in batch)
                    break
                time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(acked) < 2000 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
        with lock:
            acked_before_kill = set(acked)
        assert len(acked_before_kill) >= 2000
        assert acked_before_kill <= set(stored_ids(home))  # nothing acknowledged was lost
        server = start(home, port, log)
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads)
    finally:
        stop.set()
        server.send_signal(signal.SIGTERM)  # a clean stop lands the spool
        server.wait(timeout=30)
    ids = stored_ids(home)
    assert len(acked) == 4 * 12 * 200
    assert set(ids) == acked and ids.len() == ids.n_unique()
    assert list(home.glob("serving/spool/*.parquet")) == []


def test_stage_changes_reach_server_sent_event_subscribers(tmp_path):
    home, port, server = serve(tmp_path, "reload_seconds = 0.2")
    messages: list[dict] = []

    def listen() -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/models/events", headers={"X-API-Key": KEY}
        )
        with urllib.request.urlopen(request, timeout=20) as stream:
            for raw in stream:
                line = raw.decode().strip()
                if line.startswith("data: "):
                    messages.append(json.loads(line[6:]))
                    if messages[-1]["stage"] == "production":
                        return

    listener = threading.Thread(target=listen, daemon=True)
    try:
        listener.start()
        time.sleep(1.0)  # subscribed before the change
        registry = Registry(table_uri(str(home / "lake"), MODEL_REGISTRY))
        registry.register("churn", "v-sse", "test", "a version to announce")
        registry.set_stage("churn", "v-sse", "production", "test", "announce it")
        listener.join(timeout=15)
        # a subscriber still connected does not keep the server from stopping
        lingering = socket.create_connection(("127.0.0.1", port))
        lingering.sendall(f"GET /v1/models/events HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\n\r\n".encode())
        assert lingering.recv(100).startswith(b"HTTP/1.1 200")
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
        lingering.close()
    finally:
        if server.poll() is None:
            server.kill()
    assert [(m["model"], m["version"]) for m in messages][-1] == ("churn", "v-sse")
    assert messages[-1]["stage"] == "production" and messages[-1]["reason"] == "announce it"
