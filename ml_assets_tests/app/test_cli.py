"""The CLI on the SQLite instance under the lake home (the one short test of that path)."""

import json
import os
import pickle
from pathlib import Path

import dagster as dg
import pytest

from ml_assets.app.cli import main
from ml_assets_tests.conftest import ADVISORY


@pytest.fixture(autouse=True)
def _restore_env(monkeypatch):
    # the CLI exports its home and instance to the environment for child processes; undo that after
    for name in ("DAGSTER_HOME", "ML_ASSETS_HOME", "ML_ASSETS_CONFIG"):
        monkeypatch.delenv(name, raising=False)


class _Payload:
    """Unpickling this creates a folder: proof that something loaded a pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def _plant_pickles(home: Path, marker: Path) -> set[Path]:
    planted = set()
    for folder in ("dagster_storage", "dagster/storage"):  # FilesystemIOManager paths, old and default
        for key in ("churn_model", "churn_production_model", "first_purchase_production_model"):
            path = home / folder / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(pickle.dumps(_Payload(marker)))
            planted.add(path)
    return planted


def _pickles_in(home: Path) -> set[Path]:
    """Every file under `home` that starts like a pickle (protocol 2 or later)."""
    out = set()
    for path in home.rglob("*"):
        if path.is_file():
            with path.open("rb") as fh:
                head = fh.read(2)
            if len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
                out.add(path)
    return out


def test_simulate_materialize_status_on_sqlite(tmp_path, capsys):
    home = tmp_path / "home"
    assert main(["--home", str(home), "simulate", "--players", "150", "--days", "35"]) == 0
    assert main(["--home", str(home), "simulate", "--until", "2025-02-09"]) == 0  # extends by 5 days
    out = capsys.readouterr().out
    assert "landed 5 day batches" in out
    assert main(["--home", str(home), "materialize"]) == 0
    capsys.readouterr()
    assert main(["--home", str(home), "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["data_window"] == ["2025-01-01", "2025-02-09"]
    tables = {t["table"]: t for t in status["tables"]}
    assert tables["clean_events"]["partitions"] == 40
    assert (
        tables["raw_events"]["rows"] == tables["clean_events"]["rows"] + tables["quarantined_events"]["rows"]
    )
    # nothing failed; on so small a lake first_purchase may not beat its baseline, so it has no
    # production version and its predictions (and their check) are skipped, not failed
    by_check = {(c["asset"], c["check"]): c["status"] for c in status["checks"] if c["check"] not in ADVISORY}
    assert "FAILED" not in by_check.values()
    assert {v for (asset, _), v in by_check.items() if not asset.startswith("first_purchase")} == {
        "SUCCEEDED"
    }
    assert {m["model"] for m in status["models"]} == {"churn", "first_purchase"}
    # models and experiments, for people and scripts
    capsys.readouterr()
    assert main(["--home", str(home), "models", "list", "--json"]) == 0
    models = json.loads(capsys.readouterr().out)
    churn = next(m for m in models if m["model"] == "churn")
    assert main(["--home", str(home), "experiments", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert {r["model"] for r in runs} == {"churn", "first_purchase"}
    assert all("roc_auc" in r and "baseline_roc_auc" in r for r in runs)
    assert main(["--home", str(home), "experiments", "--model", "churn"]) == 0
    assert churn["version"] in capsys.readouterr().out
    # a planted pickle where Dagster's filesystem IO manager keeps outputs is never loaded
    marker = tmp_path / "pickle-ran"
    planted = _plant_pickles(home, marker)
    if churn["stage"] == "production":
        # nothing earlier to roll back to: the run fails and production stays
        assert main(["--home", str(home), "models", "rollback", "churn"]) == 1
        assert main(["--home", str(home), "models", "promote", "churn", churn["version"]]) == 0
        assert f"production is now {churn['version']}" in capsys.readouterr().out
    else:
        assert (
            main(["--home", str(home), "models", "promote", "churn", churn["version"], "--reason", "test"])
            == 0
        )
    assert main(["--home", str(home), "models", "list", "churn"]) == 0
    assert f"{churn['version']}  production" in capsys.readouterr().out
    assert not marker.exists()
    assert _pickles_in(home) == planted  # models travel as JSON cards and LightGBM text, nothing else
    assert sorted(p.suffix for p in (home / "models" / "churn").iterdir()) == [".json", ".txt"] * len(
        list((home / "models" / "churn").glob("*.txt"))
    )
    # the runs are recorded in the SQLite instance under the lake home
    instance = dg.DagsterInstance.from_config(str(home / "dagster"))
    runs = instance.get_runs()
    # promote and rollback launch the job the UI's Launchpad launches
    assert len(runs) >= 2 and {r.job_name for r in runs} == {"all_assets", "churn_stage_change"}
    assert (home / "dagster" / "history").exists()


def test_cli_errors_are_clear(tmp_path, capsys):
    home = str(tmp_path / "h")
    assert main(["--home", home, "materialize"]) == 2
    assert "nothing has landed" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("[source]\nformat = 'xlsx'\n")
    (tmp_path / "e.csv").write_text("a,b\n1,2\n")
    assert main(["--home", home, "ingest", str(tmp_path / "e.csv"), "--mapping", str(bad)]) == 2
    assert "format" in capsys.readouterr().err
    assert main(["--home", home, "simulate", "--players", "20", "--days", "20"]) == 0
    assert main(["--home", home, "materialize", "--select", "nope"]) == 2
    assert "unknown asset" in capsys.readouterr().err


def _one_error_line(capsys, verb: str) -> str:
    """The command's stderr: exactly one line, the error, no traceback."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(f"ml-assets {verb}: error: ")]
    assert len(errors) == 1 and not any("Traceback" in line for line in lines), lines
    return errors[0]


