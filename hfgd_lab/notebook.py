"""What the notebooks in ``notebooks/`` share: fast mode, display, cached analyses,
widget panels with a static copy, and running the notebooks themselves.

Fast mode (``HFGD_LAB_FAST=1``) shrinks image counts, sizes and iterations so that
every notebook runs top to bottom in well under a minute (CI); unset, the notebooks
run at their teaching size. Each notebook reads its knobs through :func:`pick`::

    from hfgd_lab import notebook as nb
    nb.setup()                               # threads, one status line
    N_SCENES = nb.pick(full=6, fast=2)

Interactive views are plain functions from control values to figures;
:func:`explore` draws the view once as an ordinary output (what a saved notebook, CI
and GitHub show) and then displays the live ipywidgets panel, whose figures are
cached by control values, so returning to a setting costs nothing. Every panel keeps
a render count and its last error, and :func:`exercise_panels` moves every control of
every panel once: a test that the live panels answer without a browser.

Re-running the notebooks in place (after the bundled weights change)::

    python notebooks/execute.py            # all four, full size
    python notebooks/execute.py --fast 01  # one of them, in fast mode

Environment: ``HFGD_LAB_FAST`` (fast mode), ``HFGD_LAB_THREADS`` (torch threads),
``HFGD_LAB_WEIGHTS_DIR`` (bundled models, see :mod:`hfgd_lab.zoo`),
``HFGD_LAB_RESULTS_DIR`` (the stop-gradient results, default ``docs/results``).
"""
from __future__ import annotations

import io
import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

__all__ = ["FAST_ENV", "THREADS_ENV", "RESULTS_ENV", "fast_mode", "pick", "setup",
           "repo_root", "results_dir", "weights_dir", "figure_png", "image_file_png", "show",
           "show_markdown",
           "Sample", "scene_samples", "validation_scenes", "photo_samples", "AnalysisCache",
           "Panel", "explore", "exercise_panels", "PANELS", "class_areas",
           "plot_class_areas", "plot_prediction_grid", "describe_card",
           "execute_notebook", "NOTEBOOKS", "describe_sg_summary",
           "stored_sg_results"]

FAST_ENV = "HFGD_LAB_FAST"
THREADS_ENV = "HFGD_LAB_THREADS"
RESULTS_ENV = "HFGD_LAB_RESULTS_DIR"
DPI = 72           # figures in notebooks: readable, and keeps each .ipynb small
NOTEBOOKS = ("01_quickstart.ipynb", "02_feature_exploration.ipynb",
             "03_stop_gradient_effect.ipynb", "04_cae_attention.ipynb")


# ---- fast mode and setup ------------------------------------------------------------

