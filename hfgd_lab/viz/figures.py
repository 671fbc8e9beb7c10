"""matplotlib figures of the analysis results; nothing here runs the model.

Every function takes results from :mod:`hfgd_lab.analysis` (plus an optional palette
and class names) and returns a :class:`matplotlib.figure.Figure` built with the
object-oriented API (no pyplot state, Agg-safe, never shown): display it in a
notebook, pass it to ``gr.Plot``, or ``fig.savefig(path)``.

Text sizes are in points (:data:`FONT_TITLE`, :data:`FONT`, :data:`FONT_SMALL`); the
smallest is :data:`MIN_FONT` = 8 pt, i.e. 12 px at the notebooks' 110 dpi (1 pt =
dpi / 72 px), readable without zooming. Labels that could collide (class tokens in the
embedding, names inside stacked bars) are placed or dropped so that none overlap.
"""
from __future__ import annotations

import textwrap
from typing import Optional, Sequence

import numpy as np
from adjustText import adjust_text
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..analysis.guidance import BOTH_WRONG, BROKE, FIXED, OUTCOME_NAMES
from ..analysis.scores import normalize_confusion
from .colors import as_palette, blend, default_palette, heatmap_overlay, overlay, to_uint8

__all__ = ["plot_segmentation", "plot_prediction", "plot_prediction_grid", "plot_class_areas",
           "plot_heatmap", "plot_class_similarity", "plot_token_similarity",
           "plot_shared_pca", "plot_agreement", "plot_decision_changes", "plot_attention",
           "plot_embedding", "plot_confusion", "plot_iou", "plot_gradient_norms", "plot_cka",
           "plot_imagenet", "OUTCOME_COLORS", "outcome_rgb", "FONT_TITLE", "FONT",
           "FONT_SMALL", "MIN_FONT"]

OUTCOME_COLORS = {FIXED: (46, 204, 64), BROKE: (255, 65, 54), BOTH_WRONG: (255, 180, 0)}

# text sizes in points: titles, axis labels and legends, ticks and annotations
FONT_TITLE, FONT, FONT_SMALL = 10, 9, 8
MIN_FONT = FONT_SMALL


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
    FigureCanvasAgg(fig)  # a renderer for measuring text (label placement), no pyplot
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _wrap(text: Optional[str], width: int) -> Optional[str]:
    """Long titles on several lines (each at most ``width`` characters), so that a
    title never runs into its neighbour's."""
    if not text:
        return text
    return "\n".join(textwrap.fill(line, width) for line in str(text).split("\n"))


def _title(ax, text: Optional[str], width_in: Optional[float] = None):
    """An axes title at :data:`FONT_TITLE`, wrapped to the panel's width (inches)."""
    if not text:
        return
    if width_in is None:  # the panel's share of the figure's width, less a margin
        spec = ax.get_subplotspec()
        if spec is not None:
            cols = spec.get_gridspec().ncols
            span = spec.colspan.stop - spec.colspan.start
            width_in = 0.9 * ax.figure.get_figwidth() * span / cols
        else:
            width_in = ax.figure.get_figwidth() * ax.get_position().width
    # ~0.55 em per character: characters per line that fit the panel
    chars = max(12, int(width_in * 72 / (0.55 * FONT_TITLE)))
    ax.set_title(_wrap(text, chars), fontsize=FONT_TITLE)


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
    _title(ax, title)


def _legend(ax, handles, **kw):
    """A legend outside the right edge of ``ax`` at :data:`FONT`."""
    if handles:
        ax.legend(handles=handles, **{"loc": "upper left", "bbox_to_anchor": (1.01, 1.0),
                                      "fontsize": FONT, "frameon": False, **kw})


def _class_legend(ax, classes: Sequence[int], names, palette, max_items: int = 24):
    classes = list(classes)[:max_items]
    _legend(ax, [Patch(facecolor=np.asarray(palette[k]) / 255.0, edgecolor="none",
                       label=names[k]) for k in classes])


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


