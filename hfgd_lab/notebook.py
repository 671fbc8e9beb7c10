"""What only the notebooks in ``notebooks/`` need: fast mode, display, live widget
panels, and running the notebooks themselves.

Everything else has its one home, which the notebooks call directly: example images in
:mod:`hfgd_lab.data.samples`, models through :func:`hfgd_lab.from_pretrained` (a
:class:`~hfgd_lab.engine.LoadedModel`, whose ``describe()`` is the card in words),
analysed images in :class:`hfgd_lab.analysis.AnalysisCache` (the app's cache too),
figures in :mod:`hfgd_lab.viz`, the stop-gradient results in
:mod:`hfgd_lab.experiments.stop_gradient`.

Fast mode (``HFGD_LAB_FAST=1``) shrinks image counts, sizes and iterations so that
every notebook runs top to bottom in about a minute (CI); unset, the notebooks run at
their teaching size. Each notebook reads its knobs through :func:`pick`::

    from hfgd_lab import notebook as nb
    nb.setup()                               # threads, one status line
    N_SCENES = nb.pick(full=6, fast=2)

Interactive views are plain functions from control values to figures. :func:`explore`
first shows a **static copy** of the view for the controls' default values, labelled as
such (what a saved notebook, GitHub and readers without a kernel see), then the live
ipywidgets panel. The first time any of its controls changes, the static copy is
replaced by a one-line note, so a reader with a kernel never has two copies of a view
that disagree. Rendered figures are kept per control values (an
:class:`hfgd_lab.analysis.LRU`), so returning to a setting costs nothing. Every panel
keeps a render count and its last error; :func:`exercise_panels` moves every control of
every panel once: a test that the live panels answer without a browser.

Figures are shown as PNG at :data:`DPI` = 110: the smallest text of
:mod:`hfgd_lab.viz` (8 pt) is then 12 px high, readable without zoom; any text under
8 pt in a figure drawn elsewhere is raised to 8 pt on display.

Re-running the notebooks in place (after the bundled weights change)::

    python notebooks/execute.py            # all four, full size
    python notebooks/execute.py --fast 01  # one of them, in fast mode

Environment: ``HFGD_LAB_FAST`` (fast mode), ``HFGD_LAB_THREADS`` (torch threads),
``HFGD_LAB_WEIGHTS_DIR`` (bundled models, see :mod:`hfgd_lab.engine.zoo`),
``HFGD_LAB_RESULTS_DIR`` (the stop-gradient results, see
:func:`hfgd_lab.experiments.stop_gradient.results_dir`).
"""
from __future__ import annotations

import asyncio
import inspect
import io
import itertools
import os
import time
from pathlib import Path
from typing import Callable, Optional

import ipywidgets as widgets
import torch
from IPython.display import Image, Markdown, display, update_display
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text
from PIL import Image as PILImage

from . import __version__
from .analysis import LRU
from .engine import zoo
from .viz import MIN_FONT

__all__ = ["NotebookTimeout", "FAST_ENV", "THREADS_ENV", "DPI", "NOTEBOOKS", "STATIC_LABEL", "STATIC_GONE",
           "fast_mode", "pick", "setup", "repo_root", "figure_png", "image_file_png", "show",
           "show_markdown", "RENDERED", "Panel", "explore", "exercise_panels", "PANELS",
           "execute_notebook"]

FAST_ENV = "HFGD_LAB_FAST"
THREADS_ENV = "HFGD_LAB_THREADS"
DPI = 110          # 8 pt text = 12 px; palette PNGs keep each .ipynb under 1.5 MB
NOTEBOOKS = ("01_quickstart.ipynb", "02_feature_exploration.ipynb",
             "03_stop_gradient_effect.ipynb", "04_cae_attention.ipynb")
STATIC_LABEL = ("**Static copy** of this view for {values}, for readers without a kernel "
                "(GitHub, a saved file). The live panel below updates; this copy does not.")
STATIC_GONE = ("*(The static copy of this view was here. The live panel below follows the "
               "controls.)*")
# (smallest text in points, dpi) of every figure shown, for tests of readability
RENDERED: list = []
_display_ids = itertools.count()


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
    if threads is None and os.environ.get(THREADS_ENV):
        threads = int(os.environ[THREADS_ENV])
    if threads is None and fast_mode():
        threads = 1
    if threads:
        torch.set_num_threads(int(threads))
    wd = Path(zoo.WEIGHTS_DIR)
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


# ---- display ------------------------------------------------------------------------

def _readable(fig) -> float:
    """Raise any text under :data:`MIN_FONT` to it; returns the smallest size shown."""
    sizes = []
    for t in fig.findobj(Text):
        if t.get_visible() and t.get_text().strip():
            if t.get_fontsize() < MIN_FONT:
                t.set_fontsize(MIN_FONT)
            sizes.append(t.get_fontsize())
    return min(sizes, default=float(MIN_FONT))