def test_every_user_error_is_one_line_with_exit_code_2(tmp_path, capsys):
    home = str(tmp_path / "h")
    assert main(["--home", home, "simulate", "--players", "20", "--days", "5"]) == 0
    capsys.readouterr()
    cases = [
        (["materialize", "--first-day", "2026-13-01"], "--first-day '2026-13-01' is not a day"),
        (["materialize", "--select", "nope"], "unknown asset(s) ['nope']"),
        (["models", "promote", "churn", "nope"], "churn version 'nope' is not registered"),
        (["models", "promote", "../../evil", "x"], "no model named '../../evil'"),
        (["models", "promote"], "models promote needs a model name"),
        (["ingest", str(tmp_path / "missing.csv"), "--mapping", str(tmp_path / "m.toml")], "cannot read"),
    ]
    for argv, message in cases:
        assert main(["--home", home, *argv]) == 2, argv
        assert message in _one_error_line(capsys, argv[0]), argv
    bad_lake = tmp_path / "bad"
    bad_lake.mkdir()
    (bad_lake / "ml_assets.toml").write_text('[lake]\nuri = "/proc/no/such/lake"\n')
    assert main(["--home", str(bad_lake), "simulate", "--players", "20", "--days", "3"]) == 0
    capsys.readouterr()
    assert main(["--home", str(bad_lake), "materialize"]) == 2
    assert "cannot create the lake folder" in _one_error_line(capsys, "materialize")
    # --verbose adds the traceback
    assert main(["--home", home, "--verbose", "models", "promote", "churn", "nope"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_global_options_work_before_or_after_the_verb(tmp_path, capsys):
    before, after = tmp_path / "before", tmp_path / "after"
    assert main(["--home", str(before), "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["home"] == str(before)
    assert main(["status", "--home", str(after), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["home"] == str(after)
    config = tmp_path / "other.toml"
    config.write_text("[features]\nchunk_days = 0\n")
    # --config after the verb is read: its bad value is reported before any run
    assert main(["--home", str(before), "materialize", "--config", str(config), "--home", str(after)]) == 2
    err = capsys.readouterr().err
    assert f"{config}: features.chunk_days = 0: must be a whole number >= 1" in err


def test_bad_settings_stop_a_run_before_it_starts_with_one_line(tmp_path, capsys):
    home = tmp_path / "h"
    assert main(["--home", str(home), "simulate", "--players", "20", "--days", "3"]) == 0
    capsys.readouterr()
    (home / "ml_assets.toml").write_text("[training]\ntest_fraction = 1.5\n")
    assert main(["materialize", "--home", str(home)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [
        f"ml-assets materialize: error: {home / 'ml_assets.toml'}: training.test_fraction = 1.5: "
        "must be a number between 0 and 1, both excluded"
    ]
    assert not (home / "dagster").exists()  # no instance, no run


def test_extreme_dates_never_crash_status_or_materialize(tmp_path, capsys):
    home = tmp_path / "h"
    assert main(["--home", str(home), "simulate", "--players", "30", "--days", "5"]) == 0
    mapping = tmp_path / "m.toml"
    mapping.write_text(
        '[source]\nformat = "csv"\n[columns]\nplayer_id = "u"\nevent_time = "t"\n'
        '[constants]\nevent_type = "open"\n[time]\nevent_time = "iso8601"\n'
    )
    log = tmp_path / "e.csv"
    log.write_text(
        "u,t\na,2025-01-03T10:00:00Z\nb,9999-12-31T23:59:59Z\nc,2100-01-01T00:00:00Z\nd,1970-01-02\n"
    )
    assert main(["--home", str(home), "ingest", str(log), "--mapping", str(mapping)]) == 0
    assert "3 implausible event times" in capsys.readouterr().out
    window = json.loads((home / "landing" / "_window.json").read_text())
    assert window == {"first_day": "2025-01-01", "last_day": "2025-01-05"}  # not stretched
    assert main(["--home", str(home), "materialize", "--select", "raw_events,clean_events"]) == 0
    capsys.readouterr()
    assert main(["--home", str(home), "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["quarantine"]["event_time_in_future"] == 2
    assert status["quarantine"]["event_time_before_earliest"] == 1
    # a lake whose window a far-future row stretched before this rule existed still works
    (home / "landing" / "_window.json").write_text('{"first_day": "2025-01-01", "last_day": "9999-12-31"}')
    assert main(["--home", str(home), "status"]) == 0
    assert (
        main(["--home", str(home), "materialize", "--select", "raw_events", "--last-day", "2025-01-05"]) == 0
    )