def plot_prediction_grid(analyses: dict, classes: Sequence[str], palette, alpha: float = 0.6,
                         panel: float = 2.0, ignore_index: int = 255) -> Figure:
    """One row per image: the image, ground truth (if any image has one), the model's
    prediction (upsampler) and the HFG branch's prediction (OS32, if any), one legend of
    the classes present.

    Args:
        analyses: ``{row name: ImageAnalysis}`` (e.g. several images, or several models
            on one image).
        classes: K class names; palette: (K, 3) colours.
        panel: inches per panel (2.0: 220 px at the notebooks' 110 dpi, more than a
            192-px scene has).

    Axes: rows x columns.
    """
    rows = list(analyses.items())
    any_gt = any(a.target is not None for _, a in rows)
    any_high = any(a.pred_high is not None for _, a in rows)
    cols = ["image"] + (["ground truth"] if any_gt else []) + ["prediction (upsampler)"] \
        + (["HFG branch (OS32)"] if any_high else [])
    fig = Figure(figsize=(panel * len(cols) + 1.8, panel * len(rows) + 0.4),
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), len(cols), squeeze=False)
    k = len(classes)
    pal, names = _pal(palette, k), _names(classes, k)
    present = set()
    for r, (name, a) in enumerate(rows):
        maps = {"image": None, "ground truth": a.target, "prediction (upsampler)": a.pred,
                "HFG branch (OS32)": a.pred_high}
        for c, col in enumerate(cols):
            ax = axes[r, c]
            m = maps[col]
            if col == "image":
                _image_axis(ax, a.image)
            elif m is None:
                ax.imshow(a.image, interpolation="nearest", alpha=0.3)
                ax.text(0.5, 0.5, "none", transform=ax.transAxes, ha="center", va="center",
                        fontsize=FONT)
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                _image_axis(ax, overlay(a.image, m, pal, alpha, ignore_index))
                present.update(_present(m, ignore_index=ignore_index))
            if r == 0:
                _title(ax, col, panel)
            if c == 0:
                ax.set_ylabel(name, fontsize=FONT)
    fig.legend(handles=[Patch(facecolor=pal[c] / 255.0, label=names[c])
                        for c in sorted(present) if c < k],
               loc="outside right upper", fontsize=FONT, frameon=False)
    return fig