def figure_png(fig, dpi: Optional[int] = None, colors: Optional[int] = 256) -> bytes:
    """A matplotlib Figure as PNG bytes (Agg, no pyplot) at ``dpi`` (default
    :data:`DPI`), every text at least :data:`MIN_FONT` points, reduced to a palette of
    ``colors`` colours (None: full RGB). The palette makes the image-heavy figures ~4x
    smaller, which keeps the stored notebooks light."""
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    dpi = dpi or DPI
    RENDERED.append((_readable(fig), dpi))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    if not colors:
        return buf.getvalue()
    im = PILImage.open(io.BytesIO(buf.getvalue())).convert("RGB")
    out = io.BytesIO()
    im.quantize(colors=colors, method=PILImage.Quantize.FASTOCTREE).save(out, "PNG",
                                                                         optimize=True)
    return out.getvalue()


def _display_object(item, dpi: Optional[int] = None):
    if isinstance(item, bytes):
        return Image(data=item, format="png")
    if isinstance(item, str):
        return Markdown(item)
    return Image(data=figure_png(item, dpi), format="png")


def _flatten(items) -> list:
    out = []
    for item in items:
        if isinstance(item, (list, tuple)):
            out.extend(_flatten(item))
        elif item is not None:
            out.append(item)
    return out


def show(*items, dpi: Optional[int] = None) -> None:
    """Display figures (as PNG), PNG bytes, or markdown strings, in order."""
    for item in _flatten(items):
        display(_display_object(item, dpi))


def image_file_png(path, max_side: int = 900, colors: Optional[int] = 256) -> bytes:
    """A saved image (e.g. a figure in docs/figures) as PNG bytes, downscaled so that its
    longer side is at most ``max_side`` and reduced to a palette (small notebooks)."""
    im = PILImage.open(path).convert("RGB")
    if max(im.size) > max_side:
        s = max_side / max(im.size)
        im = im.resize((round(im.size[0] * s), round(im.size[1] * s)), PILImage.LANCZOS)
    if colors:
        im = im.quantize(colors=colors, method=PILImage.Quantize.FASTOCTREE)
    out = io.BytesIO()
    im.save(out, "PNG", optimize=True)
    return out.getvalue()


def show_markdown(text: str) -> None:
    display(Markdown(text))


# ---- widget panels ------------------------------------------------------------------

PANELS: list = []


def _describe(value) -> str:
    return value if isinstance(value, str) else repr(value)


class Panel:
    """A live view: ipywidgets controls + an Output updated by ``interactive_output``.

    ``view(**values)`` returns what to show (a Figure, markdown string, or a list of
    them); rendered PNGs are kept per control values in an
    :class:`hfgd_lab.analysis.LRU` of ``cache`` entries. ``renders`` counts views drawn,
    ``calls`` draws asked for, ``error`` holds the last exception (or None).
    """

    def __init__(self, view: Callable, controls: dict, title: Optional[str] = None,
                 cache: int = 32):
        self.view, self.controls, self.title = view, dict(controls), title
        self._cache = LRU(cache)
        self.renders, self.calls, self.error = 0, 0, None
        self.static_ids: list = []           # display ids of the static copy, if shown
        self.static_shown = False
        self.output = widgets.interactive_output(self._draw, self.controls)
        header = [widgets.HTML(f"<b>{title}</b> (live panel)")] if title else []
        self.widget = widgets.VBox(header + [widgets.HBox(list(self.controls.values()),
                                                          layout={"flex_flow": "row wrap"}),
                                             self.output])

    def values(self) -> dict:
        return {k: c.value for k, c in self.controls.items()}

    def describe_values(self, values: Optional[dict] = None) -> str:
        """``image = scene 0, class = boat``: the controls' values as their labels say."""
        values = self.values() if values is None else values
        parts = []
        for k, c in self.controls.items():
            label = getattr(c, "label", None) if hasattr(c, "options") else None
            shown = label if label is not None else _describe(values[k])
            parts.append(f"{getattr(c, 'description', '') or k} = {shown}")
        return ", ".join(parts)

    def render(self, **values) -> list:
        """The view's items for these values (figures turned into PNG bytes), cached."""
        key = tuple(sorted((k, repr(v)) for k, v in values.items()))

        def draw():
            items = self.view(**values)
            items = items if isinstance(items, (list, tuple)) else [items]
            self.renders += 1
            return [i if isinstance(i, (str, bytes)) or i is None else figure_png(i)
                    for i in items]
        return self._cache.get_or_compute(key, draw)

    def _draw(self, **values):
        self.calls += 1
        try:
            items = self.render(**values)
            self.error = None
        except Exception as e:
            self.error = e
            raise
        show(*items)

    # ---- the static copy --------------------------------------------------------------
    def show_static(self) -> None:
        """Display the view for the current values as ordinary outputs, labelled as the
        static copy; the first change of any control replaces them (:meth:`drop_static`)."""
        items = [STATIC_LABEL.format(values=self.describe_values())] \
            + _flatten(self.render(**self.values()))
        for item in items:
            did = f"hfgd-static-{os.getpid()}-{next(_display_ids)}"
            display(_display_object(item), display_id=did)
            self.static_ids.append(did)
        self.static_shown = True
        for c in self.controls.values():
            c.observe(self._on_change, names="value")

    def _on_change(self, change) -> None:
        if self.static_shown:
            self.drop_static()

    def drop_static(self) -> None:
        """Replace the static copy by :data:`STATIC_GONE` (first output) and nothing."""
        for i, did in enumerate(self.static_ids):
            update_display(Markdown(STATIC_GONE if i == 0 else ""), display_id=did)
        self.static_shown = False

    # ---- checks -----------------------------------------------------------------------
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
    """Show ``view`` for the controls' current values as a labelled static copy (what a
    saved notebook keeps; replaced by a note once a control changes), then the live
    panel; returns the :class:`Panel`."""
    panel = Panel(view, controls, title)
    if static:
        panel.show_static()
    display(panel)
    PANELS.append(panel)
    return panel


