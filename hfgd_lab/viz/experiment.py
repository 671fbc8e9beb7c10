"""Figures of the stop-gradient experiment (results of hfgd_lab.experiments.stop_gradient).

Each function takes the list of run results (dicts, as written to ``result.json``)
and returns a matplotlib Figure; ``save_experiment_figures`` writes them as PNGs.
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..experiments.stop_gradient import LABELS, LOSSES, STAGES, VARIANTS, stage_grad, summarize

COLORS = {"semantic_fpn": "#7f7f7f", "hfgd_nosg": "#1f77b4", "hfgd_sg": "#d62728",
          "hfgd_partial_sg": "#ff7f0e"}
# the paired differences drawn by plot_paired / plot_regime_map, "a - b"
MAP_PAIRS = (("hfgd_sg", "hfgd_nosg"), ("hfgd_partial_sg", "hfgd_nosg"),
             ("hfgd_nosg", "semantic_fpn"), ("hfgd_sg", "semantic_fpn"))
PAIR_COLORS = {"hfgd_sg - hfgd_nosg": "#d62728", "hfgd_partial_sg - hfgd_nosg": "#ff7f0e",
               "hfgd_nosg - semantic_fpn": "#1f77b4", "hfgd_sg - semantic_fpn": "#9467bd"}


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


def plot_stage_gradients(results, ax=None) -> Figure:
    """What each loss sends into each backbone stage: mean gradient norm over the probes
    after the first, mean over seeds, bars per variant; loss_high hatched. A zero bar
    (the stop-gradient at work) is labelled "0"."""
    fig, ax = _new_axes(ax)
    groups = _by_variant(results)
    bars = [(v, loss) for v in groups for loss in LOSSES
            if not (v == "semantic_fpn" and loss == "loss_high")]
    width = 0.8 / max(len(bars), 1)
    xs = np.arange(len(STAGES))
    for i, (v, loss) in enumerate(bars):
        m = np.array([np.nanmean([stage_grad(r, s, loss) for r in groups[v]])
                      for s in STAGES])
        pos = xs + (i - (len(bars) - 1) / 2) * width
        ax.bar(pos, m, width, color=COLORS[v], hatch="//" if loss == "loss_high" else None,
               edgecolor="white" if loss == "loss_high" else None,
               label=f"{LABELS[v]}: {loss}")
        for x, y in zip(pos, m):
            if y == 0:
                ax.text(x, 0, "0", ha="center", va="bottom", fontsize=6, color=COLORS[v])
    ax.set_xticks(xs, STAGES)
    ax.set_ylabel("‖∇ stage‖ (probe batch)")
    ax.set_title("what each loss sends into each backbone stage")
    ax.legend(fontsize=6, ncol=2)
    ax.grid(alpha=0.3, axis="y")
    return fig or ax.figure


def _pair_points(summary, pairs=MAP_PAIRS):
    out = []
    for a, b in pairs:
        p = summary.get("paired", {}).get(f"{a} - {b}")
        if p:
            m = float(p["mean_std"][0])
            half = p.get("ci95")
            half = float(half) if half is not None else float("nan")
            out.append((f"{a} - {b}", f"{LABELS[a]} − {LABELS[b]}", m, half,
                        [float(d) for d in p["per_seed"]]))
    return out


def plot_paired(summary, ax=None) -> Figure:
    """Paired differences of val mIoU (same seed): each seed as a dot, the mean with its
    95 % t-interval as a bar; the zero line is "no difference"."""
    fig, ax = _new_axes(ax)
    pts = _pair_points(summary)
    for i, (key, label, m, half, per) in enumerate(pts):
        y = len(pts) - 1 - i
        ax.errorbar(m, y, xerr=None if math.isnan(half) else half, fmt="o",
                    color=PAIR_COLORS[key], capsize=4, lw=2)
        ax.scatter(per, [y + 0.18] * len(per), s=10, color=PAIR_COLORS[key], alpha=0.6)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(pts)), [p[1] for p in pts][::-1])
    ax.set_xlabel("val mIoU difference (points), paired by seed")
    ax.set_title("paired differences: mean, 95 % t-interval, seeds")
    ax.grid(alpha=0.3, axis="x")
    return fig or ax.figure


def plot_regime_map(stored) -> Figure:
    """The regime map: for every stored regime (``stored_results()``), the paired
    differences with their 95 % t-intervals side by side. An interval that misses the
    zero line is an effect beyond the seed noise."""
    n = max(len(stored), 1)
    fig = Figure(figsize=(9, 1.6 + 0.9 * n), layout="constrained")
    ax = fig.subplots()
    step = 1.0 / (len(MAP_PAIRS) + 1)
    seen = set()
    for i, r in enumerate(stored):
        y0 = n - 1 - i
        for j, (key, label, m, half, per) in enumerate(_pair_points(r["summary"])):
            k = [f"{a} - {b}" for a, b in MAP_PAIRS].index(key)
            y = y0 + 0.35 - k * step
            ax.errorbar(m, y, xerr=None if math.isnan(half) else half, fmt="o", ms=4,
                        color=PAIR_COLORS[key], capsize=3,
                        label=label if key not in seen else None)
            seen.add(key)
    ax.axvline(0, color="k", lw=0.8)
    # long regime titles wrap instead of running off the figure's left edge
    ax.set_yticks(range(n), [textwrap.fill(r["title"], 32) for r in stored][::-1], fontsize=8)
    ax.set_xlabel("val mIoU difference (points), paired by seed; bars: 95 % t-interval")
    ax.set_title("stop-gradient regime map")
    # below the axes, so that it never covers an interval
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    ax.grid(alpha=0.3, axis="x")
    return fig


def save_experiment_figures(results, out_dir, prefix: str = "", summary=None) -> list[Path]:
    """Write the figures of one regime as PNGs: ``summary`` (the four panels),
    ``val_curves``, ``gradient_flow``, ``drift``, ``stage_gradients`` and, with several
    seeds, ``paired`` (``summary``: as ``summarize(results)``, computed when None)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summary if summary is not None else summarize(results)
    paths = []
    figures = [("summary", plot_experiment), ("val_curves", plot_val_curves),
               ("gradient_flow", plot_gradient_flow), ("drift", plot_drift),
               ("stage_gradients", plot_stage_gradients)]
    if any(len(p["per_seed"]) > 1 for p in summary.get("paired", {}).values()):
        figures.append(("paired", lambda _: plot_paired(summary)))
    for name, fn in figures:
        path = out_dir / f"{prefix}{name}.png"
        fn(results).savefig(path, dpi=110)
        paths.append(path)
    return paths
