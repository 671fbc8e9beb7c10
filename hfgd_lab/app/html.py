"""HTML pieces of the page: legends, colour bars and grids of captioned tiles.

Text that must stay readable -- tile titles, legend entries, colour-bar ends -- is
page text here, not pixels in a picture: it wraps on a phone instead of shrinking with
the picture, and nothing Gradio draws over a picture (its label, its toolbar) can cover
it. Pictures inside are JPEG data URIs (a few kB each). Every name is escaped (class
names come from checkpoint cards).
"""
from __future__ import annotations

import base64
import html
import io
from typing import Sequence

import numpy as np
from PIL import Image

from ..viz import tiles
from .handlers import escape

__all__ = ["data_uri", "legend_html", "class_legend_html", "colorbar_html", "tiles_html",
           "status_html", "CSS"]


def data_uri(rgb: np.ndarray, quality: int = 90) -> str:
    """An (H, W, 3) uint8 picture as a ``data:image/jpeg;base64,...`` URI."""
    b = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(b, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(b.getvalue()).decode("ascii")


def _swatch(rgb) -> str:
    r, g, b = (int(v) for v in rgb)
    return (f'<span class="hfgd-swatch" style="background:rgb({r},{g},{b})"></span>')


def legend_html(items: Sequence[tuple], elem_class: str = "hfgd-legend",
                muted: Sequence[int] = ()) -> str:
    """Colour swatches with names, ``items`` = [(rgb, text), ...]; entries whose index is
    in ``muted`` are drawn lighter (e.g. classes absent from a prediction)."""
    parts = []
    for i, (rgb, text) in enumerate(items):
        cls = "hfgd-legend-item" + (" hfgd-muted" if i in muted else "")
        parts.append(f'<span class="{cls}">{_swatch(rgb)}{escape(text)}</span>')
    return f'<div class="{elem_class}">' + "".join(parts) + "</div>"


def class_legend_html(classes: Sequence[str], palette: np.ndarray, present=()) -> str:
    """Every class with its colour: those in the prediction first (largest area first),
    the others after them, lighter."""
    present = [int(k) for k in present]
    order = present + [k for k in range(len(classes)) if k not in present]
    items = [(palette[k], classes[k]) for k in order]
    return legend_html(items, muted=range(len(present), len(order)))


def colorbar_html(cmap: str, lo: float, hi: float, label: str = "") -> str:
    """A horizontal colour bar (CSS gradient through 11 samples of ``cmap``) with its two
    ends, its middle and ``label`` written under it as text."""
    lut = tiles.lut(cmap)
    stops = ", ".join(f"rgb({r},{g},{b}) {100 * i / 10:.0f}%"
                      for i, (r, g, b) in enumerate(lut[np.linspace(0, 255, 11).astype(int)]))
    mid = (lo + hi) / 2
    return (f'<div class="hfgd-colorbar"><div class="hfgd-colorbar-ramp" '
            f'style="background:linear-gradient(to right, {stops})"></div>'
            f'<div class="hfgd-colorbar-ticks"><span>{lo:.2g}</span><span>{mid:.2g}</span>'
            f'<span>{hi:.2g}</span></div>'
            + (f'<div class="hfgd-colorbar-label">{escape(label)}</div>' if label else "")
            + "</div>")


def tiles_html(rows: Sequence[Sequence[tuple]], row_titles: Sequence[str] = ()) -> str:
    """Rows of (title, (H, W, 3) picture) as a responsive grid of figures, each title a
    caption under its picture; a row title (e.g. "Layer 1") heads each row."""
    out = ['<div class="hfgd-tiles">']
    for r, row in enumerate(rows):
        if r < len(row_titles) and row_titles[r]:
            out.append(f'<div class="hfgd-tiles-row-title">{escape(row_titles[r])}</div>')
        out.append('<div class="hfgd-tiles-row">')
        for title, rgb in row:
            out.append(f'<figure class="hfgd-tile"><img src="{data_uri(rgb)}" '
                       f'alt="{html.escape(str(title))}"><figcaption>{escape(title)}</figcaption>'
                       "</figure>")
        out.append("</div>")
    out.append("</div>")
    return "".join(out)


def status_html(message: str) -> str:
    """The message shown when an input could not be used (the views keep the last good
    result)."""
    return (f'<div class="hfgd-status" role="alert">⚠️ {escape(message)} <span '
            'class="hfgd-status-note">The views below still show the last good result.'
            "</span></div>")


CSS = """
.hfgd-banner {border-left: 4px solid #f59e0b; padding-left: 10px;}
.hfgd-status {border: 1px solid #dc2626; background: #fef2f2; color: #7f1d1d;
  border-radius: 6px; padding: 8px 12px; font-size: 15px;}
.hfgd-status-note {color: #57534e;}
.hfgd-title p, .hfgd-title {margin: 4px 0 2px 0 !important; font-weight: 600;}
.hfgd-legend, .hfgd-legend-outcome {display: flex; flex-wrap: wrap; gap: 4px 14px;
  font-size: 14px; line-height: 1.4;}
.hfgd-legend-item {display: inline-flex; align-items: center;}
.hfgd-muted {opacity: 0.55;}
.hfgd-swatch {display: inline-block; width: 14px; height: 14px; margin-right: 5px;
  border: 1px solid #444; flex: none;}
.hfgd-colorbar {max-width: 360px; font-size: 13px;}
.hfgd-colorbar-ramp {height: 14px; border: 1px solid #888;}
.hfgd-colorbar-ticks {display: flex; justify-content: space-between;}
.hfgd-colorbar-label {text-align: center;}
.hfgd-tiles-row-title {font-weight: 600; margin: 6px 0 2px 0;}
.hfgd-tiles-row {display: grid; gap: 8px;
  grid-template-columns: repeat(auto-fill, minmax(128px, 1fr));}
.hfgd-tile {margin: 0; min-width: 0;}
.hfgd-tile img {width: 100%; height: auto; display: block;}
.hfgd-tile figcaption {font-size: 13px; line-height: 1.3; margin-top: 2px;
  overflow-wrap: anywhere;}
#attention-image img {cursor: crosshair;}
#examples, #examples .gallery-container, #examples .grid-wrap {height: auto !important;
  max-height: none !important; min-height: 0 !important;}
#examples .grid-wrap {overflow: visible !important;}
#examples .grid-container {grid-template-columns: repeat(auto-fill, minmax(96px, 1fr))
  !important;}
#examples .gallery-item, #examples .thumbnail-item {width: 100% !important;
  height: auto !important; aspect-ratio: 1 / 1;}
#examples .caption-label {white-space: normal; max-width: 100%; text-overflow: clip;
  overflow-wrap: anywhere; text-align: right;}
"""