def fast_mode() -> bool:
    """True when ``HFGD_LAB_FAST`` is set to anything but ``""``, ``0``, ``false``, ``no``."""
    return os.environ.get(FAST_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def pick(full, fast):
    """``fast`` in fast mode, else ``full`` (the teaching size)."""
    return fast if fast_mode() else full


def setup(threads: Optional[int] = None, quiet: bool = False) -> dict:
    """Prepare a notebook kernel: torch threads (argument, else ``HFGD_LAB_THREADS``,
    else 1 in fast mode, else torch's default) and one status line. Returns the facts."""
    import torch

    from . import __version__
    if threads is None and os.environ.get(THREADS_ENV):
        threads = int(os.environ[THREADS_ENV])
    if threads is None and fast_mode():
        threads = 1
    if threads:
        torch.set_num_threads(int(threads))
    wd = weights_dir()
    packaged = wd.resolve() == (Path(__file__).resolve().parent / "weights")
    info = {"version": __version__, "fast": fast_mode(), "threads": torch.get_num_threads(),
            "weights_dir": str(wd), "torch": torch.__version__}
    if not quiet:
        where = "hfgd_lab/weights (bundled)" if packaged else f"{wd} (HFGD_LAB_WEIGHTS_DIR)"
        print(f"hfgd-lab {info['version']} | torch {info['torch']}, {info['threads']} thread(s)"
              f" | {'FAST mode (CI size)' if info['fast'] else 'full size'}"
              f" | models from {where}")
    return info


def repo_root() -> Path:
    """The source checkout this package lives in (configs/, docs/, notebooks/)."""
    return Path(__file__).resolve().parents[1]


def results_dir() -> Path:
    """Where the stop-gradient results live: ``HFGD_LAB_RESULTS_DIR`` or docs/results."""
    env = os.environ.get(RESULTS_ENV)
    return Path(env) if env else repo_root() / "docs" / "results"


def weights_dir() -> Path:
    from . import zoo
    return Path(zoo.WEIGHTS_DIR)


# ---- display ------------------------------------------------------------------------

def figure_png(fig, dpi: Optional[int] = None, colors: Optional[int] = 256) -> bytes:
    """A matplotlib Figure as PNG bytes (Agg, no pyplot), at ``dpi`` (default 72),
    reduced to a palette of ``colors`` colours (None: full RGB). The palette makes the
    image-heavy figures ~4x smaller, which keeps the stored notebooks light."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image
    if fig.canvas is None or not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi or DPI, facecolor="white")
    if not colors:
        return buf.getvalue()
    im = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    out = io.BytesIO()
    im.quantize(colors=colors, method=Image.Quantize.FASTOCTREE).save(out, "PNG", optimize=True)
    return out.getvalue()


def show(*items, dpi: Optional[int] = None) -> None:
    """Display figures (as PNG), PNG bytes, or markdown strings, in order."""
    from IPython.display import Image, Markdown, display
    for item in items:
        if item is None:
            continue
        if isinstance(item, (list, tuple)):
            show(*item, dpi=dpi)
        elif isinstance(item, bytes):
            display(Image(data=item, format="png"))
        elif isinstance(item, str):
            display(Markdown(item))
        else:
            display(Image(data=figure_png(item, dpi), format="png"))


def image_file_png(path, max_side: int = 900, colors: Optional[int] = 256) -> bytes:
    """A saved image (e.g. a figure in docs/figures) as PNG bytes, downscaled so that its
    longer side is at most ``max_side`` and reduced to a palette (small notebooks)."""
    from PIL import Image
    im = Image.open(path).convert("RGB")
    if max(im.size) > max_side:
        s = max_side / max(im.size)
        im = im.resize((round(im.size[0] * s), round(im.size[1] * s)), Image.LANCZOS)
    if colors:
        im = im.quantize(colors=colors, method=Image.Quantize.FASTOCTREE)
    out = io.BytesIO()
    im.save(out, "PNG", optimize=True)
    return out.getvalue()


def show_markdown(text: str) -> None:
    from IPython.display import Markdown, display
    display(Markdown(text))


# ---- images -------------------------------------------------------------------------

@dataclass
class Sample:
    """An image to analyse, with ground truth when it has one.

    ``background`` (scenes only) is the background class under every pixel: the
    context that decides an object's class."""
    name: str
    image: np.ndarray
    mask: Optional[np.ndarray] = None
    background: Optional[np.ndarray] = None
    source: str = ""


def scene_samples(n: int, size=192, seed: int = 1, split: str = "val",
                  variation: float = 1.0, start: int = 0) -> list[Sample]:
    """Scenes ``start .. start+n-1`` of the built-in generator (image, labels, context)."""
    from .data.scenes import SceneDataset
    ds = SceneDataset(num=start + n, size=size, seed=seed, split=split, variation=variation)
    out = []
    for i in range(start, start + n):
        s = ds.scene(i)
        out.append(Sample(f"scene {i}", s.image, s.mask.astype(np.int64), s.background,
                          f"scenes(seed={seed}, split={split!r}, size={size})"))
    return out


def validation_scenes(card: Optional[dict], n: int, size=None) -> list[Sample]:
    """The first ``n`` validation scenes of a bundled model, as its card records them
    (scenes it never trained on); the zoo's defaults when the card does not say."""
    data = ((card or {}).get("experiment") or {}).get("data") or {}
    kw = {**(data.get("kwargs") or {}), **(data.get("val_kwargs") or {})}
    return scene_samples(n, size=size or kw.get("size", 192), seed=int(kw.get("seed", 1)),
                         split=data.get("val_split", "val"),
                         variation=float(kw.get("variation", 1.0)))


def photo_samples(names: Sequence[str] = ("china.jpg", "flower.jpg"),
                  max_side: Optional[int] = None) -> list[Sample]:
    """Real photographs that ship with scikit-learn (``load_sample_image``), optionally
    downscaled so that the longer side is at most ``max_side``."""
    from PIL import Image
    from sklearn.datasets import load_sample_image
    out = []
    for name in names:
        img = load_sample_image(name)
        if max_side and max(img.shape[:2]) > max_side:
            s = max_side / max(img.shape[:2])
            size = (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s)))
            img = np.asarray(Image.fromarray(img).resize(size, Image.BICUBIC))
        out.append(Sample(f"photo {name}", np.array(img), None, None,
                          "sklearn.datasets.load_sample_image"))
    return out


