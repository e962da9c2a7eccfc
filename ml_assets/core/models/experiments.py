"""Every training run recorded as one row of a Delta table: what went in, what came out.

A run names the Delta version of each input table it read and the code version it ran, so any
model can be traced to the exact data and code. Dict and list fields are stored as JSON strings.
Like the registry, writes assume one writer per table at a time (check-then-append).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

import ml_assets
from ml_assets.lake.tables import open_table

# every module of core/, subfolders included: what a model version depends on besides its data
CORE_DIR = Path(__file__).resolve().parents[1]
JSON_FIELDS: tuple[str, ...] = (
    "params",
    "features",
    "dropped_features",
    "input_versions",
    "metrics",
    "baseline_metrics",
    "selection",
    "tuning",
)
RUN_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.String(),
    "model": pl.String(),
    "version": pl.String(),
    "started_at": pl.Datetime("us", "UTC"),
    "duration_s": pl.Float64(),
    "params": pl.String(),
    "features": pl.String(),
    "dropped_features": pl.String(),
    "input_versions": pl.String(),
    "metrics": pl.String(),
    "baseline_metrics": pl.String(),
    "code_version": pl.String(),
    "tuning_trials": pl.Int64(),
    "train_rows": pl.Int64(),
    "test_rows": pl.Int64(),
    "stage": pl.String(),
    "gate_reason": pl.String(),
    # added later: tables written before them read these as null
    "selection": pl.String(),
    "tuning": pl.String(),
}


@dataclass(frozen=True)
class ExperimentRun:
    """One training run: inputs (params, features, table versions, code) and outcomes (metrics, stage)."""

    run_id: str
    model: str
    version: str
    started_at: datetime
    duration_s: float
    params: dict[str, Any]
    features: list[str]
    dropped_features: dict[str, str]  # feature -> why it was left out
    input_versions: dict[str, int]  # table name -> Delta version read
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    code_version: str
    tuning_trials: int
    train_rows: int
    test_rows: int
    stage: str = ""  # stage the gate gave it
    gate_reason: str = ""
    # feature selection: candidates, kept, budget and on which rows (why each was dropped: above)
    selection: dict[str, Any] = field(default_factory=dict)
    tuning: dict[str, Any] = field(default_factory=dict)  # budget (trials, timeout_s) and result


def code_version(source_dir: Path | None = None) -> str:
    """`ml_assets.__version__` plus a short sha256 of every core source, subfolders included, e.g.
    "0.1.0+3f2a9c1d"."""
    root = source_dir or CORE_DIR
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix()):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return f"{ml_assets.__version__}+{digest.hexdigest()[:8]}"


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable: {value!r}")


def _to_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=_json_default)


def _read(uri: str, storage_options: dict[str, str] | None) -> pl.DataFrame:
    table = open_table(uri, storage_options)
    if table is None:
        return pl.DataFrame(schema=RUN_SCHEMA)
    runs = pl.read_delta(table)
    missing = [pl.lit(None, t).alias(name) for name, t in RUN_SCHEMA.items() if name not in runs.columns]
    return runs.with_columns(missing).select(list(RUN_SCHEMA))


def record_run(uri: str, run: ExperimentRun, storage_options: dict[str, str] | None = None) -> bool:
    """Append `run` to the table at `uri`; False (nothing written) when its run_id is already there."""
    if run.started_at.tzinfo is None:
        raise ValueError(f"run {run.run_id}: started_at {run.started_at!r} has no time zone")
    if _read(uri, storage_options).filter(pl.col("run_id") == run.run_id).height:
        return False
    row: dict[str, Any] = {name: getattr(run, name) for name in RUN_SCHEMA}
    row["started_at"] = run.started_at.astimezone(UTC)
    for name in JSON_FIELDS:
        row[name] = _to_json(row[name])
    pl.DataFrame([row], schema=RUN_SCHEMA).write_delta(
        uri, mode="append", storage_options=storage_options, delta_write_options={"schema_mode": "merge"}
    )
    return True


def list_runs(
    uri: str, model: str | None = None, storage_options: dict[str, str] | None = None
) -> pl.DataFrame:
    """Recorded runs, newest first (JSON columns as strings); an empty frame when there are none."""
    runs = _read(uri, storage_options)
    if model is not None:
        runs = runs.filter(pl.col("model") == model)
    return runs.sort(["started_at", "run_id"], descending=True)


def compare_runs(
    runs: pl.DataFrame, metrics: Sequence[str] = ("roc_auc", "pr_auc", "log_loss", "brier")
) -> pl.DataFrame:
    """One row per run: identity, duration, tuning trials, feature count, each metric and its
    baseline (`baseline_<metric>`, null when a run lacks it), and the stage it got."""
    rows: list[dict[str, Any]] = []
    for run in runs.iter_rows(named=True):
        scores = json.loads(run["metrics"])
        base = json.loads(run["baseline_metrics"])
        row: dict[str, Any] = {
            key: run[key]
            for key in ("run_id", "model", "version", "started_at", "duration_s", "tuning_trials")
        }
        row["n_features"] = len(json.loads(run["features"]))
        for metric in metrics:
            row[metric] = scores.get(metric)
            row[f"baseline_{metric}"] = base.get(metric)
        row["stage"] = run["stage"]
        rows.append(row)
    schema: dict[str, pl.DataType] = {
        "run_id": pl.String(),
        "model": pl.String(),
        "version": pl.String(),
        "started_at": pl.Datetime("us", "UTC"),
        "duration_s": pl.Float64(),
        "tuning_trials": pl.Int64(),
        "n_features": pl.Int64(),
        **{name: pl.Float64() for metric in metrics for name in (metric, f"baseline_{metric}")},
        "stage": pl.String(),
    }
    return pl.DataFrame(rows, schema=schema)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)


def format_runs(frame: pl.DataFrame) -> str:
    """`frame` (e.g. from `compare_runs`) as a plain-text table: header, rule, one line per row."""
    header = list(frame.columns)
    body = [[_cell(v) for v in row] for row in frame.iter_rows()]
    widths = [max([len(h), *(len(r[i]) for r in body)]) for i, h in enumerate(header)]
    numeric = [dtype.is_numeric() for dtype in frame.dtypes]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric, strict=True)
        ).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in body)
    if not body:
        out.append("(no runs)")
    return "\n".join(out)