def exercise_panels() -> dict:
    """:meth:`Panel.exercise` on every panel made by :func:`explore` in this kernel."""
    return {p.title or f"panel {i}": p.exercise() for i, p in enumerate(PANELS)}


# ---- execution ----------------------------------------------------------------------

def _poll_in_slices(kc, slice_s: float = 1.0) -> None:
    """Make the kernel client's shell and IOPub ``get_msg`` wait in slices of ``slice_s``
    seconds: a long single wait can miss a message that has arrived and only return when
    it times out (jupyter/nbclient#312, its PR #311 does the same; here a cell with widgets
    waited its whole 600 s cell timeout, or longer, on an idle kernel)."""
    from queue import Empty
    for channel in (kc.shell_channel, kc.iopub_channel):
        get = channel.get_msg

        async def get_msg(timeout=None, _get=get):
            end = None if timeout is None else time.monotonic() + timeout
            while True:
                left = slice_s if end is None else min(slice_s, end - time.monotonic())
                try:
                    msg = _get(timeout=max(left, 0.0))
                    return (await msg) if inspect.isawaitable(msg) else msg
                except Empty:
                    if end is not None and time.monotonic() >= end:
                        raise
        channel.get_msg = get_msg


class NotebookTimeout(RuntimeError):
    """A notebook did not finish within its wall-clock ``deadline``."""


def execute_notebook(path, fast: Optional[bool] = None, env: Optional[dict] = None,
                     timeout: int = 1800, inplace: bool = True, extra_cells=(),
                     kernel_name: str = "python3", timing: bool = False,
                     deadline: Optional[float] = None):
    """Run a notebook top to bottom with nbclient in this Python environment's kernel
    (the ``python3`` kernelspec whose ``python`` resolves to this interpreter).

    Args:
        path: the .ipynb file; it runs with its own folder as working directory.
        fast: set (True) or clear (False) ``HFGD_LAB_FAST`` for the run; None: as is.
        env: more environment variables for the kernel (None values remove one).
        inplace: write the executed notebook back to ``path``.
        extra_cells: code appended before running (tests); not written back.
        timing: record each cell's start and end in its metadata (not written back).
        deadline: seconds for the whole run, kernel start and shutdown included (None:
            no limit beyond ``timeout`` per cell). nbclient's per-cell ``timeout`` does
            not cover a client left waiting on an idle kernel in a cell with widgets
            (jupyter/nbclient#312; seen here three times, once on an idle machine:
            kernel idle, client waiting, no timeout for 10+ minutes); the deadline does,
            and the kernel is shut down.
    Returns the executed ``nbformat`` notebook.

    Raises:
        NotebookTimeout: the run passed ``deadline``.
    """
    # imported here: nbformat's JSON-schema validation stack costs 1.6-3.7 s to import
    # (measured with -X importtime), which every notebook kernel would otherwise pay
    import nbformat
    from jupyter_core.utils import run_sync
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError
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
    run_env = {k: str(v) for k, v in kernel_env.items()}
    client.on_notebook_start = lambda notebook: _poll_in_slices(client.kc)
    if deadline is None:
        client.execute(env=run_env)
    else:
        async def bounded():
            # cancelling async_execute leaves its kernel context: the kernel is shut down
            return await asyncio.wait_for(client.async_execute(env=run_env), deadline)
        start = time.monotonic()
        try:
            run_sync(bounded)()
        except (asyncio.TimeoutError, DeadKernelError):
            # nbclient turns the cancellation of its reply wait into DeadKernelError
            if time.monotonic() - start < deadline:
                raise
            raise NotebookTimeout(f"{path.name}: not finished after {deadline:.0f} s") \
                from None
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