# ---- one forward pass per image, kept -----------------------------------------------

class AnalysisCache:
    """One :func:`hfgd_lab.analysis.analyze_image` per image, computed on first use and
    reused by every view; ``derived(name, key, fn)`` memoises anything computed from an
    analysis (shared PCA, embeddings, ...)."""

    def __init__(self, model, samples: Sequence[Sample], max_side: Optional[int] = None):
        self.model = model
        self.samples = OrderedDict((s.name, s) for s in samples)
        self.max_side = max_side
        self._analyses: dict = {}
        self._derived: dict = {}
        self.forward_passes = 0

    @property
    def names(self) -> list[str]:
        return list(self.samples)

    def __getitem__(self, name: str):
        if name not in self._analyses:
            from .analysis import analyze_image
            s = self.samples[name]
            self._analyses[name] = analyze_image(self.model, s.image, s.mask,
                                                 max_side=self.max_side)
            self.forward_passes += 1
        return self._analyses[name]

    def derived(self, name: str, key, fn: Callable):
        k = (name, key)
        if k not in self._derived:
            self._derived[k] = fn(self[name])
        return self._derived[k]


# ---- widget panels ------------------------------------------------------------------

PANELS: list = []


class Panel:
    """A live view: ipywidgets controls + an Output updated by ``interactive_output``.

    ``view(**values)`` returns what to show (a Figure, markdown string, or a list of
    them); rendered PNGs are cached by the control values (``cache`` entries).
    ``renders`` counts views drawn, ``error`` holds the last exception (or None).
    """

    def __init__(self, view: Callable, controls: dict, title: Optional[str] = None,
                 cache: int = 32):
        import ipywidgets as widgets
        self.view, self.controls, self.title = view, dict(controls), title
        self._cache: OrderedDict = OrderedDict()
        self._cache_size = cache
        self.renders, self.calls, self.error = 0, 0, None
        self.output = widgets.interactive_output(self._draw, self.controls)
        header = [widgets.HTML(f"<b>{title}</b>")] if title else []
        self.widget = widgets.VBox(header + [widgets.HBox(list(self.controls.values()),
                                                          layout={"flex_flow": "row wrap"}),
                                             self.output])

    def values(self) -> dict:
        return {k: c.value for k, c in self.controls.items()}

    def render(self, **values) -> list:
        """The view's items for these values (figures turned into PNG bytes), cached."""
        key = tuple(sorted((k, repr(v)) for k, v in values.items()))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        items = self.view(**values)
        items = items if isinstance(items, (list, tuple)) else [items]
        out = [i if isinstance(i, (str, bytes)) or i is None else figure_png(i)
               for i in items]
        self.renders += 1
        self._cache[key] = out
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return out

    def _draw(self, **values):
        self.calls += 1
        try:
            items = self.render(**values)
            self.error = None
        except Exception as e:
            self.error = e
            raise
        show(*items)

    def exercise(self) -> int:
        """Move every control once (to its last option / maximum) and back, as a user
        would; raise if a view failed. Returns how many times the view was asked."""
        before = self.calls
        for c in self.controls.values():
            old = c.value
            options = getattr(c, "options", None)
            if options is not None and len(options) > 1:
                vals = [o[1] if isinstance(o, tuple) else o for o in options]
                new = vals[-1] if vals[-1] != old else vals[0]
            elif hasattr(c, "max") and c.max != old:
                new = c.max
            elif hasattr(c, "min") and c.min != old:
                new = c.min
            else:
                continue
            try:
                c.value = new
            except Exception as e:  # outside a kernel the Output widget re-raises
                self.error = e
            if self.error is not None:
                raise RuntimeError(f"panel {self.title!r}: view failed for "
                                   f"{self.values()}: {self.error!r}") from self.error
            c.value = old
        return self.calls - before

    def _repr_mimebundle_(self, **kwargs):
        """The widget, with a plain-text stand-in that says what it is (what GitHub and
        other viewers without a live kernel print instead of the panel)."""
        data = self.widget._repr_mimebundle_(**kwargs)
        if isinstance(data, tuple):
            data = data[0]
        data = dict(data or {})
        names = ", ".join(getattr(c, "description", "") or k for k, c in self.controls.items())
        data["text/plain"] = (f"[live panel{': ' + self.title if self.title else ''} "
                              f"({names}); run the notebook in JupyterLab to use it]")
        return data


