"""Evaluation reports: ``cases.csv``, ``summary.csv`` and PNG figures.

Rows are the dicts :func:`evaluate.evaluate_case` returns (columns in :data:`evaluate.COLUMNS`).
The summary groups them by protocol, mask selection, label and scope (``slice`` or ``object``)
and gives, for Dice, IoU, HD95 and NSD, the mean, the median and the interquartile range as
its two ends ``q1`` and ``q3`` (25th and 75th percentiles). HD95 statistics use the finite
values only; ``hd95_inf`` counts the infinite ones (an empty prediction). With more than one
label, ``label`` = ``all`` pools them.

Figures need matplotlib, imported only when a figure is drawn (the engine does not need it);
they are drawn on a bare ``matplotlib.figure.Figure``, leaving pyplot's global state alone.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from ..errors import SAMSegmenterError
from ..prompts import Prompt

METRICS = ("dice", "iou", "hd95", "nsd")
SELECTION_COLOURS = {"single": "#4c72b0", "best_score": "#dd8452", "box_fit": "#c44e52", "oracle": "#55a868"}


@dataclass
class Overlay:
    """One slice to draw: image (rows, cols) float in [0, 1], reference and prediction (rows, cols) bool,
    the prompt in slice pixels (x = column, y = row), in-plane spacing (row, col) in mm and a title."""

    title: str
    image: np.ndarray
    reference: np.ndarray
    prediction: np.ndarray
    prompt: Prompt
    spacing: tuple[float, float]


def _format(value: object) -> object:
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.6g}"
    return value


def write_csv(rows: Sequence[dict], path: str | Path, columns: Sequence[str]) -> Path:
    """Write ``rows`` (dicts) with the given column order; floats with 6 significant digits, inf as ``inf``."""
    path = Path(path)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _format(v) for k, v in row.items()})
    return path


def _stats(values: Iterable[float], prefix: str) -> dict[str, float]:
    data = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if data.size == 0:
        return {f"{prefix}_{s}": float("nan") for s in ("mean", "median", "q1", "q3")}
    q1, median, q3 = np.percentile(data, [25, 50, 75])
    return {f"{prefix}_mean": float(data.mean()), f"{prefix}_median": float(median),
            f"{prefix}_q1": float(q1), f"{prefix}_q3": float(q3)}


SUMMARY_COLUMNS = (("protocol", "selection", "label", "scope", "n")
                   + tuple(f"{m}_{s}" for m in METRICS for s in ("mean", "median", "q1", "q3"))
                   + ("hd95_inf", "score_mean"))


def summarize(rows: Sequence[dict]) -> list[dict]:
    """One summary row per (protocol, selection, label, scope), in the order the rows first show them.

    Adds ``label`` = ``all`` groups pooling every label when there is more than one.
    """
    groups: dict[tuple, list[dict]] = {}
    labels = {row["label"] for row in rows}
    for row in rows:
        keys = [(row["protocol"], row["selection"], row["label"], row["scope"])]
        if len(labels) > 1:
            keys.insert(0, (row["protocol"], row["selection"], "all", row["scope"]))
        for key in keys:
            groups.setdefault(key, []).append(row)
    summary = []
    for (protocol, selection, label, scope), members in groups.items():
        entry: dict[str, object] = {"protocol": protocol, "selection": selection, "label": label, "scope": scope,
                                    "n": len(members)}
        for metric in METRICS:
            entry.update(_stats((float(m[metric]) for m in members), metric))
        entry["hd95_inf"] = sum(math.isinf(float(m["hd95"])) for m in members)
        entry["score_mean"] = float(np.mean([float(m["score"]) for m in members]))
        summary.append(entry)
    return summary


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise SAMSegmenterError("figures need matplotlib: `pip install matplotlib` "
                                "(or run without figures: --no-figures)") from None
    return Figure


def plot_boxplots(rows: Sequence[dict], path: str | Path, metrics: Sequence[str] = ("dice", "nsd"),
                  title: Optional[str] = None) -> Path:
    """Box plots of ``metrics`` per protocol (x axis), one box per mask selection, saved as PNG."""
    Figure = _figure_class()
    protocols = list(dict.fromkeys(row["protocol"] for row in rows))
    selections = [s for s in SELECTION_COLOURS if any(row["selection"] == s for row in rows)]
    fig = Figure(figsize=(max(6.0, 1.1 * len(protocols) * max(1, len(selections)) / 1.5), 3.2 * len(metrics)),
                 layout="constrained")
    axes = fig.subplots(len(metrics), 1, squeeze=False)[:, 0]
    width = 0.8 / max(1, len(selections))
    for ax, metric in zip(axes, metrics):
        for s, selection in enumerate(selections):
            data, positions = [], []
            for p, protocol in enumerate(protocols):
                values = [float(r[metric]) for r in rows if r["protocol"] == protocol and r["selection"] == selection]
                values = [v for v in values if math.isfinite(v)]
                if values:
                    data.append(values)
                    positions.append(p - 0.4 + width * (s + 0.5))
            if data:
                parts = ax.boxplot(data, positions=positions, widths=width * 0.9, patch_artist=True,
                                   showfliers=True, flierprops={"markersize": 2})
                for box in parts["boxes"]:
                    box.set_facecolor(SELECTION_COLOURS[selection])
                    box.set_alpha(0.8)
                if ax is axes[0]:
                    ax.plot([], [], "s", color=SELECTION_COLOURS[selection], label=selection)
        ax.set_xticks(range(len(protocols)), protocols, rotation=20)
        ax.set_xlim(-0.6, len(protocols) - 0.4)
        ax.set_ylabel(metric.upper() if metric != "dice" else "Dice")
        if metric in ("dice", "iou", "nsd"):
            ax.set_ylim(-0.02, 1.02)
        ax.grid(axis="y", alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=len(selections), fontsize="small",
               title="mask selection", title_fontsize="small")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)
    return Path(path)


def _view(item: Overlay, margin: float = 0.5, minimum: int = 24) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) axis limits around reference, prediction and prompt, enlarged by ``margin``."""
    rows, cols = item.image.shape
    ys, xs = np.nonzero(item.reference | item.prediction)
    xs = np.concatenate([xs, item.prompt.points[:, 0]]).astype(np.float64)
    ys = np.concatenate([ys, item.prompt.points[:, 1]]).astype(np.float64)
    if item.prompt.box is not None:
        xs = np.concatenate([xs, item.prompt.box[[0, 2]]])
        ys = np.concatenate([ys, item.prompt.box[[1, 3]]])
    cx, cy = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
    half_x = max((xs.max() - xs.min() + 1) * (1 + margin), minimum) / 2
    half_y = max((ys.max() - ys.min() + 1) * (1 + margin), minimum) / 2
    return (max(-0.5, cx - half_x), min(cols - 0.5, cx + half_x),
            min(rows - 0.5, cy + half_y), max(-0.5, cy - half_y))  # y axis downwards (rows)


