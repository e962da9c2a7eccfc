"""Faster TreeSHAP or faster scoring than LightGBM's own? `pred_contrib` against shap's TreeExplainer,
and `predict` against lleaves (LLVM-compiled trees), on the same model and rows.

The model has the churn model's shape (150 trees of 16 leaves, 53 features; binary objective),
trained on seeded synthetic rows; every variant scores the same 100k rows, side by side in one
process, best of `--repeat`. Values are compared with LightGBM's: SHAP values and expected value
(max abs difference), probabilities (max abs difference). shap and lleaves are not dependencies of
ml-assets; install them to measure, a missing one is reported as such. lleaves 1.x compiles only
with llvmlite < 0.45 (0.43 here, which shap's numba needs matched: numba 0.60). Batch scoring now
uses lleaves: see bench_lleaves.py.

    python -m venv /tmp/llenv && /tmp/llenv/bin/pip install shap "numba==0.60.*" "llvmlite==0.43.*" \
        lleaves lightgbm polars psutil
    /tmp/llenv/bin/python benchmarks/bench_shap.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best, machine, markdown_table, text_table, write_results

FEATURES, TREES, LEAVES = 53, 150, 16


def model_and_rows(rows: int, seed: int = 7) -> tuple[lgb.Booster, np.ndarray]:
    """A binary model of the churn model's shape and `rows` rows to score."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200_000 + rows, FEATURES))
    x[:, :10] = np.round(np.abs(x[:, :10]) * 5)  # count-like columns
    logit = x[:, 0] * 0.8 - x[:, 1] * 0.5 + np.sin(x[:, 2]) + 0.3 * x[:, 3] * x[:, 4]
    y = rng.random(len(x)) < 1 / (1 + np.exp(-logit))
    params = {"objective": "binary", "num_leaves": LEAVES, "learning_rate": 0.05, "verbose": -1, "seed": seed}
    booster = lgb.train(params, lgb.Dataset(x[:200_000], y[:200_000]), num_boost_round=TREES)
    return booster, x[200_000:]


def measure(rows: int, repeat: int) -> dict[str, Any]:
    booster, x = model_and_rows(rows)
    results: dict[str, Any] = {"rows": rows, "trees": booster.num_trees(), "features": FEATURES}
    t, p = best(lambda: booster.predict(x), repeat)
    results["lightgbm_predict"] = {"s": t, "rows_per_s": rows / t}
    t, contrib = best(lambda: booster.predict(x, pred_contrib=True), repeat)
    results["lightgbm_pred_contrib"] = {"s": t, "rows_per_s": rows / t}

    def default_policy() -> np.ndarray:
        # what NAME_predictions does for one of the newest days by default: score every row, explain
        # the quarter with the highest scores (explain_share = 0.25)
        scores = booster.predict(x)
        top = np.argsort(-scores, kind="stable")[: -(-rows // 4)]
        return booster.predict(x[top], pred_contrib=True)

    t, _ = best(default_policy, repeat)
    results["default_policy_one_day"] = {"s": t, "rows_per_s": rows / t}
    try:
        import shap

        explainer = shap.TreeExplainer(booster)
        t, values = best(lambda: explainer.shap_values(x), repeat)
        values = values[1] if isinstance(values, list) else values
        results["shap_tree_explainer"] = {
            "s": t,
            "rows_per_s": rows / t,
            "version": shap.__version__,
            "max_abs_diff_vs_pred_contrib": float(np.max(np.abs(values - contrib[:, :-1]))),
            "expected_value_diff": float(abs(np.ravel(explainer.expected_value)[-1] - contrib[0, -1])),
        }
    except ImportError:
        results["shap_tree_explainer"] = {"missing": "pip install shap"}
    try:
        import lleaves

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.txt"
            booster.save_model(str(path))
            compiled = lleaves.Model(model_file=str(path))
            started = time.perf_counter()
            compiled.compile()
            compile_s = time.perf_counter() - started
            t, q = best(lambda: compiled.predict(x), repeat)
        results["lleaves_predict"] = {
            "s": t,
            "rows_per_s": rows / t,
            "compile_s": compile_s,
            "max_abs_diff_vs_predict": float(np.max(np.abs(q - p))),
        }
    except ImportError:
        results["lleaves_predict"] = {"missing": "pip install lleaves"}
    except AttributeError as exc:  # lleaves 1.x needs llvmlite < 0.44 (the legacy pass manager)
        results["lleaves_predict"] = {
            "missing": f"lleaves failed to compile: {exc}; pip install 'llvmlite<0.44'"
        }
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    r = measure(args.rows, args.repeat)
    base, contrib = r["lightgbm_predict"], r["lightgbm_pred_contrib"]
    headers = ["variant", "s", "rows/s", "vs LightGBM's own", "values"]
    rows = [
        ["LightGBM predict", f"{base['s']:.3f}", f"{base['rows_per_s']:,.0f}", "1.00x", "-"],
        [
            "LightGBM pred_contrib",
            f"{contrib['s']:.3f}",
            f"{contrib['rows_per_s']:,.0f}",
            "1.00x",
            "-",
        ],
    ]
    policy = r["default_policy_one_day"]
    rows.append(
        [
            "ml-assets default: predict all, pred_contrib top 25%",
            f"{policy['s']:.3f}",
            f"{policy['rows_per_s']:,.0f}",
            f"{policy['s'] / base['s']:.2f}x the time of predict",
            "-",
        ]
    )
    shap_r = r["shap_tree_explainer"]
    if "missing" in shap_r:
        rows.append(["shap TreeExplainer", "-", "-", "-", shap_r["missing"]])
    else:
        rows.append(
            [
                f"shap {shap_r['version']} TreeExplainer",
                f"{shap_r['s']:.3f}",
                f"{shap_r['rows_per_s']:,.0f}",
                f"{contrib['s'] / shap_r['s']:.2f}x as fast as pred_contrib",
                f"max |diff| {shap_r['max_abs_diff_vs_pred_contrib']:.1e}",
            ]
        )
    ll = r["lleaves_predict"]
    if "missing" in ll:
        rows.append(["lleaves predict", "-", "-", "-", ll["missing"]])
    else:
        rows.append(
            [
                f"lleaves predict (compile {ll['compile_s']:.1f} s)",
                f"{ll['s']:.3f}",
                f"{ll['rows_per_s']:,.0f}",
                f"{base['s'] / ll['s']:.2f}x as fast as predict",
                f"max |diff| {ll['max_abs_diff_vs_predict']:.1e}",
            ]
        )
    print(text_table(headers, rows))
    info = machine()
    command = "python benchmarks/bench_shap.py " + " ".join(sys.argv[1:])
    md = "\n\n".join(
        [
            "# TreeSHAP and scoring alternatives",
            f"`{command.strip()}` on {info['cpu']}, {info['cores']} cores; {r['rows']:,} rows, "
            f"{r['trees']} trees of {LEAVES} leaves, {FEATURES} features",
            markdown_table(headers, rows),
        ]
    )
    paths = write_results("shap", {"command": command, "machine": info, "results": r}, md)
    print(f"saved {paths[0]} and {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
