import json
import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

import ml_assets
from ml_assets.core.models.experiments import (
    CORE_DIR,
    RUN_SCHEMA,
    ExperimentRun,
    code_version,
    compare_runs,
    format_runs,
    list_runs,
    record_run,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def make_run(run_id: str, model: str = "churn", hours: int = 0, **changes) -> ExperimentRun:
    run = ExperimentRun(
        run_id=run_id,
        model=model,
        version=f"v-{run_id}",
        started_at=T0 + timedelta(hours=hours),
        duration_s=12.5,
        params={"num_leaves": np.int64(31), "learning_rate": 0.05},
        features=["events_7d", "events_28d", "days_since_last"],
        dropped_features={"game_is_payer": "constant"},
        input_versions={"player_features": 7, "labels": 3},
        metrics={"roc_auc": 0.81, "pr_auc": 0.42, "log_loss": 0.41, "brier": 0.13},
        baseline_metrics={"roc_auc": 0.70, "pr_auc": 0.30, "log_loss": 0.50, "brier": 0.16},
        code_version="0.1.0+deadbeef",
        tuning_trials=8,
        train_rows=1000,
        test_rows=250,
        stage="production",
        gate_reason="roc_auc 0.8100 vs baseline 0.7000: beats the baseline by 0.1100",
    )
    return replace(run, **changes)


def test_absent_table_lists_no_runs(tmp_path):
    runs = list_runs(str(tmp_path / "runs"))
    assert runs.height == 0 and runs.schema == pl.Schema(RUN_SCHEMA)
    assert compare_runs(runs).height == 0
    assert "(no runs)" in format_runs(compare_runs(runs))


def test_record_list_compare_round_trip(tmp_path):
    uri = str(tmp_path / "runs")
    assert record_run(uri, make_run("a", hours=0))
    assert record_run(uri, make_run("b", hours=2, metrics={"roc_auc": 0.83}, stage="staging"))
    assert record_run(uri, make_run("c", model="first_purchase", hours=1))

    runs = list_runs(uri)
    assert runs["run_id"].to_list() == ["b", "c", "a"]  # newest first
    assert list_runs(uri, model="churn")["run_id"].to_list() == ["b", "a"]

    a = runs.filter(pl.col("run_id") == "a").row(0, named=True)
    assert a["started_at"] == T0 and a["duration_s"] == 12.5
    assert json.loads(a["params"]) == {"learning_rate": 0.05, "num_leaves": 31}
    assert json.loads(a["input_versions"]) == {"labels": 3, "player_features": 7}
    assert json.loads(a["features"]) == ["events_7d", "events_28d", "days_since_last"]
    assert json.loads(a["dropped_features"]) == {"game_is_payer": "constant"}
    assert a["code_version"] == "0.1.0+deadbeef"
    assert (a["train_rows"], a["test_rows"], a["tuning_trials"]) == (1000, 250, 8)
    assert a["gate_reason"].startswith("roc_auc 0.8100")

    table = compare_runs(list_runs(uri, model="churn"))
    assert table.columns == [
        "run_id",
        "model",
        "version",
        "started_at",
        "duration_s",
        "tuning_trials",
        "n_features",
        "roc_auc",
        "baseline_roc_auc",
        "pr_auc",
        "baseline_pr_auc",
        "log_loss",
        "baseline_log_loss",
        "brier",
        "baseline_brier",
        "stage",
    ]
    b, a = table.rows(named=True)
    assert (b["run_id"], b["roc_auc"], b["pr_auc"], b["stage"]) == ("b", 0.83, None, "staging")
    assert (a["roc_auc"], a["baseline_roc_auc"], a["log_loss"], a["n_features"]) == (0.81, 0.70, 0.41, 3)

    text = format_runs(table)
    lines = text.splitlines()
    assert len(lines) == 4
    assert lines[0].split()[:3] == ["run_id", "model", "version"]
    assert set(lines[1]) <= {"-", " "}
    assert "0.8300" in lines[2] and "staging" in lines[2] and "2025-03-01 14:00" in lines[2]
    assert "0.8100" in lines[3] and "0.7000" in lines[3]


def test_record_run_is_idempotent(tmp_path):
    uri = str(tmp_path / "runs")
    assert record_run(uri, make_run("a")) is True
    assert record_run(uri, make_run("a", duration_s=99.0)) is False
    runs = list_runs(uri)
    assert runs.height == 1 and runs["duration_s"][0] == 12.5


def test_record_run_rejects_naive_time_and_unserialisable_params(tmp_path):
    uri = str(tmp_path / "runs")
    with pytest.raises(ValueError, match="time zone"):
        record_run(uri, make_run("a", started_at=datetime(2025, 3, 1)))
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        record_run(uri, make_run("a", params={"callback": object()}))
    assert list_runs(uri).height == 0


def test_code_version_is_stable_and_tracks_sources(tmp_path):
    assert code_version() == code_version()
    assert code_version() == code_version(CORE_DIR)
    assert code_version().startswith(f"{ml_assets.__version__}+")
    assert len(code_version().split("+")[1]) == 8

    src = tmp_path / "core"
    shutil.copytree(CORE_DIR, src, ignore=shutil.ignore_patterns("__pycache__"))
    assert code_version(src) == code_version()
    # a module in a subfolder counts: a change there gives models a new version
    training = src / "models" / "training.py"
    training.write_text(training.read_text() + "\n# changed\n")
    changed = code_version(src)
    assert changed != code_version()
    (src / "events" / "zzz_new.py").write_text("x = 1\n")
    assert code_version(src) not in (changed, code_version())


def test_selection_and_tuning_are_recorded_and_older_tables_still_read(tmp_path):
    uri = str(tmp_path / "runs")
    old = {k: v for k, v in RUN_SCHEMA.items() if k not in ("selection", "tuning")}
    # a table written before the two columns existed
    row = make_run("old")
    first = {k: getattr(row, k) for k in old}
    for k in ("params", "features", "dropped_features", "input_versions", "metrics", "baseline_metrics"):
        first[k] = json.dumps(first[k], default=int)
    pl.DataFrame([first], schema=old).write_delta(uri)
    selection = {"candidates": ["a", "b", "c"], "kept": ["a"], "budget": 1}
    tuning = {"trials": 12, "timeout_s": 20.0, "trials_run": 5, "best_params": {"num_leaves": 15}}
    assert record_run(uri, make_run("new", hours=1, selection=selection, tuning=tuning))
    runs = list_runs(uri)
    assert runs["run_id"].to_list() == ["new", "old"]
    new, before = runs.row(0, named=True), runs.row(1, named=True)
    assert json.loads(new["selection"]) == selection and json.loads(new["tuning"]) == tuning
    assert before["selection"] is None and before["tuning"] is None