def plot_overlays(overlays: Sequence[Overlay], path: str | Path, columns: int = 3) -> Path:
    """A grid of slices, zoomed on the object: reference outlined green, prediction red, box yellow,
    include points as green stars, exclude points as red crosses."""
    if not overlays:
        raise ValueError("no overlay to draw")
    Figure = _figure_class()
    from matplotlib.patches import Rectangle

    columns = min(columns, len(overlays))
    rows = math.ceil(len(overlays) / columns)
    fig = Figure(figsize=(3.2 * columns, 3.5 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, item in zip(axes, overlays):
        ax.imshow(item.image, cmap="gray", vmin=0, vmax=1, aspect=item.spacing[0] / item.spacing[1],
                  interpolation="nearest")
        for mask, colour in ((item.reference, "#40ff40"), (item.prediction, "#ff3030")):
            if mask.any() and not mask.all():
                ax.contour(mask.astype(np.float32), levels=[0.5], colors=colour, linewidths=1.2)
        if item.prompt.box is not None:
            x0, y0, x1, y1 = item.prompt.box
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, edgecolor="#ffe600",
                                   linewidth=1.0))
        for (x, y), label in zip(item.prompt.points, item.prompt.labels):
            ax.plot(x, y, marker="*" if label == 1 else "x", color="#40ff40" if label == 1 else "#ff3030",
                    markersize=8, markeredgecolor="black" if label == 1 else None)
        x0, x1, y0, y1 = _view(item)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_title(item.title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(overlays):]:
        ax.set_axis_off()
    fig.suptitle("green: reference, red: prediction, yellow: box prompt", fontsize=9)
    fig.savefig(path, dpi=110)
    return Path(path)