def explore(view: Callable, controls: dict, title: Optional[str] = None,
            static: bool = True) -> Panel:
    """Show ``view`` for the controls' current values as an ordinary output (the static
    copy a saved notebook keeps), then the live panel; returns the :class:`Panel`."""
    from IPython.display import display
    panel = Panel(view, controls, title)
    if static:
        show(*panel.render(**panel.values()))
    display(panel)
    PANELS.append(panel)
    return panel


def exercise_panels() -> dict:
    """:meth:`Panel.exercise` on every panel made by :func:`explore` in this kernel."""
    return {p.title or f"panel {i}": p.exercise() for i, p in enumerate(PANELS)}


# ---- small figures of the notebooks -------------------------------------------------

def class_areas(pred: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """(K,) share of the pixels predicted as each class."""
    p = np.asarray(pred).ravel()
    p = p[(p >= 0) & (p != ignore_index)]
    counts = np.bincount(p, minlength=num_classes)[:num_classes].astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def plot_class_areas(areas: dict, classes: Sequence[str], palette, title: str = None):
    """One stacked horizontal bar per image: the share of pixels given to each class
    (shares above 6% labelled). ``areas``: ``{image name: (K,) shares}``."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    names = list(areas)
    k = len(classes)
    pal = np.asarray(palette, dtype=np.float64) / 255.0
    fig = Figure(figsize=(8.0, 0.45 * len(names) + 1.3), layout="constrained")
    ax = fig.subplots()
    used = set()
    for row, name in enumerate(names):
        left = 0.0
        for c in range(k):
            share = float(areas[name][c])
            if share <= 0:
                continue
            used.add(c)
            ax.barh(row, share, left=left, color=pal[c], edgecolor="white", linewidth=0.5)
            if share > 0.06:
                ax.text(left + share / 2, row, f"{classes[c]}\n{share:.0%}", ha="center",
                        va="center", fontsize=7,
                        color="white" if pal[c].mean() < 0.5 else "black")
            left += share
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the image's pixels", fontsize=8)
    ax.set_title(title or "predicted area per class", fontsize=9)
    ax.legend(handles=[Patch(facecolor=pal[c], label=classes[c]) for c in sorted(used)],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    return fig


def plot_prediction_grid(analyses: dict, classes: Sequence[str], palette, alpha: float = 0.6,
                         panel: float = 2.1):
    """One row per image: the image, ground truth (if any), the model's prediction
    (upsampler) and the HFG branch's prediction (OS32, if any), one legend."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from .viz import overlay
    rows = list(analyses.items())
    any_gt = any(a.target is not None for _, a in rows)
    any_high = any(a.pred_high is not None for _, a in rows)
    cols = ["image"] + (["ground truth"] if any_gt else []) + ["prediction (upsampler)"] \
        + (["HFG branch (OS32)"] if any_high else [])
    fig = Figure(figsize=(panel * len(cols) + 1.4, panel * len(rows) + 0.3),
                 layout="constrained")
    axes = fig.subplots(len(rows), len(cols), squeeze=False)
    pal = np.asarray(palette, dtype=np.uint8)
    present = set()
    for r, (name, a) in enumerate(rows):
        maps = {"image": None, "ground truth": a.target, "prediction (upsampler)": a.pred,
                "HFG branch (OS32)": a.pred_high}
        for c, col in enumerate(cols):
            ax = axes[r, c]
            m = maps[col]
            if col == "image":
                ax.imshow(a.image, interpolation="nearest")
            elif m is None:
                ax.imshow(a.image, interpolation="nearest", alpha=0.3)
                ax.text(0.5, 0.5, "none", transform=ax.transAxes, ha="center", va="center")
            else:
                ax.imshow(overlay(a.image, m, pal, alpha), interpolation="nearest")
                present.update(int(v) for v in np.unique(m) if 0 <= v < len(classes))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(col, fontsize=9)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.legend(handles=[Patch(facecolor=pal[c] / 255.0, label=classes[c])
                        for c in sorted(present)],
               loc="outside right upper", fontsize=7, frameon=False)
    return fig


def describe_card(name: str, card: dict) -> str:
    """A markdown paragraph: what a bundled model is and what it was trained on."""
    cfg = card.get("config", {})
    m = card.get("metrics") or {}
    lines = [f"**{name}**: {cfg.get('arch', 'hfgd')}"
             + (f", stop-gradient {'on' if cfg.get('stop_gradient') else 'off'}"
                if cfg.get("arch", "hfgd") == "hfgd" else "")
             + f", backbone {cfg.get('backbone')}, output stride {cfg.get('output_stride')}, "
             f"{cfg.get('num_classes')} classes."]
    if card.get("stand_in"):
        lines.append("⚠️ This is a **random-weight stand-in** (tests / development), not the "
                     "trained bundled model: its predictions mean nothing.")
    if card.get("trained_on"):
        lines.append(f"Trained on: {card['trained_on']}.")
    if "val_mIoU" in m and not card.get("stand_in"):  # a stand-in's numbers are made up
        lines.append(f"Validation mIoU {m['val_mIoU']:.1f} on {m.get('val_images', '?')} "
                     "held-out scenes.")
    return " ".join(lines)


# ---- execution ----------------------------------------------------------------------


def execute_notebook(path, fast: Optional[bool] = None, env: Optional[dict] = None,
                     timeout: int = 1800, inplace: bool = True, extra_cells=(),
                     kernel_name: str = "python3", timing: bool = False):
    """Run a notebook top to bottom with nbclient in this Python environment's kernel
    (the ``python3`` kernelspec whose ``python`` resolves to this interpreter).

    Args:
        path: the .ipynb file; it runs with its own folder as working directory.
        fast: set (True) or clear (False) ``HFGD_LAB_FAST`` for the run; None: as is.
        env: more environment variables for the kernel (None values remove one).
        inplace: write the executed notebook back to ``path``.
        extra_cells: code appended before running (tests); not written back.
        timing: record each cell's start and end in its metadata (not written back).
    Returns the executed ``nbformat`` notebook.
    """
    import nbformat
    from nbclient import NotebookClient
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    n_own = len(nb.cells)
    for code in extra_cells:
        nb.cells.append(nbformat.v4.new_code_cell(code))
    changes = dict(env or {})
    if fast is not None:
        changes[FAST_ENV] = "1" if fast else None
    # the kernel's environment: ours with the changes (None removes); ours stays as it is
    kernel_env = {k: v for k, v in {**os.environ, **changes}.items() if v is not None}
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name,
                            resources={"metadata": {"path": str(path.parent)}},
                            record_timing=timing)
    client.execute(env={k: str(v) for k, v in kernel_env.items()})
    # nbclient keeps the widgets' state (store_widget_state=False breaks its Output
    # widget handling); it would double the file (the panels' figures again) and only a
    # live kernel can drive the panels anyway, so it is not stored.
    nb.metadata.pop("widgets", None)
    if inplace:
        out = nbformat.from_dict(dict(nb, cells=nb.cells[:n_own]))
        for cell in out.cells:  # ids stay, execution noise goes
            cell.get("metadata", {}).pop("execution", None)
        nbformat.write(out, path)
    return nb
