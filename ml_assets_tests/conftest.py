"""Fixtures: small seeded lakes in tmp dirs, and helpers to run the graph on an ephemeral instance."""

import json
import os
import re
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from ml_assets.app.runner import execute
from ml_assets.core.settings import Settings, load_settings
from ml_assets.simulator.game import SimulationParams, simulate
from ml_assets_tests import pg

REPO = Path(__file__).resolve().parents[1]


# Both shipped models, with a small tuning budget so graph tests stay quick.
TEST_SETTINGS = """
[models.churn]
label = "rolling"
horizon_days = 14
tuning_trials = 2

[models.first_purchase]
label = "first_purchase"
horizon_days = 14
tuning_trials = 0
"""


def make_lake(
    home: Path, players: int = 300, days: int = 45, dirty_rate: float = 0.02, settings: str = TEST_SETTINGS
) -> Settings:
    """A lake home with `days` of simulated telemetry landed and `settings` as its ml_assets.toml."""
    simulate(home / "landing", SimulationParams(players=players, days=days, seed=11, dirty_rate=dirty_rate))
    (home / "ml_assets.toml").write_text(settings)
    return load_settings(home)


def run_graph(
    settings: Settings,
    instance: dg.DagsterInstance,
    first: str,
    last: str,
    select: Sequence[str] | None = None,
) -> dg.JobExecutionResult:
    """Materialize (a selection of) the graph over [first, last] as one run."""
    return execute(settings, instance, select, first, last)


def read_table(settings: Settings, name: str) -> pl.DataFrame:
    return pl.read_delta(f"{settings.lake_uri}/{name}")


# Checks whose outcome depends on the wall clock (freshness of 2025 test data) or on how much a tiny
# lake lets a model learn (beats_baseline): asserted in their own tests, not in "all passed".
ADVISORY = ("freshness", "beats_baseline")


def data_checks_passed(result: dg.JobExecutionResult) -> bool:
    """Every check of the run passed, advisory ones aside."""
    return all(v for k, v in check_results(result).items() if not k.endswith(ADVISORY))


def check_results(result: dg.JobExecutionResult) -> dict[str, bool]:
    """`asset:check` -> passed, for every check evaluated in the run."""
    out = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.asset_check_evaluation_data
            out[f"{data.asset_key.to_user_string()}:{data.check_name}"] = data.passed
    return out


@pytest.fixture
def small_lake(tmp_path: Path) -> Settings:
    return make_lake(tmp_path / "home")


@pytest.fixture
def instance() -> dg.DagsterInstance:
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


@pytest.fixture
def receiver():
    """A webhook receiver on loopback; yields (url, received bodies)."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()


def require(available: bool, what: str, install: str) -> None:
    """Skip a test whose system dependency is missing, naming the install command; under CI=true
    fail instead, so CI always runs it (.ci/run installs it)."""
    if available:
        return
    message = f"{what} is not installed; install it with: {install}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true: {message}")
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[pg.Postgres]:
    """Debian's PostgreSQL, started once for the session in a temporary folder (ml_assets_tests/pg.py)."""
    bin_dir = pg.binaries()
    require(bin_dir is not None, "PostgreSQL (/usr/lib/postgresql/*/bin)", pg.INSTALL)
    assert bin_dir is not None
    with pg.running_postgres(bin_dir) as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: pg.Postgres, request: pytest.FixtureRequest) -> str:
    """The URL, password included, of a new database of its own for this test."""
    return postgres_server.create_database(re.sub(r"\W", "_", request.node.name.lower())[:60])
