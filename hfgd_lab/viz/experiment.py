"""Figures of the stop-gradient experiment (results of hfgd_lab.experiments.stop_gradient).

Each function takes the list of run results (dicts, as written to ``result.json``)
and returns a matplotlib Figure; ``save_experiment_figures`` writes them as PNGs.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..experiments.stop_gradient import LABELS, STAGES, VARIANTS

COLORS = {"semantic_fpn": "#7f7f7f", "hfgd_nosg": "#1f77b4", "hfgd_sg": "#d62728"}


def _by_variant(results):
    out = {}
    for r in results:
        out.setdefault(r["variant"], []).append(r)
    return {v: out[v] for v in VARIANTS if v in out}


def _band(ax, xs, ys, color, label):
    ys = np.asarray(ys, dtype=float)
    m = np.nanmean(ys, 0)
    ax.plot(xs, m, color=color, label=label, lw=1.8, marker="o" if len(xs) < 15 else None, ms=3)
    if len(ys) > 1:
        s = np.nanstd(ys, 0, ddof=1)
        ax.fill_between(xs, m - s, m + s, color=color, alpha=0.2, lw=0)


def _new_axes(ax):
    """A fresh (figure, axes) for a standalone plot, or (None, ax) to draw into."""
    if ax is not None:
        return None, ax
    fig = Figure(figsize=(5, 3.6), layout="constrained")
    return fig, fig.subplots()


def _plot_series(results, ax, series: str, key: str, ylabel: str, title: str) -> Figure:
    """One curve per variant (mean ± std over seeds) of ``run[series][i][key]`` against
    the iteration, over the iterations that every seed of the variant reached."""
    fig, ax = _new_axes(ax)
    for v, rs in _by_variant(results).items():
        n = min(len(r[series]) for r in rs)
        xs = [p["iter"] for p in rs[0][series][:n]]
        _band(ax, xs, [[p[key] for p in r[series][:n]] for r in rs], COLORS[v], LABELS[v])
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig or ax.figure


def plot_val_curves(results, ax=None) -> Figure:
    """Validation mIoU over training, mean ± std over seeds."""
    return _plot_series(results, ax, "history", "mIoU", "validation mIoU (%)",
                        "validation mIoU")


def plot_loss_curves(results, ax=None, key="loss_up") -> Figure:
    """Training loss of the upsampler (the prediction) over iterations, log scale."""
    fig = _plot_series(results, ax, "loss_curve", key, key, f"training {key}")
    (ax or fig.axes[0]).set_yscale("log")
    return fig


def _backbone_norm(g, loss):
    return math.sqrt(sum(v[loss] ** 2 for m, v in g["norms"].items() if m.startswith("backbone")))


def plot_gradient_flow(results, ax=None) -> Figure:
    """Gradient norm reaching the backbone from each loss, over training. With every
    stop-gradient on, loss_up sends exactly zero (drawn at the bottom, annotated)."""
    fig, ax = _new_axes(ax)
    floor = None
    for v, rs in _by_variant(results).items():
        n = min(len(r["grad_norms"]) for r in rs)
        xs = [g["iter"] for g in rs[0]["grad_norms"][:n]]
        for loss, style in (("loss_up", "-"), ("loss_high", "--")):
            ys = np.array([[_backbone_norm(g, loss) for g in r["grad_norms"][:n]] for r in rs])
            if not ys.any():
                if loss == "loss_up":
                    floor = floor or (v, xs)
                continue
            m = ys.mean(0)
            ax.plot(xs, m, style, color=COLORS[v], lw=1.6,
                    label=f"{LABELS[v]}: {loss}")
    ax.set_yscale("log")
    if floor:
        lo = ax.get_ylim()[0]
        ax.plot(floor[1], [lo * 1.05] * len(floor[1]), "-", color=COLORS[floor[0]], lw=3,
                label=f"{LABELS[floor[0]]}: loss_up = 0 exactly")
    ax.set_xlabel("iteration")
    ax.set_ylabel("‖∇ backbone‖ (probe batch)")
    ax.set_title("gradient reaching the backbone")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig or ax.figure


def plot_drift(results, ax=None) -> Figure:
    """Linear CKA of each backbone stage to its pretrained state (1 = unchanged)."""
    fig, ax = _new_axes(ax)
    groups = _by_variant(results)
    width = 0.8 / max(len(groups), 1)
    xs = np.arange(len(STAGES))
    lo = 1.0
    for i, (v, rs) in enumerate(groups.items()):
        vals = np.array([[r["cka"].get(s, np.nan) for s in STAGES] for r in rs], dtype=float)
        m = np.nanmean(vals, 0)
        s = np.nanstd(vals, 0, ddof=1) if len(vals) > 1 else np.zeros_like(m)
        lo = min(lo, np.nanmin(m - s))
        ax.bar(xs + (i - (len(groups) - 1) / 2) * width, m, width, yerr=s, capsize=2,
               color=COLORS[v], label=LABELS[v])
    ax.set_xticks(xs, STAGES)
    ax.set_ylim(max(0.0, lo - 0.05), 1.0)
    ax.set_ylabel("linear CKA to pretrained")
    ax.set_title("backbone drift (lower = more change)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return fig or ax.figure


def plot_experiment(results) -> Figure:
    """All four panels in one figure."""
    fig = Figure(figsize=(11, 7.5), layout="constrained")
    axes = fig.subplots(2, 2)
    plot_val_curves(results, axes[0, 0])
    plot_loss_curves(results, axes[0, 1])
    plot_gradient_flow(results, axes[1, 0])
    plot_drift(results, axes[1, 1])
    return fig


def save_experiment_figures(results, out_dir, prefix: str = "") -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fn in (("summary", plot_experiment), ("val_curves", plot_val_curves),
                     ("gradient_flow", plot_gradient_flow), ("drift", plot_drift)):
        path = out_dir / f"{prefix}{name}.png"
        fn(results).savefig(path, dpi=110)
        paths.append(path)
    return paths
