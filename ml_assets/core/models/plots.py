"""Small PNG plots of a model's evaluation, for Dagster's markdown metadata.

Figures are built with `matplotlib.figure.Figure` and rendered by the Agg canvas, never through
`pyplot`: no display is needed, no global figure registry grows, and it is safe in threads.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from ml_assets.core.models.evaluation import pr_curve, roc_curve
from ml_assets.core.models.metrics import average_precision, roc_auc

FIGSIZE = (4.5, 3.5)
DPI = 80
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _new_figure(figsize: tuple[float, float] = FIGSIZE) -> Figure:
    fig = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _to_png(fig: Figure) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    fig.clear()  # release artists now; the figure is not referenced after this
    return buf.getvalue()


def roc_png(y: ArrayLike, p_model: ArrayLike, p_baseline: ArrayLike | None = None) -> bytes:
    """ROC curve of the model (and of a baseline score, if given) with their AUCs, as PNG bytes."""
    y_arr = np.asarray(y, dtype=np.float64)
    fig = _new_figure()
    ax = fig.add_subplot()
    curves = [("model", p_model)] + ([("baseline", p_baseline)] if p_baseline is not None else [])
    for name, score in curves:
        s = np.asarray(score, dtype=np.float64)
        fpr, tpr = roc_curve(y_arr, s)
        ax.plot(fpr, tpr, lw=1.5, label=f"{name} (AUC {roc_auc(y_arr, s):.3f})")
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="lower right", fontsize="small")
    return _to_png(fig)


def pr_png(y: ArrayLike, p_model: ArrayLike, p_baseline: ArrayLike | None = None) -> bytes:
    """Precision-recall curve of the model (and baseline) with average precision, as PNG bytes."""
    y_arr = np.asarray(y, dtype=np.float64)
    fig = _new_figure()
    ax = fig.add_subplot()
    curves = [("model", p_model)] + ([("baseline", p_baseline)] if p_baseline is not None else [])
    for name, score in curves:
        s = np.asarray(score, dtype=np.float64)
        recall, precision = pr_curve(y_arr, s)
        ax.step(
            recall, precision, where="post", lw=1.5, label=f"{name} (AP {average_precision(y_arr, s):.3f})"
        )
    ax.axhline(float(y_arr.mean()), ls=":", color="grey", lw=1, label="positive rate")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="upper right", fontsize="small")
    return _to_png(fig)


def calibration_png(table: pl.DataFrame) -> bytes:
    """Observed positive rate against mean predicted probability per bin (from
    `evaluation.calibration_table`), with the diagonal of perfect calibration, as PNG bytes."""
    fig = _new_figure()
    ax = fig.add_subplot()
    predicted = table["mean_predicted"].to_numpy()
    observed = table["observed_rate"].to_numpy()
    top = float(max(predicted.max(initial=0.0), observed.max(initial=0.0), 0.05)) * 1.05
    ax.plot([0, top], [0, top], ls=":", color="grey", lw=1, label="perfect")
    ax.plot(predicted, observed, marker="o", ms=4, lw=1.5, label="model")
    ax.set(xlabel="mean predicted", ylabel="observed rate", title="Calibration", xlim=(0, top), ylim=(0, top))
    ax.legend(loc="upper left", fontsize="small")
    return _to_png(fig)


def importance_png(importance: dict[str, float], top: int = 20) -> bytes:
    """Horizontal bars of the `top` most important features, largest at the top, as PNG bytes."""
    items = sorted(importance.items(), key=lambda kv: -kv[1])[:top]
    height = max(FIGSIZE[1], 0.9 + 0.18 * len(items))
    fig = _new_figure((FIGSIZE[0], height))
    ax = fig.add_subplot()
    names = [name for name, _ in reversed(items)]
    values = [value for _, value in reversed(items)]
    ax.barh(range(len(items)), values, color="tab:blue")
    ax.set_yticks(range(len(items)), names, fontsize="x-small")
    ax.set(xlabel="importance", title=f"Top {len(items)} features")
    return _to_png(fig)


def markdown_image(png: bytes, alt: str) -> str:
    """An inline markdown image (`![alt](data:image/png;base64,...)`) for `dg.MetadataValue.md`."""
    safe_alt = alt.replace("[", "(").replace("]", ")")
    return f"![{safe_alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
