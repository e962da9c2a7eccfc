"""The home's dagster.yaml: written by `ml-assets` from `[instance]`, kept where its user edited it.

Storage is Dagster's SQLite files with a pooled event log (instance_storage.py) by default, or
PostgreSQL through dagster-postgres (the `postgres` extra). A URL taken from $ML_ASSETS_POSTGRES_URL is
written as `{env: ML_ASSETS_POSTGRES_URL}`: each Dagster process reads it from its own environment,
so its password never lands in the file.
"""

import importlib.util
import json
import os
import re
from pathlib import Path

from ml_assets.core.config import SettingsError
from ml_assets.core.settings import POSTGRES_URL_ENV, Settings

# no telemetry from a laptop lake
TELEMETRY_CONFIG = "telemetry:\n  enabled: false\n"
# One run at a time by default: the daemon's runs (landed days, retrains, automation) write the same
# Delta tables and take turns on the lake's writer lock, so more at once mostly wait. Queued runs
# wait in Dagster's queue instead (QueuedRunCoordinator, Dagster's default coordinator).
RUN_QUEUE_HEAD = "concurrency:\n  runs:\n    max_concurrent_runs: "
_RUN_QUEUE_LIMIT = re.compile(re.escape(RUN_QUEUE_HEAD) + r"-?\d+\n")
# Dagster's SQLite event log in the same files, with pooled connections: a range run stores one event
# per asset per day, 3x cheaper so (ml_assets/app/instance_storage.py)
EVENT_LOG_HEAD = "event_log_storage:\n  module: ml_assets.app.instance_storage\n"
# the comment marks the block as ours, so a change of `[instance] storage` replaces it
# dagster-postgres's storage through postgres_storage.py, which keeps it on psycopg2
POSTGRES_HEAD = (
    '# [instance] storage = "postgres" (ml-assets rewrites this block)\nstorage:\n  custom:\n'
    "    module: ml_assets.app.postgres_storage\n    class: PostgresStorage\n    config:\n"
)
_OUR_STORAGE = re.compile(f"(?:{re.escape(EVENT_LOG_HEAD)}|{re.escape(POSTGRES_HEAD)})(?:  .*\n)*")
_STORAGE_KEYS = ("storage:", "event_log_storage:", "run_storage:", "schedule_storage:")
POSTGRES_INSTALL = "pip install -e '.[postgres]'"


def run_queue_config(max_concurrent_runs: int) -> str:
    """The dagster.yaml block limiting the runs in progress at once."""
    return f"{RUN_QUEUE_HEAD}{max_concurrent_runs}\n"


def event_log_config(dagster_home: Path) -> str:
    """The dagster.yaml block of the pooled event log, in the home's own `history/runs` (an absolute
    path: an instance opened with `DagsterInstance.from_config` has no $DAGSTER_HOME to resolve from)."""
    base_dir = json.dumps(str(dagster_home / "history" / "runs"))
    return f"{EVENT_LOG_HEAD}  class: PooledSqliteEventLogStorage\n  config:\n    base_dir: {base_dir}\n"


def postgres_config(settings: Settings) -> str:
    """The dagster.yaml block of PostgreSQL storage: `[instance] postgres_url` as written in the
    settings file, else a reference to $ML_ASSETS_POSTGRES_URL. SettingsError (one line) when
    dagster-postgres is not installed or neither is set."""
    if importlib.util.find_spec("dagster_postgres") is None:
        raise SettingsError(f'[instance] storage = "postgres" needs dagster-postgres: {POSTGRES_INSTALL}')
    if settings.instance.postgres_url:
        url = " " + json.dumps(settings.instance.postgres_url)
    elif os.environ.get(POSTGRES_URL_ENV):
        url = f"\n        env: {POSTGRES_URL_ENV}"
    else:
        raise SettingsError(
            f'[instance] storage = "postgres" needs a URL: [instance] postgres_url or ${POSTGRES_URL_ENV} '
            "(postgresql://user:password@host:5432/database)"
        )
    return f"{POSTGRES_HEAD}      postgres_url:{url}\n"


def storage_config(settings: Settings) -> str:
    """The dagster.yaml storage block `[instance] storage` asks for."""
    if settings.instance.storage == "postgres":
        return postgres_config(settings)
    return event_log_config(settings.dagster_home)


def write_instance_config(settings: Settings) -> Path:
    """The home's dagster.yaml: written when missing. An existing file (a home made before a setting,
    or edited by its user) gets the run queue or the storage block appended only when it says
    nothing about run concurrency or storage; our own storage block follows `[instance] storage` and
    the home (a moved home); `[instance] max_concurrent_runs`, when set, replaces the limit of our
    queue block. Anything else is kept; SettingsError when the file's own setting contradicts one."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    storage = storage_config(settings)
    limit = settings.instance.max_concurrent_runs
    if not config.exists():
        config.write_text(TELEMETRY_CONFIG + run_queue_config(limit or 1) + storage)
        return config
    text = original = config.read_text()
    if not any(key in text for key in ("concurrency:", "run_queue:", "run_coordinator:")):
        text = text.rstrip("\n") + "\n" + run_queue_config(limit or 1)
    elif limit is not None:
        if not _RUN_QUEUE_LIMIT.search(text):
            raise SettingsError(
                f"{config} limits runs its own way: remove that or [instance] max_concurrent_runs"
            )
        text = _RUN_QUEUE_LIMIT.sub(run_queue_config(limit), text)
    ours = _OUR_STORAGE.search(text) is not None
    rest = _OUR_STORAGE.sub("", text)
    own = [key for key in _STORAGE_KEYS if f"\n{key}" in f"\n{rest}"]
    postgres = settings.instance.storage == "postgres"
    if postgres and own and not (own == ["storage:"] and "postgres" in rest):
        raise SettingsError(
            f'{config} configures its own storage ({", ".join(own)}): [instance] storage = "postgres" '
            "cannot apply; remove that from the file"
        )
    if ours:
        text = _OUR_STORAGE.sub(lambda _: storage, text, count=1)
    elif not own or (not postgres and not {"storage:", "event_log_storage:"} & set(own)):
        # a file with only its own run or schedule storage still gets the pooled event log, as before
        text = text.rstrip("\n") + "\n" + storage
    if text != original:
        config.write_text(text)
    return config
