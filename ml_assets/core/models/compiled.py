"""LightGBM trees compiled to machine code (lleaves, on LLVM) for batch scoring.

The same model text LightGBM reads, cut to the iterations the model uses, compiled once per model
version per process; the object file is kept on local disk (`cache_dir`), so later runs and other
worker processes on the machine load it instead of compiling again. Values equal LightGBM's
`predict` (same trees, NaN and categorical rules; measured: benchmarks/results/lleaves.md) at
several times its speed. A compile that fails raises: there is no silent fallback to LightGBM.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from importlib import metadata
from pathlib import Path

import lleaves
import llvmlite
import llvmlite.binding as llvm
import numpy as np

from ml_assets.lake.files import write_atomic

CACHE_ENV = "ML_ASSETS_COMPILED_MODELS"  # where compiled models are kept; default a temp dir

_compiled: dict[tuple[str, str], lleaves.Model] = {}
_lock = threading.Lock()


def cache_dir() -> Path:
    """The directory of compiled models: $ML_ASSETS_COMPILED_MODELS, else <tmp>/ml_assets-compiled-models."""
    raw = os.environ.get(CACHE_ENV)
    return Path(raw) if raw else Path(tempfile.gettempdir()) / "ml_assets-compiled-models"


def _key(version: str, model_text: str, raw_score: bool) -> str:
    """A file name per model version and what else decides the machine code: the model text (so a
    version name reused on other trees cannot load stale code), the output, lleaves, LLVM and the CPU
    the code is specialised for."""
    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:  # LLVM raises where it cannot detect them; lleaves then compiles without
        features = ""
    parts = [
        model_text,
        f"raw_score={raw_score}",
        f"lleaves={metadata.version('lleaves')}",
        f"llvmlite={llvmlite.__version__}",
        llvm.get_process_triple(),
        llvm.get_host_cpu_name(),
        features,
    ]
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in version)[:80]
    return f"{safe}-{digest}"


def is_compiled(version: str, model_text: str, raw_score: bool = False) -> bool:
    """Whether `compiled_trees` of these arguments needs no compile: compiled in this process or
    its object file on disk."""
    key = _key(version, model_text, raw_score)
    with _lock:
        return (key, version) in _compiled or (cache_dir() / f"{key}.o").exists()


def compiled_trees(version: str, model_text: str, raw_score: bool = False) -> lleaves.Model:
    """`model_text` (LightGBM's text format, already cut to the iterations to use) compiled: one
    compile per (version, text, output) per process, the object file shared through `cache_dir()`.
    `raw_score`: the trees' log-odds, else the objective's transform (the probability)."""
    key = _key(version, model_text, raw_score)
    with _lock:
        model = _compiled.get((key, version))
        if model is not None:
            return model
        folder = cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        text_path = folder / f"{key}.txt"
        obj_path = folder / f"{key}.o"
        if not text_path.exists():
            write_atomic(text_path, model_text)
        model = lleaves.Model(model_file=str(text_path))
        if obj_path.exists():
            model.compile(cache=str(obj_path), raw_score=raw_score)
        else:
            # compiled to a file of this process's own, then renamed into place: a worker that loads
            # the cache never sees a half-written object file
            tmp = folder / f".{key}.{os.getpid()}.{threading.get_ident()}.o"
            try:
                model.compile(cache=str(tmp), raw_score=raw_score)
                if not tmp.exists():
                    raise RuntimeError(f"lleaves compiled {version} but wrote no object file to {tmp}")
                os.replace(tmp, obj_path)
            finally:
                tmp.unlink(missing_ok=True)
        _compiled[(key, version)] = model
        return model


BLOCK_ROWS = 1 << 17  # rows per call: lleaves reads float64, a copy of a block at a time


def predict_compiled(model: lleaves.Model, x: np.ndarray, num_threads: int = 0) -> np.ndarray:
    """`model`'s outputs for the rows of `x` (float64), on `num_threads` threads (0: every CPU).

    lleaves copies a float32 matrix to float64 before scoring; block by block, that copy stays
    ~50 MB instead of doubling the memory of a week of players' rows."""
    jobs = num_threads or _cpus()
    out = np.empty(x.shape[0], dtype=np.float64)
    for start in range(0, x.shape[0], BLOCK_ROWS):
        block = np.ascontiguousarray(x[start : start + BLOCK_ROWS], dtype=np.float64)
        out[start : start + block.shape[0]] = model.predict(block, n_jobs=jobs)
    return out


def _cpus() -> int:
    """The CPUs this process may run on (a container's or a Ray worker's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
