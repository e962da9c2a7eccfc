"""Shared pieces of the benchmarks: sizes, cached clean events, child-process measurement, tables."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl

BENCH_DIR = Path(__file__).resolve().parent
CACHE_DIR = BENCH_DIR / ".cache"
RESULTS_DIR = BENCH_DIR / "results"
DAYS = 90
SEED = 7
WATERMARK_DAYS = 3  # the settings default of cleaning.watermark_days
GIB = 1024**3


@dataclass(frozen=True)
class Size:
    """A named benchmark size: simulator players on the start day, over DAYS days."""

    name: str
    players: int
    days: int = DAYS


# Players on the start day (plus players // 40 joining each later day), chosen so the clean event
# counts land near 1M and 10M with the simulator as of this writing; results report the exact counts.
SIZES = {
    "1m": Size("1m", 10_000),
    "3m": Size("3m", 30_000),
    "10m": Size("10m", 100_000),
}


def parse_sizes(raw: str) -> list[Size]:
    """`1m,10m` -> the named sizes; ValueError for an unknown name."""
    names = [s.strip() for s in raw.split(",") if s.strip()]
    unknown = [n for n in names if n not in SIZES]
    if unknown:
        raise ValueError(f"unknown size(s) {unknown}; known: {sorted(SIZES)}")
    return [SIZES[n] for n in names]


def simulation_params(size: Size) -> Any:
    """The simulator parameters of a size (imported lazily: the simulator is still moving)."""
    from ml_assets.simulator.game import SimulationParams

    return SimulationParams(players=size.players, days=size.days, seed=SEED)


def simulator_hash() -> str:
    """A short hash of the simulator and cleaning sources: the cache is rebuilt when either changes."""
    import ml_assets.core.events.cleaning as events_mod
    import ml_assets.simulator.game as simulate_mod

    digest = hashlib.sha256()
    for mod in (simulate_mod, events_mod):
        digest.update(Path(str(mod.__file__)).read_bytes())
    return digest.hexdigest()[:10]


def clean_events_path(size: Size) -> Path:
    """Clean events of `size` as one Parquet file, built by the simulator and ml_assets' cleaning once."""
    from ml_assets.core.events.cleaning import clean_events
    from ml_assets.core.events.landing import conform, partition_day
    from ml_assets.simulator.game import simulate_days

    name = f"clean_events_{size.name}_p{size.players}_d{size.days}_s{SEED}_{simulator_hash()}.parquet"
    path = CACHE_DIR / name
    if path.exists():
        return path
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    params = simulation_params(size)
    started = time.perf_counter()
    batches = [
        conform(frame, f"bench-{day:%Y%m%d}", "simulator")
        for day, frame in simulate_days(params, params.start, params.last_day)
    ]
    landed = pl.concat(batches).with_columns(partition_day())
    simulated = time.perf_counter() - started
    clean = clean_events(landed.lazy(), WATERMARK_DAYS).clean
    tmp = path.with_suffix(".parquet.tmp")
    clean.write_parquet(tmp)
    tmp.replace(path)
    log(
        f"[data] {size.name}: {landed.height:,} landed -> {clean.height:,} clean events "
        f"(simulate {simulated:.1f}s, clean {time.perf_counter() - started - simulated:.1f}s) -> {path.name}"
    )
    return path


def event_window(path: Path) -> tuple[date, date]:
    """First and last event day in a clean events file: the snapshot days benchmarked."""
    row = pl.scan_parquet(path).select(
        pl.col("event_date").min().alias("a"), pl.col("event_date").max().alias("b")
    )
    first, last = row.collect().row(0)
    return first, last


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def peak_rss_bytes_self() -> int:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class ChildFailed(RuntimeError):
    """A benchmark child exited non-zero or was stopped by the memory guard."""

    def __init__(self, msg: str, polled_peak_rss: int) -> None:
        super().__init__(msg)
        self.polled_peak_rss = polled_peak_rss


def memory_guard_bytes() -> int:
    """RSS at which a child is stopped: 80% of RAM, so the kernel's OOM killer never picks a bystander."""
    import psutil

    return int(0.8 * psutil.virtual_memory().total)


def run_child(args: list[str], env: dict[str, str] | None = None) -> dict:
    """Run `python args...` in a fresh process that prints one JSON object as its last stdout line.

    The child reports its own peak RSS (getrusage(RUSAGE_SELF), see `peak_rss_bytes_self`) in that
    JSON, so earlier children never leak into the figure. Meanwhile this process polls the child's
    RSS (psutil, every 0.1 s) and stops it above `memory_guard_bytes()`, raising ChildFailed.
    Added to the JSON: `process_wall_s` (interpreter start, imports and load included) and
    `polled_peak_rss_bytes`.
    """
    import psutil

    limit = memory_guard_bytes()
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, *args],
            stdout=out,
            stderr=err,
            text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})},
            cwd=BENCH_DIR.parent,
        )
        watched, peak, killed = psutil.Process(proc.pid), 0, False
        while proc.poll() is None:
            try:
                peak = max(peak, watched.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            if peak > limit:
                proc.kill()
                killed = True
            time.sleep(0.1)
        proc.wait()
        wall = time.perf_counter() - started
        err.seek(0)
        stderr = err.read()
        sys.stderr.write(stderr)
        # the last line the child logged (a step start, for the graph) says where it stopped
        last = stderr.strip().splitlines()[-1].strip() if stderr.strip() else ""
        if killed:
            raise ChildFailed(
                f"stopped by the memory guard at {peak / GIB:.1f} GiB (limit {limit / GIB:.1f}) "
                f"after {wall:.0f}s; last log line: {last!r}",
                peak,
            )
        if proc.returncode != 0:
            raise ChildFailed(f"exit code {proc.returncode} after {wall:.0f}s; last log line: {last!r}", peak)
        out.seek(0)
        lines = [ln for ln in out.read().strip().splitlines() if ln.startswith("{")]
    result = json.loads(lines[-1])
    result["process_wall_s"] = round(wall, 2)
    result["polled_peak_rss_bytes"] = peak
    return result


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / GIB, 1),
        "python": platform.python_version(),
        "polars": pl.__version__,
        "platform": platform.platform(),
    }


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain fixed-width table for the terminal."""
    cells = [headers, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    out = [fmt.format(*headers), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*r) for r in cells[1:]]
    return "\n".join(out)


def write_results(stem: str, payload: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Save `results/<stem>.json` and `results/<stem>.md`."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    json_path, md_path = RESULTS_DIR / f"{stem}.json", RESULTS_DIR / f"{stem}.md"
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    md_path.write_text(markdown.rstrip() + "\n")
    return json_path, md_path


def best(fn: Any, repeat: int) -> tuple[float, Any]:
    """The fastest of `repeat` calls of `fn` (seconds) and the last call's result."""
    times, out = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return min(times), out


def fmt_s(seconds: float) -> str:
    return f"{seconds:.2f}" if seconds < 100 else f"{seconds:.0f}"


def fmt_gib(nbytes: float) -> str:
    return f"{nbytes / GIB:.2f}"
