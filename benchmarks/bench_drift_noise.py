"""How big drift statistics get on same-distribution data, against the noise bounds `drift.py` uses.

For each case, many pairs of samples are drawn from one distribution and the 99.9th percentile of
the statistic is compared with the bound `ml_assets.core.monitoring.drift` applies at those sample
sizes (`psi_noise`, `js_noise`, `wasserstein_noise`). A ratio (percentile / bound) at or under 1
means a day with no drift flags a feature at most about once in 1,000.

    .venv/bin/python benchmarks/bench_drift_noise.py            # ~1 min on 2 cores
    .venv/bin/python benchmarks/bench_drift_noise.py --draws 500
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, machine

from ml_assets.core.monitoring.drift import (
    _js_distance,
    _psi,
    _wasserstein_ks,
    js_noise,
    psi_noise,
    wasserstein_noise,
)

Sampler = Callable[[np.random.Generator, int], np.ndarray]
DISTRIBUTIONS: dict[str, Sampler] = {
    "normal": lambda rng, n: rng.normal(size=n),
    "lognormal(sigma=1)": lambda rng, n: rng.lognormal(sigma=1.0, size=n),
    "exponential": lambda rng, n: rng.exponential(size=n),
    "poisson(1)": lambda rng, n: rng.poisson(1.0, size=n).astype(float),
    "poisson(0.1)": lambda rng, n: rng.poisson(0.1, size=n).astype(float),
    "lognormal(sigma=2)": lambda rng, n: rng.lognormal(sigma=2.0, size=n),
}
SHARE_SIZES = [(30_000, 1_000), (5_000, 1_000), (30_000, 8_000), (2_000, 2_000)]
SAMPLE_SIZES = [(2_000, 2_000), (2_000, 1_000), (2_000, 300)]


def shares(rng: np.random.Generator, draws: int, bins: int) -> list[dict[str, object]]:
    """PSI and Jensen-Shannon over `bins` equal shares: their 99.9th percentile against the bounds."""
    p = np.full(bins, 1.0 / bins)
    out = []
    for n_ref, n_cur in SHARE_SIZES:
        psi, js = [], []
        for _ in range(draws):
            a, b = rng.multinomial(n_ref, p) / n_ref, rng.multinomial(n_cur, p) / n_cur
            psi.append(_psi(a, b))
            js.append(_js_distance(a, b))
        q_psi, q_js = float(np.quantile(psi, 0.999)), float(np.quantile(js, 0.999))
        out.append(
            {
                "bins": bins,
                "n_ref": n_ref,
                "n_cur": n_cur,
                "psi_p999": q_psi,
                "psi_bound": psi_noise(bins, n_ref, n_cur),
                "psi_ratio": q_psi / psi_noise(bins, n_ref, n_cur),
                "js_p999": q_js,
                "js_bound": js_noise(bins, n_ref, n_cur),
                "js_ratio": q_js / js_noise(bins, n_ref, n_cur),
            }
        )
    return out


def wasserstein(rng: np.random.Generator, draws: int) -> list[dict[str, object]]:
    """Normalised Wasserstein between two samples of one distribution, against the bound."""
    out = []
    for name, sample in DISTRIBUTIONS.items():
        population = sample(rng, 200_000)
        scale = float(population.std())
        for m, n in SAMPLE_SIZES:
            w = []
            for _ in range(draws):
                a, b = np.sort(rng.choice(population, m)), np.sort(rng.choice(population, n))
                w.append(_wasserstein_ks(a, b)[0] / scale)
            q = float(np.quantile(w, 0.999))
            out.append(
                {
                    "distribution": name,
                    "m": m,
                    "n": n,
                    "p999": q,
                    "bound": wasserstein_noise(m, n),
                    "ratio": q / wasserstein_noise(m, n),
                }
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=1500, help="sample pairs per case")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    result = {
        "machine": machine(),
        "draws": args.draws,
        "shares": shares(rng, args.draws, 10),
        "wasserstein": wasserstein(rng, args.draws),
    }
    print("PSI and Jensen-Shannon, 10 equal bins: 99.9th percentile / bound")
    for r in result["shares"]:
        print(f"  ref {r['n_ref']:>6} cur {r['n_cur']:>5}: PSI {r['psi_ratio']:.2f}  JS {r['js_ratio']:.2f}")
    print("normalised Wasserstein: 99.9th percentile / bound")
    for r in result["wasserstein"]:
        print(f"  {r['distribution']:<20} {r['m']:>5} vs {r['n']:>5}: {r['ratio']:.2f}")
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / "drift_noise.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
