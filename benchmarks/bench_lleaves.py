"""Batch scoring: LightGBM's `predict` against the trees compiled by lleaves, compile included.

The model has the churn model's shape and the project's training parameters (DEFAULT_PARAMS: 150
trees of at most 15 leaves and depth 4, 53 features, one categorical; binary objective), trained on
seeded synthetic rows. Every variant scores the same `--rows` rows, a float32 matrix with missing
values and unknown categories, as `to_matrix` builds it, through the code NAME_predictions runs:
`TrainedModel.predict_matrix` (LightGBM) and `TrainedModel.batch_predict`'s `compiled_trees` +
`predict_compiled` (lleaves). Compiled variants:

- cold: a compile and no object file on disk (the first run of a model version on a machine),
- from disk: the object file cached by an earlier run or another worker, loaded by a fresh process,
- in process: the version already compiled in this process (the next chunk of days).

    python benchmarks/bench_lleaves.py --rows 1000000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best, machine, markdown_table, text_table, write_results

from ml_assets.core.models import compiled
from ml_assets.core.models.training import DEFAULT_PARAMS

FEATURES, TREES, LEVELS = 53, 150, 6


def _rows(n: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.normal(size=(n, FEATURES)).astype(np.float32)
    x[:, :10] = np.round(np.abs(x[:, :10]) * 5)  # count-like columns
    x[rng.random(n) < 0.15, 5:8] = np.nan  # missing values
    x[:, 10] = rng.integers(0, LEVELS, n)  # a categorical column's codes
    x[rng.random(n) < 0.02, 10] = np.nan  # a level training never saw
    return x


def model_and_rows(rows: int, seed: int = 7) -> tuple[lgb.Booster, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = _rows(200_000, rng)
    logit = x[:, 0] * 0.3 - x[:, 1] * 0.2 + np.sin(x[:, 12]) + 0.3 * x[:, 13] * x[:, 14] + (x[:, 10] == 2)
    y = rng.random(len(x)) < 1 / (1 + np.exp(-np.nan_to_num(logit)))
    data = lgb.Dataset(x, y, categorical_feature=[10])
    booster = lgb.train({**DEFAULT_PARAMS, "seed": seed}, data, num_boost_round=TREES)
    return booster, _rows(rows, rng)


def measure(rows: int, repeat: int) -> dict[str, Any]:
    booster, x = model_and_rows(rows)
    text = booster.model_to_string(num_iteration=booster.current_iteration())
    results: dict[str, Any] = {
        "rows": rows,
        "trees": booster.num_trees(),
        "features": FEATURES,
        "threads": compiled._cpus(),
    }
    t, p = best(lambda: np.asarray(booster.predict(x, num_iteration=booster.current_iteration())), repeat)
    results["lightgbm_predict"] = {"s": t, "rows_per_s": rows / t}

    def diff(q: np.ndarray) -> float:
        return float(np.max(np.abs(q - p)))

    def fresh_process(prepare: str) -> dict[str, float]:
        # a process that has not compiled the model yet: the object file compiled or loaded, then used
        compiled._compiled.clear()
        started = time.perf_counter()
        trees = compiled.compiled_trees("bench", text)
        prepared = time.perf_counter() - started
        q = compiled.predict_compiled(trees, x)
        return {"s": time.perf_counter() - started, prepare: prepared, "max_abs_diff": diff(q)}

    with tempfile.TemporaryDirectory() as tmp:
        os.environ[compiled.CACHE_ENV] = tmp
        results["lleaves_cold"] = fresh_process("compile_s")  # no object file yet
        results["lleaves_from_disk"] = fresh_process("load_s")  # the file the first one wrote

        t, q = best(lambda: compiled.predict_compiled(compiled.compiled_trees("bench", text), x), repeat)
        results["lleaves_in_process"] = {"s": t, "rows_per_s": rows / t, "max_abs_diff": diff(q)}
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    load_before = os.getloadavg()[0]  # the machine may be shared: what else ran, roughly
    r = measure(args.rows, args.repeat)
    base = r["lightgbm_predict"]["s"]
    headers = ["variant", "s", "rows/s", "vs LightGBM predict", "max |diff|"]
    cold, disk, warm = r["lleaves_cold"], r["lleaves_from_disk"], r["lleaves_in_process"]
    rows = [
        ["LightGBM predict", f"{base:.3f}", f"{r['rows'] / base:,.0f}", "1.00x", "-"],
        [
            f"lleaves cold: compile ({cold['compile_s']:.2f} s) + predict",
            f"{cold['s']:.3f}",
            f"{r['rows'] / cold['s']:,.0f}",
            f"{base / cold['s']:.2f}x as fast",
            f"{cold['max_abs_diff']:.1e}",
        ],
        [
            f"lleaves from disk: load ({disk['load_s']:.3f} s) + predict",
            f"{disk['s']:.3f}",
            f"{r['rows'] / disk['s']:,.0f}",
            f"{base / disk['s']:.2f}x as fast",
            f"{disk['max_abs_diff']:.1e}",
        ],
        [
            "lleaves in process: predict",
            f"{warm['s']:.3f}",
            f"{warm['rows_per_s']:,.0f}",
            f"{base / warm['s']:.2f}x as fast",
            f"{warm['max_abs_diff']:.1e}",
        ],
    ]
    print(text_table(headers, rows))
    info = machine()
    command = "python benchmarks/bench_lleaves.py " + " ".join(sys.argv[1:])
    from importlib import metadata

    versions = ", ".join(f"{p} {metadata.version(p)}" for p in ("lleaves", "llvmlite", "lightgbm"))
    r["versions"] = versions
    r["load_average_1m_before_after"] = [load_before, os.getloadavg()[0]]
    md = "\n\n".join(
        [
            "# Batch scoring: LightGBM predict vs lleaves (compiled trees)",
            f"`{command.strip()}` on {info['cpu']}, {info['cores']} cores, {r['threads']} threads; "
            f"{r['rows']:,} float32 rows with missing values, {r['trees']} trees (DEFAULT_PARAMS), "
            f"{FEATURES} features (one categorical); {versions}. Best of {args.repeat} where repeated; "
            "cold and from-disk runs once each. Load average (1 min) before and after: "
            f"{load_before:.1f}, {r['load_average_1m_before_after'][1]:.1f}.",
            markdown_table(headers, rows),
        ]
    )
    paths = write_results("lleaves", {"command": command, "machine": info, "results": r}, md)
    print(f"saved {paths[0]} and {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
