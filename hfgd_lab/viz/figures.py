"""matplotlib figures of the analysis results; nothing here runs the model.

Every function takes results from :mod:`hfgd_lab.analysis` (plus an optional palette
and class names) and returns a :class:`matplotlib.figure.Figure` built with the
object-oriented API (no pyplot state, Agg-safe, never shown): display it in a
notebook, pass it to ``gr.Plot``, or ``fig.savefig(path)``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..analysis.guidance import BOTH_WRONG, BROKE, FIXED, OUTCOME_NAMES
from .colors import as_palette, blend, default_palette, heatmap_overlay, overlay, to_uint8

__all__ = ["plot_segmentation", "plot_prediction", "plot_heatmap", "plot_class_similarity",
           "plot_token_similarity", "plot_shared_pca", "plot_agreement",
           "plot_decision_changes", "plot_attention", "plot_embedding", "plot_confusion",
           "plot_iou", "plot_gradient_norms", "plot_cka", "OUTCOME_COLORS", "outcome_rgb"]

OUTCOME_COLORS = {FIXED: (46, 204, 64), BROKE: (255, 65, 54), BOTH_WRONG: (255, 180, 0)}


# ---- small helpers ------------------------------------------------------------------

def _names(class_names, k: int) -> list:
    if class_names is None:
        return [str(i) for i in range(k)]
    names = list(class_names)
    return names + [str(i) for i in range(len(names), k)]


def _pal(palette, k: int) -> np.ndarray:
    pal = default_palette(k) if palette is None else as_palette(palette, 0)
    if len(pal) < k:  # more classes than colours: extend rather than fail
        pal = np.concatenate([pal, default_palette(k)[len(pal):]])
    return pal


def _figure(rows: int, cols: int, panel: float = 3.2, extra_w: float = 0.0) -> tuple:
    fig = Figure(figsize=(panel * cols + extra_w, panel * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _decimate(arr, max_px: Optional[int]):
    """Every s-th pixel so that the longer side is at most ``max_px`` (for small panels:
    drawing full-size images there costs time and shows nothing more)."""
    if not max_px:
        return arr
    step = -(-max(arr.shape[:2]) // max_px)
    return arr[::step, ::step] if step > 1 else arr


def _image_axis(ax, img, title: Optional[str] = None, max_px: Optional[int] = None):
    h, w = img.shape[:2]
    # extent keeps axis coordinates in the image's pixels however it is decimated
    ax.imshow(_decimate(img, max_px), interpolation="nearest",
              extent=(-0.5, w - 0.5, h - 0.5, -0.5))
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def _class_legend(ax, classes: Sequence[int], names, palette, max_items: int = 24):
    classes = list(classes)[:max_items]
    handles = [Patch(facecolor=np.asarray(palette[k]) / 255.0, edgecolor="none",
                     label=names[k]) for k in classes]
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  fontsize=7, frameon=False)


def _present(*masks, ignore_index: int = 255) -> list:
    vals = set()
    for m in masks:
        if m is not None:
            u = np.unique(np.asarray(m))
            vals.update(int(v) for v in u if v != ignore_index and v >= 0)
    return sorted(vals)


# ---- segmentation -------------------------------------------------------------------

def plot_segmentation(image, mask, palette=None, class_names=None, alpha: float = 0.5,
                      title: Optional[str] = None, ignore_index: int = 255) -> Figure:
    """One panel: the label map over the image, legend of the classes present.
    Axes: 1."""
    m = np.asarray(mask)
    k = max(_present(m, ignore_index=ignore_index) + [0]) + 1
    pal = _pal(palette, k)
    fig, axes = _figure(1, 1, 4.0, 1.5)
    _image_axis(axes[0, 0], overlay(image, m, pal, alpha, ignore_index), title)
    _class_legend(axes[0, 0], _present(m, ignore_index=ignore_index), _names(class_names, k), pal)
    return fig


def plot_prediction(analysis, palette=None, class_names=None, alpha: float = 0.6,
                    ignore_index: int = 255) -> Figure:
    """Image, upsampler prediction, HFG-branch prediction (if any) and ground truth (if
    the analysis has one), with one legend. Axes: 2 + has_high + has target."""
    a = analysis
    k = a.num_classes
    pal, names = _pal(palette, k), _names(class_names, k)
    panels = [("image", a.image)]
    panels.append(("prediction (upsampler, OS%d)" % a.output_stride,
                   overlay(a.image, a.pred, pal, alpha, ignore_index)))
    if a.pred_high is not None:
        panels.append(("HFG branch (OS32)",
                       overlay(a.image, a.pred_high, pal, alpha, ignore_index)))
    if a.target is not None:
        panels.append(("ground truth", overlay(a.image, a.target, pal, alpha, ignore_index)))
    fig, axes = _figure(1, len(panels), 3.2, 1.5)
    for ax, (t, img) in zip(axes[0], panels):
        _image_axis(ax, img, t)
    _class_legend(axes[0, -1], _present(a.pred, a.pred_high, a.target,
                                        ignore_index=ignore_index), names, pal)
    return fig


# ---- heatmaps -----------------------------------------------------------------------

def plot_heatmap(image, values, title: Optional[str] = None, cmap: str = "inferno",
                 alpha: float = 0.6, vmin: Optional[float] = None,
                 vmax: Optional[float] = None, label: Optional[str] = None) -> Figure:
    """A heatmap over the image with a colour bar. Axes: 2 (panel + colour bar)."""
    v = np.asarray(values, dtype=np.float64)
    lo = float(np.nanmin(v)) if vmin is None else vmin
    hi = float(np.nanmax(v)) if vmax is None else vmax
    fig, axes = _figure(1, 1, 4.0, 1.0)
    ax = axes[0, 0]
    _heat(ax, image, v, cmap, alpha, lo, hi, title)
    _colorbar(fig, ax, cmap, lo, hi, label)
    return fig


def _heat(ax, image, v, cmap, alpha, lo, hi, title, max_px=None):
    if image is None:
        h, w = v.shape
        ax.imshow(_decimate(v, max_px), cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest",
                  extent=(-0.5, w - 0.5, h - 0.5, -0.5))
        ax.set_xticks([])
        ax.set_yticks([])
        if title:
            ax.set_title(title, fontsize=9)
    else:
        img = heatmap_overlay(_decimate(image, max_px), _decimate(v, max_px), cmap, alpha, lo, hi)
        h, w = np.shape(image)[:2]
        ax.imshow(img, interpolation="nearest", extent=(-0.5, w - 0.5, h - 0.5, -0.5))
        ax.set_xticks([])
        ax.set_yticks([])
        if title:
            ax.set_title(title, fontsize=9)


def _colorbar(fig, ax, cmap, lo, hi, label=None):
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    sm = ScalarMappable(norm=Normalize(lo, hi if hi > lo else lo + 1e-12), cmap=cmap)
    cb = fig.colorbar(sm, ax=ax, shrink=0.8)
    if label:
        cb.set_label(label, fontsize=8)
    return cb


def plot_class_similarity(similarity, image, k: int, class_names=None, cmap: str = "RdBu_r",
                          alpha: float = 0.65, shared_scale: bool = True) -> Figure:
    """F_high vs F_up similarity to class token E_k, side by side, one colour scale.

    ``similarity``: a :class:`ClassSimilarity` containing ``k`` (``size="image"``).
    Axes: 2 panels + 1 colour bar (1 + 1 without an HFG branch).
    """
    high, up = similarity.of(k)
    names = _names(class_names, k + 1)
    maps = [("F_high (OS32)", high)] if high is not None else []
    maps.append(("F_up", up))
    allv = np.concatenate([m.ravel() for _, m in maps])
    if similarity.mode == "cosine" and shared_scale:
        lim = max(abs(float(allv.min())), abs(float(allv.max())), 1e-6)
        lo, hi = -lim, lim
    else:
        lo, hi = float(allv.min()), float(allv.max())
    fig, axes = _figure(1, len(maps), 3.4, 1.0)
    for ax, (t, m) in zip(axes[0], maps):
        if not shared_scale:
            lo, hi = float(m.min()), float(m.max())
        _heat(ax, image, m, cmap, alpha, lo, hi, f"{t}: {similarity.mode} to E[{names[k]}]")
    _colorbar(fig, list(axes[0]), cmap, lo, hi, similarity.mode)
    return fig


def plot_token_similarity(matrix, class_names=None, cmap: str = "RdBu_r",
                          annotate: Optional[bool] = None) -> Figure:
    """(K, K) cosine similarity between class tokens. Axes: 2 (matrix + colour bar)."""
    s = np.asarray(matrix)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"plot_token_similarity needs a (K, K) similarity matrix "
                         f"(analysis.token_similarity(tokens)), got shape {s.shape}")
    k = len(s)
    names = _names(class_names, k)
    fig, axes = _figure(1, 1, max(3.5, 0.3 * k + 2), 1.0)
    ax = axes[0, 0]
    im = ax.imshow(s, cmap=cmap, vmin=-1, vmax=1)
    ticks = np.arange(k) if k <= 40 else np.arange(0, k, max(1, k // 20))
    ax.set_xticks(ticks, [names[i] for i in ticks], rotation=90, fontsize=7)
    ax.set_yticks(ticks, [names[i] for i in ticks], fontsize=7)
    ax.set_title("class-token cosine similarity", fontsize=9)
    if annotate if annotate is not None else k <= 12:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{s[i, j]:.2f}", ha="center", va="center", fontsize=6)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


# ---- guidance vs upsampler ----------------------------------------------------------

def plot_shared_pca(pca, image=None) -> Figure:
    """F_high and F_up in one PCA colour space (``SharedPCA``), after the image if
    given. Axes: 2 (+1 with the image)."""
    evr = pca.explained_variance_ratio
    panels = [("image", image)] if image is not None else []
    panels += [("F_high, shared PCA", pca.high_image), ("F_up, shared PCA", pca.up_image)]
    fig, axes = _figure(1, len(panels), 3.4)
    for ax, (t, img) in zip(axes[0], panels):
        _image_axis(ax, to_uint8(img), t)
    fig.suptitle("one basis fitted on both; variance explained "
                 + ", ".join(f"{v:.0%}" for v in evr), fontsize=9)
    return fig


def outcome_rgb(image, changes, alpha: float = 0.7) -> np.ndarray:
    """The image with changed decisions coloured: green fixed, red broke, orange both
    wrong (magenta 'changed' without ground truth); uint8 RGB, for figures and the app."""
    out = to_uint8(image).copy()
    col = np.zeros_like(out)
    where = np.zeros(out.shape[:2], bool)
    if changes.outcome is not None:
        for code, c in OUTCOME_COLORS.items():
            sel = changes.outcome == code
            col[sel] = c
            where |= sel
    else:
        col[changes.changed] = (255, 0, 255)
        where = changes.changed
    return blend(out, col, alpha, where=where)


def plot_decision_changes(changes, image, alpha: float = 0.7) -> Figure:
    """Where the upsampler changed the HFG branch's decision; with ground truth coloured
    by outcome (fixed / broke / both wrong). Axes: 1."""
    fig, axes = _figure(1, 1, 4.0, 1.6)
    ax = axes[0, 0]
    c = changes.counts
    _image_axis(ax, outcome_rgb(image, changes, alpha),
                f"upsampler changed {changes.fraction_changed:.1%} of pixels")
    if changes.outcome is not None:
        handles = [Patch(facecolor=np.asarray(OUTCOME_COLORS[k]) / 255,
                         label=f"{OUTCOME_NAMES[k]} ({c[key]})")
                   for k, key in ((FIXED, "fixed"), (BROKE, "broke"), (BOTH_WRONG, "both_wrong"))]
    else:
        handles = [Patch(facecolor=(1, 0, 1), label=f"changed ({c['changed']})")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7,
              frameon=False)
    return fig


def plot_agreement(agreement, image, changes=None, cmap: str = "RdBu_r",
                   alpha: float = 0.65) -> Figure:
    """Cosine(F_up, upsampled F_high) with a colour bar, argmax agreement, and the
    decision changes if given. Axes: 3 (cosine, colour bar, argmax) + 1 with changes."""
    ncol = 3 if changes is not None else 2
    fig, axes = _figure(1, ncol, 3.4, 1.6)
    _heat(axes[0, 0], image, agreement.cosine_image, cmap, alpha, -1.0, 1.0,
          f"cos(F_up, F_high↑), mean {agreement.mean_cosine:.2f}")
    _colorbar(fig, axes[0, 0], cmap, -1.0, 1.0, "cosine")
    agree = to_uint8(image).copy()
    dis = ~agreement.argmax_agree
    agree = blend(agree, np.broadcast_to(np.array([255, 0, 255], np.uint8), agree.shape),
                  alpha, where=dis)
    _image_axis(axes[0, 1], agree,
                f"argmax differs (magenta), agree {agreement.agree_fraction:.1%}")
    if changes is not None:
        ax = axes[0, 2]
        _image_axis(ax, outcome_rgb(image, changes, alpha), "decision changes")
        if changes.outcome is not None:
            c = changes.counts
            handles = [Patch(facecolor=np.asarray(OUTCOME_COLORS[k]) / 255,
                             label=f"{OUTCOME_NAMES[k]} ({c[key]})")
                       for k, key in ((FIXED, "fixed"), (BROKE, "broke"),
                                      (BOTH_WRONG, "both_wrong"))]
            ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                      fontsize=7, frameon=False)
    return fig


# ---- attention ----------------------------------------------------------------------

def plot_attention(maps, image, layers: Optional[Sequence[int]] = None,
                   heads: Optional[Sequence[int]] = None, cmap: str = "inferno",
                   alpha: float = 0.65, panel: float = 2.2,
                   max_px: Optional[int] = 256) -> Figure:
    """An :class:`AttentionMaps` as a grid: one row per layer, one column per head plus
    the head average; a last row with the rollout and the image with the query.

    Each panel is scaled to its own range (attention mass differs a lot between heads)
    and drawn from at most ``max_px`` pixels a side (None: full resolution).
    Axes: ``len(layers) * (len(heads) + 1) + 2``.
    """
    layers = list(range(maps.num_layers)) if layers is None else list(layers)
    heads = list(range(maps.num_heads)) if heads is None else list(heads)
    cols = len(heads) + 1
    fig = Figure(figsize=(panel * cols, panel * (len(layers) + 1)), layout="constrained")
    gs = fig.add_gridspec(len(layers) + 1, cols)

    def mark(ax):
        if maps.query is not None:
            ax.plot([maps.query[0]], [maps.query[1]], marker="+", color="lime",
                    markersize=10, markeredgewidth=2)

    for r, l in enumerate(layers):
        for c, h in enumerate(heads):
            ax = fig.add_subplot(gs[r, c])
            _heat(ax, image, maps.per_head[l, h], cmap, alpha, None, None,
                  f"layer {l} head {h}", max_px)
            mark(ax)
        ax = fig.add_subplot(gs[r, cols - 1])
        _heat(ax, image, maps.head_mean[l], cmap, alpha, None, None, f"layer {l} mean",
              max_px)
        mark(ax)
    ax = fig.add_subplot(gs[len(layers), 0])
    _heat(ax, image, maps.rollout, cmap, alpha, None, None, "rollout", max_px)
    mark(ax)
    ax = fig.add_subplot(gs[len(layers), 1] if cols > 1 else gs[len(layers), 0])
    _image_axis(ax, image, f"query: {maps.label}", max_px)
    mark(ax)
    return fig


# ---- embeddings, scores, probes -----------------------------------------------------

def plot_embedding(embedding, palette=None, class_names=None, point_size: float = 6.0,
                   ignore_index: int = 255) -> Figure:
    """Pixel features (marker per source: F_high "^", F_up "o") coloured by class, and
    the class tokens as labelled stars. Axes: 1."""
    e = embedding
    labels = e.labels
    known = labels[(labels >= 0) & (labels != ignore_index)]
    k = max(0 if e.token_points is None else len(e.token_points),
            int(known.max()) + 1 if known.size else 0, 1)
    pal, names = _pal(palette, k), _names(class_names, k)
    fig, axes = _figure(1, 1, 5.0, 1.8)
    ax = axes[0, 0]
    markers = {"high": "^", "up": "o"}
    valid = (labels >= 0) & (labels != ignore_index) & (labels < len(pal))
    for src in np.unique(e.source):
        sel = e.source == src
        col = np.where(valid[sel, None], pal[np.where(valid, labels, 0)][sel] / 255.0, 0.6)
        ax.scatter(e.points[sel, 0], e.points[sel, 1], s=point_size, c=col,
                   marker=markers.get(str(src), "o"), alpha=0.7, linewidths=0,
                   label=f"F_{src}" if src in markers else str(src))
    if e.token_points is not None:
        tp = e.token_points
        ax.scatter(tp[:, 0], tp[:, 1], s=140, c=pal[:len(tp)] / 255.0, marker="*",
                   edgecolors="black", linewidths=0.8, label="class tokens")
        for i, (x, y) in enumerate(tp):
            ax.annotate(names[i], (x, y), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_title(f"pixel features and class tokens ({e.method})", fontsize=9)
    from matplotlib.lines import Line2D
    shapes = [Line2D([], [], linestyle="none", marker=markers.get(str(src), "o"),
                     color="0.4", label=f"F_{src}" if src in markers else str(src))
              for src in np.unique(e.source)]
    if e.token_points is not None:
        shapes.append(Line2D([], [], linestyle="none", marker="*", markersize=10,
                             markerfacecolor="white", color="black", label="class tokens"))
    ax.legend(handles=shapes, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7,
              frameon=False)
    present = sorted(set(int(v) for v in labels[valid]))
    if present and len(present) <= 24:
        handles = [Patch(facecolor=pal[c] / 255.0, label=names[c]) for c in present]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(6, len(handles)),
                   fontsize=7, frameon=False)
    return fig


def plot_confusion(confusion, class_names=None, normalize: Optional[str] = "true",
                   cmap: str = "Blues", annotate: Optional[bool] = None) -> Figure:
    """Confusion matrix (rows: truth, columns: prediction), normalised per ``"true"``
    row, ``"pred"`` column, ``"all"`` or raw counts (None). Axes: 2 (+ colour bar)."""
    from ..analysis.scores import normalize_confusion
    c = np.asarray(confusion)
    k = len(c)
    names = _names(class_names, k)
    m = normalize_confusion(c, normalize) if normalize else c.astype(np.float64)
    fig, axes = _figure(1, 1, max(3.5, 0.32 * k + 2), 1.0)
    ax = axes[0, 0]
    im = ax.imshow(m, cmap=cmap, vmin=0, vmax=1 if normalize else None, interpolation="nearest")
    ticks = np.arange(k) if k <= 40 else np.arange(0, k, max(1, k // 20))
    ax.set_xticks(ticks, [names[i] for i in ticks], rotation=90, fontsize=7)
    ax.set_yticks(ticks, [names[i] for i in ticks], fontsize=7)
    ax.set_xlabel("prediction", fontsize=8)
    ax.set_ylabel("ground truth", fontsize=8)
    ax.set_title("confusion" + (f" (normalised by {normalize})" if normalize else ""), fontsize=9)
    if annotate if annotate is not None else k <= 12:
        for i in range(k):
            for j in range(k):
                txt = f"{m[i, j]:.2f}" if normalize else f"{int(m[i, j])}"
                ax.text(j, i, txt, ha="center", va="center", fontsize=6,
                        color="white" if m[i, j] > 0.6 * (m.max() or 1) else "black")
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def plot_iou(iou, class_names=None, palette=None, title: Optional[str] = None) -> Figure:
    """Per-class IoU bars (percent; NaN classes marked "n/a") with the mIoU line.
    ``iou``: a :class:`SegScores` or a (K,) array. Axes: 1."""
    v = np.asarray(getattr(iou, "IoU", iou), dtype=np.float64)
    k = len(v)
    names, pal = _names(class_names, k), _pal(palette, k)
    fig = Figure(figsize=(max(4.0, 0.3 * k + 1.5), 3.2), layout="constrained")
    ax = fig.subplots()
    x = np.arange(k)
    ax.bar(x, np.nan_to_num(v), color=pal[:k] / 255.0, edgecolor="black", linewidth=0.4)
    for i in np.flatnonzero(np.isnan(v)):
        ax.text(i, 1, "n/a", ha="center", va="bottom", fontsize=6, rotation=90)
    if np.isfinite(v).any():
        miou = float(np.nanmean(v))
        ax.axhline(miou, color="black", linestyle="--", linewidth=1)
        ax.text(k - 0.5, miou, f" mIoU {miou:.1f}", va="bottom", ha="right", fontsize=8)
    ax.set_xticks(x, names, rotation=90, fontsize=7)
    ax.set_ylim(0, 100)
    ax.set_ylabel("IoU (%)", fontsize=8)
    ax.set_title(title or "per-class IoU", fontsize=9)
    return fig


def plot_gradient_norms(norms, log: bool = True, title: Optional[str] = None) -> Figure:
    """Grouped bars: the gradient norm each loss sends into each module group
    (a :class:`GradientNorms`). Exactly-zero entries are labelled "0" (a log axis
    cannot draw them). Axes: 1."""
    g = norms
    m, nl = len(g.modules), len(g.losses)
    fig = Figure(figsize=(max(5.0, 0.7 * m + 1.5), 3.4), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(nl, 1)
    x = np.arange(m)
    pos = g.norms[g.norms > 0]
    floor = float(pos.min()) / 10 if pos.size else 1e-12
    for j, loss in enumerate(g.losses):
        vals = g.norms[:, j]
        xs = x - 0.4 + width * (j + 0.5)
        ax.bar(xs, np.where(vals > 0, vals, np.nan), width, label=loss)
        for xi, v in zip(xs, vals):
            if v == 0:
                ax.text(xi, floor if log else 0, "0", ha="center", va="bottom", fontsize=7)
    if log and pos.size:
        ax.set_yscale("log")
        ax.set_ylim(bottom=floor)
    ax.set_xticks(x, g.modules, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("gradient L2 norm", fontsize=8)
    ax.set_title(title or "gradient reaching each module, per loss", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    return fig


def plot_cka(cka, title: Optional[str] = None, ylim=(0.0, 1.02)) -> Figure:
    """Linear CKA per backbone stage. ``cka`` is ``{stage: value}`` (one line),
    ``{label: {stage: value}}`` (one line per label), or ``{label: [{stage: value},
    ...]}`` (one line per label, mean ± std over the list, e.g. seeds). Axes: 1."""
    if cka and all(isinstance(v, (int, float, np.floating)) for v in cka.values()):
        cka = {"CKA": cka}
    fig = Figure(figsize=(4.5, 3.2), layout="constrained")
    ax = fig.subplots()
    stages = None
    for label, series in cka.items():
        runs = series if isinstance(series, (list, tuple)) else [series]
        stages = stages or list(runs[0])
        vals = np.array([[r[s] for s in stages] for r in runs], dtype=np.float64)
        mean = vals.mean(0)
        x = np.arange(len(stages))
        ax.plot(x, mean, marker="o", label=f"{label}" + (f" (n={len(runs)})" if len(runs) > 1
                                                         else ""))
        if len(runs) > 1:
            sd = vals.std(0, ddof=1)
            ax.fill_between(x, mean - sd, mean + sd, alpha=0.2)
    if stages:
        ax.set_xticks(np.arange(len(stages)), stages)
    ax.set_ylim(*ylim)
    ax.set_ylabel("linear CKA", fontsize=8)
    ax.set_title(title or "feature similarity per backbone stage", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    return fig