def plot_class_areas(areas: dict, classes: Sequence[str], palette,
                     title: Optional[str] = None) -> Figure:
    """One stacked horizontal bar per image: the share of its pixels given to each
    class (:func:`hfgd_lab.analysis.scores.class_areas`). A segment is labelled with its class
    and share only where the label fits inside it (the legend names every class).

    Args:
        areas: ``{image name: (K,) shares}`` (each summing to at most 1).
        classes: K class names; palette: (K, 3) colours.

    Axes: 1.
    """
    names = list(areas)
    k = len(classes)
    pal = _pal(palette, k) / 255.0
    fig = Figure(figsize=(8.0, 0.5 * len(names) + 1.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    used = set()
    labels = []
    for row, name in enumerate(names):
        left = 0.0
        for c in range(k):
            share = float(areas[name][c])
            if share <= 0:
                continue
            used.add(c)
            bar = ax.barh(row, share, left=left, color=pal[c], edgecolor="white",
                          linewidth=0.5)[0]
            if share > 0.04:
                t = ax.text(left + share / 2, row, f"{classes[c]}\n{share:.0%}", ha="center",
                            va="center", fontsize=FONT_SMALL,
                            color="white" if pal[c].mean() < 0.5 else "black")
                labels.append((t, bar))
            left += share
    ax.set_yticks(range(len(names)), names, fontsize=FONT)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the image's pixels", fontsize=FONT)
    _title(ax, title or "predicted area per class")
    _legend(ax, [Patch(facecolor=pal[c], label=classes[c]) for c in sorted(used)])
    # keep a label only where it fits inside its segment (measured after layout)
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    for t, bar in labels:
        box, seg = t.get_window_extent(renderer), bar.get_window_extent(renderer)
        if box.width > seg.width - 2 or box.height > seg.height:
            t.set_text(f"{float(bar.get_width()):.0%}")
            box = t.get_window_extent(renderer)
            if box.width > seg.width - 2:
                t.remove()
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
    h, w = np.shape(v)[:2] if image is None else np.shape(image)[:2]
    if image is None:
        ax.imshow(_decimate(v, max_px), cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest",
                  extent=(-0.5, w - 0.5, h - 0.5, -0.5))
    else:
        img = heatmap_overlay(_decimate(image, max_px), _decimate(v, max_px), cmap, alpha, lo, hi)
        ax.imshow(img, interpolation="nearest", extent=(-0.5, w - 0.5, h - 0.5, -0.5))
    ax.set_xticks([])
    ax.set_yticks([])
    _title(ax, title)


def _colorbar(fig, ax, cmap, lo, hi, label=None, **kw):
    sm = ScalarMappable(norm=Normalize(lo, hi if hi > lo else lo + 1e-12), cmap=cmap)
    cb = fig.colorbar(sm, ax=ax, **{"shrink": 0.8, **kw})
    cb.ax.tick_params(labelsize=FONT_SMALL)
    if label:
        cb.set_label(label, fontsize=FONT)
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
    annotate = annotate if annotate is not None else k <= 12
    # annotated cells must hold "-0.00" at FONT_SMALL: at least 0.42 in a side
    fig, axes = _figure(1, 1, max(3.5, (0.42 if annotate else 0.3) * k + 2.2), 1.0)
    ax = axes[0, 0]
    im = ax.imshow(s, cmap=cmap, vmin=-1, vmax=1)
    ticks = np.arange(k) if k <= 40 else np.arange(0, k, max(1, k // 20))
    ax.set_xticks(ticks, [names[i] for i in ticks], rotation=90, fontsize=FONT_SMALL)
    ax.set_yticks(ticks, [names[i] for i in ticks], fontsize=FONT_SMALL)
    _title(ax, "class-token cosine similarity")
    if annotate:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{s[i, j]:.2f}", ha="center", va="center", fontsize=FONT_SMALL,
                        color="white" if abs(s[i, j]) > 0.6 else "black")
    cb = fig.colorbar(im, ax=ax, shrink=0.8)
    cb.ax.tick_params(labelsize=FONT_SMALL)
    cb.set_label("cosine", fontsize=FONT)
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
                 + ", ".join(f"{v:.0%}" for v in evr), fontsize=FONT_TITLE)
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


def _outcome_handles(changes) -> list:
    """Legend entries of :func:`outcome_rgb`'s colours, with pixel counts."""
    c = changes.counts
    if changes.outcome is None:
        return [Patch(facecolor=(1, 0, 1), label=f"changed ({c['changed']} px)")]
    return [Patch(facecolor=np.asarray(OUTCOME_COLORS[k]) / 255,
                  label=f"{OUTCOME_NAMES[k]} ({c[key]} px)")
            for k, key in ((FIXED, "fixed"), (BROKE, "broke"), (BOTH_WRONG, "both_wrong"))]


def plot_decision_changes(changes, image, alpha: float = 0.7) -> Figure:
    """Where the upsampler changed the HFG branch's decision; with ground truth coloured
    by outcome (fixed / broke / both wrong), with a legend of pixel counts. Axes: 1."""
    fig, axes = _figure(1, 1, 4.0, 2.2)
    ax = axes[0, 0]
    _image_axis(ax, outcome_rgb(image, changes, alpha),
                f"upsampler changed {changes.fraction_changed:.1%} of pixels")
    _legend(ax, _outcome_handles(changes))
    return fig


def plot_agreement(agreement, image, changes=None, cmap: str = "RdBu_r",
                   alpha: float = 0.65) -> Figure:
    """Cosine(F_up, upsampled F_high) with a colour bar, argmax agreement, and the
    decision changes (with their legend) if given. Axes: 3 (cosine, colour bar,
    argmax) + 1 with changes."""
    ncol = 3 if changes is not None else 2
    fig, axes = _figure(1, ncol, 3.4, 2.6 if changes is not None else 0.8)
    _heat(axes[0, 0], image, agreement.cosine_image, cmap, alpha, -1.0, 1.0,
          f"cos(F_up, F_high↑), mean {agreement.mean_cosine:.2f}")
    _colorbar(fig, axes[0, 0], cmap, -1.0, 1.0, "cosine")
    agree = to_uint8(image).copy()
    dis = ~agreement.argmax_agree
    agree = blend(agree, np.broadcast_to(np.array([255, 0, 255], np.uint8), agree.shape),
                  alpha, where=dis)
    _image_axis(axes[0, 1], agree,
                f"argmax differs (magenta); agree {agreement.agree_fraction:.1%}")
    if changes is not None:
        ax = axes[0, 2]
        _image_axis(ax, outcome_rgb(image, changes, alpha), "decision changes")
        _legend(ax, _outcome_handles(changes))
    return fig


# ---- attention ----------------------------------------------------------------------

def plot_attention(maps, image, layers: Optional[Sequence[int]] = None,
                   heads: Optional[Sequence[int]] = None, cmap: str = "inferno",
                   alpha: float = 0.65, panel: float = 2.2,
                   max_px: Optional[int] = 256, scale: str = "panel") -> Figure:
    """An :class:`AttentionMaps` as a grid: one row per layer, one column per head plus
    the head average; a last row with the rollout and the image with the query; one
    colour bar.

    Args:
        maps: :class:`hfgd_lab.analysis.AttentionMaps` (weights are shares of the
            query's attention, in [0, 1], summing to one over the tokens).
        image: (H, W, 3) uint8, the analysed image.
        layers, heads: which to draw (default: all).
        scale: ``"panel"`` scales each panel from 0 to its own maximum (attention mass
            differs a lot between heads); the colour bar then reads "share of the
            panel's maximum" and each title gives that maximum (the largest share any
            one token gets). ``"shared"``: one scale, 0 to the largest value drawn; the
            colour bar reads the attention weight itself.
        max_px: each panel is drawn from at most this many pixels a side (None: full).

    Axes: ``len(layers) * (len(heads) + 1) + 2`` panels + 1 colour bar.

    Raises:
        ValueError: an unknown ``scale``.
    """
    if scale not in ("panel", "shared"):
        raise ValueError(f"scale must be 'panel' or 'shared', got {scale!r}")
    layers = list(range(maps.num_layers)) if layers is None else list(layers)
    heads = list(range(maps.num_heads)) if heads is None else list(heads)
    cols = len(heads) + 1
    fig = Figure(figsize=(panel * cols + 0.9, panel * (len(layers) + 1) + 0.2),
                 layout="constrained")
    FigureCanvasAgg(fig)
    gs = fig.add_gridspec(len(layers) + 1, cols)
    panels = []
    for r, l in enumerate(layers):
        for c, h in enumerate(heads):
            panels.append((gs[r, c], maps.per_head[l, h], f"layer {l} · head {h}"))
        panels.append((gs[r, cols - 1], maps.head_mean[l], f"layer {l} · head mean"))
    panels.append((gs[len(layers), 0], maps.rollout, "rollout"))
    top = max(float(np.nanmax(v)) for _, v, _ in panels)
    axes = []

    def mark(ax):
        if maps.query is not None:
            ax.plot([maps.query[0]], [maps.query[1]], marker="+", color="lime",
                    markersize=10, markeredgewidth=2)

    for spec, v, title in panels:
        ax = fig.add_subplot(spec)
        peak = float(np.nanmax(v))
        if scale == "panel":
            _heat(ax, image, v, cmap, alpha, 0.0, peak if peak > 0 else 1.0,
                  f"{title}\nmax {peak:.1%}", max_px)
        else:
            _heat(ax, image, v, cmap, alpha, 0.0, top if top > 0 else 1.0, title, max_px)
        mark(ax)
        axes.append(ax)
    ax = fig.add_subplot(gs[len(layers), 1] if cols > 1 else gs[len(layers), 0])
    _image_axis(ax, image, f"query: {maps.label}", max_px)
    mark(ax)
    if scale == "panel":
        _colorbar(fig, axes, cmap, 0.0, 1.0, "share of the panel's maximum", shrink=0.6)
    else:
        _colorbar(fig, axes, cmap, 0.0, top, "attention weight (share of the query's)",
                  shrink=0.6)
    return fig


# ---- embeddings, scores, probes -----------------------------------------------------

def plot_embedding(embedding, palette=None, class_names=None, point_size: float = 6.0,
                   ignore_index: int = 255) -> Figure:
    """Pixel features (marker per source: F_high "^", F_up "o") coloured by class, and
    the class tokens as labelled stars. Token labels are placed by ``adjustText`` so
    that no two overlap (a thin line joins a moved label to its star). Axes: 1."""
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
    _title(ax, f"pixel features and class tokens ({e.method})")
    # the coordinates carry no unit (PCA / t-SNE): no tick labels to read or collide
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(f"{e.method} 1", fontsize=FONT)
    ax.set_ylabel(f"{e.method} 2", fontsize=FONT)
    shapes = [Line2D([], [], linestyle="none", marker=markers.get(str(src), "o"),
                     color="0.4", label=f"F_{src}" if src in markers else str(src))
              for src in np.unique(e.source)]
    if e.token_points is not None:
        shapes.append(Line2D([], [], linestyle="none", marker="*", markersize=10,
                             markerfacecolor="white", color="black", label="class tokens"))
    _legend(ax, shapes)
    present = set(int(v) for v in labels[valid])
    if e.token_points is not None:
        present |= set(range(len(e.token_points)))
    present = sorted(present)
    if present and len(present) <= 24:
        handles = [Patch(facecolor=pal[c] / 255.0, label=names[c]) for c in present]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(5, len(handles)),
                   fontsize=FONT, frameon=False)
    if e.token_points is not None:
        tp = e.token_points
        ax.scatter(tp[:, 0], tp[:, 1], s=140, c=pal[:len(tp)] / 255.0, marker="*",
                   edgecolors="black", linewidths=0.8, label="class tokens", zorder=3)
        texts = [ax.text(x, y, names[i], fontsize=FONT, zorder=4,
                         bbox=dict(boxstyle="round,pad=0.15", facecolor="white", alpha=0.75,
                                   edgecolor="none"))
                 for i, (x, y) in enumerate(tp)]
        fig.draw_without_rendering()  # final layout first: adjustText measures in pixels
        _, arrows = adjust_text(texts, ax=ax, x=tp[:, 0], y=tp[:, 1], expand=(1.2, 1.5),
                                force_text=(0.3, 0.6), iter_lim=2000,
                                arrowprops=dict(arrowstyle="-", color="0.3", lw=0.6))
        # a label adjustText could not free is hidden with its line (the class stays
        # in the colour legend)
        renderer = fig.canvas.get_renderer()
        kept = []
        for t in texts:
            box = t.get_window_extent(renderer)
            if any(box.overlaps(k) for k in kept):
                t.set_visible(False)
                for a in arrows or []:
                    if getattr(a, "patchA", None) is t or getattr(
                            getattr(a, "arrow_patch", None), "patchA", None) is t:
                        a.set_visible(False)
            else:
                kept.append(box)
    return fig


def plot_confusion(confusion, class_names=None, normalize: Optional[str] = "true",
                   cmap: str = "Blues", annotate: Optional[bool] = None) -> Figure:
    """Confusion matrix (rows: truth, columns: prediction), normalised per ``"true"``
    row, ``"pred"`` column, ``"all"`` or raw counts (None). Axes: 2 (+ colour bar)."""
    c = np.asarray(confusion)
    k = len(c)
    names = _names(class_names, k)
    m = normalize_confusion(c, normalize) if normalize else c.astype(np.float64)
    annotate = annotate if annotate is not None else k <= 12
    fig, axes = _figure(1, 1, max(3.5, (0.42 if annotate else 0.32) * k + 2.2), 1.0)
    ax = axes[0, 0]
    im = ax.imshow(m, cmap=cmap, vmin=0, vmax=1 if normalize else None, interpolation="nearest")
    ticks = np.arange(k) if k <= 40 else np.arange(0, k, max(1, k // 20))
    ax.set_xticks(ticks, [names[i] for i in ticks], rotation=90, fontsize=FONT_SMALL)
    ax.set_yticks(ticks, [names[i] for i in ticks], fontsize=FONT_SMALL)
    ax.set_xlabel("prediction", fontsize=FONT)
    ax.set_ylabel("ground truth", fontsize=FONT)
    _title(ax, "confusion" + (f" (normalised by {normalize})" if normalize else ""))
    if annotate:
        for i in range(k):
            for j in range(k):
                txt = f"{m[i, j]:.2f}" if normalize else f"{int(m[i, j])}"
                ax.text(j, i, txt, ha="center", va="center", fontsize=FONT_SMALL,
                        color="white" if m[i, j] > 0.6 * (m.max() or 1) else "black")
    cb = fig.colorbar(im, ax=ax, shrink=0.8)
    cb.ax.tick_params(labelsize=FONT_SMALL)
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
        ax.text(i, 1, "n/a", ha="center", va="bottom", fontsize=FONT_SMALL, rotation=90)
    if np.isfinite(v).any():
        miou = float(np.nanmean(v))
        ax.axhline(miou, color="black", linestyle="--", linewidth=1)
        ax.text(k - 0.5, miou, f" mIoU {miou:.1f}", va="bottom", ha="right", fontsize=FONT)
    ax.set_xticks(x, names, rotation=90, fontsize=FONT_SMALL)
    ax.set_ylim(0, 100)
    ax.set_ylabel("IoU (%)", fontsize=FONT)
    _title(ax, title or "per-class IoU")
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
                ax.text(xi, floor if log else 0, "0", ha="center", va="bottom", fontsize=FONT_SMALL)
    if log and pos.size:
        ax.set_yscale("log")
        ax.set_ylim(bottom=floor)
    ax.set_xticks(x, g.modules, rotation=45, ha="right", fontsize=FONT_SMALL)
    ax.set_ylabel("gradient L2 norm", fontsize=FONT)
    _title(ax, title or "gradient reaching each module, per loss")
    ax.legend(fontsize=FONT, frameon=False)
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
    ax.set_ylabel("linear CKA", fontsize=FONT)
    _title(ax, title or "feature similarity per backbone stage")
    ax.legend(fontsize=FONT, frameon=False)
    return fig


# ---- the pretrained classifier ------------------------------------------------------

def plot_imagenet(view, what: str = "cosine", credit: Optional[str] = None,
                  alpha: float = 0.6, panel: float = 2.6, max_px: Optional[int] = 384) -> Figure:
    """The pretrained backbone's own ImageNet classifier on a photo
    (:class:`hfgd_lab.analysis.ImageNetView`): the photo, then one panel per top class
    with its class-token map over the image at stride 32 (one value per 32-px cell),
    titled with the class name and the classifier's probability; one colour bar.

    Args:
        view: :func:`hfgd_lab.analysis.analyze_imagenet`'s result.
        what: ``"cosine"``: cosine similarity of each cell's feature to the class token,
            in [-1, 1] (one symmetric scale, blue-white-red); ``"evidence"``: each cell's
            logit for the class (the class activation map; their mean is the
            classifier's logit), one scale over all panels.
        credit: the photo's attribution, printed under the figure.

    Axes: 1 + len(view.classes) panels + 1 colour bar.

    Raises:
        ValueError: an unknown ``what``.
    """
    if what not in ("cosine", "evidence"):
        raise ValueError(f"what must be 'cosine' or 'evidence', got {what!r}")
    maps = view.cosine if what == "cosine" else view.evidence
    if what == "cosine":
        lim = max(float(np.abs(maps).max()), 1e-6)
        lo, hi, cmap, label = -lim, lim, "RdBu_r", "cosine to the class token"
    else:
        lo, hi, cmap = float(maps.min()), float(maps.max()), "inferno"
        label = "class evidence (cell logit)"
    n = len(view.classes)
    fig, axes = _figure(1, n + 1, panel, 0.9)
    _image_axis(axes[0, 0], view.image, "photo", max_px)
    for i in range(n):
        _heat(axes[0, i + 1], view.image, maps[i], cmap, alpha, lo, hi,
              f"{i + 1}. {view.names[i]} ({view.probs[i]:.0%})", max_px)
    _colorbar(fig, list(axes[0, 1:]), cmap, lo, hi, label, shrink=0.9)
    if credit:
        fig.supxlabel(_wrap(credit, int((panel * (n + 1) + 0.9) * 72 / (0.55 * FONT_SMALL))),
                      fontsize=FONT_SMALL, color="0.3")
    return fig
