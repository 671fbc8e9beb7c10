"""Small pictures the app composes from :mod:`hfgd_lab.viz` arrays: captioned tiles,
grids of tiles, colour bars, the query cell, and the HTML legend. numpy/PIL only:
one encoded image per panel is much faster than a matplotlib figure per click.
"""
from __future__ import annotations

import html
from functools import lru_cache
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..viz import heatmap_rgb, to_uint8

__all__ = ["resize_rgb", "caption", "grid", "colorbar", "outline_cell", "legend_html",
           "escape", "cells_overlay", "pixel_rows"]


def escape(text) -> str:
    """Text from a checkpoint card or a file name, safe inside HTML and Markdown tables
    (code spans in backticks are left to Markdown)."""
    return html.escape(str(text)).replace("|", "&#124;")


def resize_rgb(rgb: np.ndarray, max_side: int, nearest: bool = False) -> np.ndarray:
    """Downscale (never upscale) an (H, W, 3) uint8 image to ``max_side``."""
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb
    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(to_uint8(rgb)).resize(size, resample))


@lru_cache(maxsize=256)
def _strip(width: int, text: str, height: int) -> np.ndarray:
    strip = Image.new("RGB", (width, height), (255, 255, 255))
    ImageDraw.Draw(strip).text((3, 2), text, fill=(0, 0, 0))
    return np.asarray(strip)


def caption(rgb: np.ndarray, text: str, height: int = 16) -> np.ndarray:
    """The image with a white strip and ``text`` above it (strips are cached: drawing
    text is the slowest part of a small tile)."""
    rgb = to_uint8(rgb)
    return np.concatenate([_strip(rgb.shape[1], text, height), rgb], 0)


@lru_cache(maxsize=16)
def _lut(cmap: str) -> np.ndarray:
    import matplotlib
    return to_uint8(matplotlib.colormaps[cmap](np.linspace(0, 1, 256))[:, :3])


def pixel_rows(n_out: int, n_in: int, stride: int, n_cells: int) -> np.ndarray:
    """For each of ``n_out`` display pixels along one axis of an ``n_in``-pixel image,
    the stride-``stride`` cell it lies in (sampling at pixel centres)."""
    src = np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(int), n_in - 1)
    return np.minimum(src // stride, n_cells - 1)


def cells_overlay(image: np.ndarray, cells: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                  cmap: str = "inferno", alpha: float = 0.7) -> np.ndarray:
    """Heatmaps of cell grids blended over an image, each scaled to its own min..max.

    Args:
        image: (h, w, 3) uint8, the (display-size) image.
        cells: (..., gh, gw) values, one per grid cell (e.g. attention per token).
        rows, cols: (h,) and (w,) cell index of every display row / column
            (:func:`pixel_rows`).

    Returns:
        (..., h, w, 3) uint8. The colour map is applied to the few cells, not to every
        pixel: many maps cost about as much as one ``heatmap_overlay``.
    """
    v = np.asarray(cells, dtype=np.float32)
    lo = v.min(axis=(-2, -1), keepdims=True)
    span = v.max(axis=(-2, -1), keepdims=True) - lo
    norm = np.where(span > 0, (v - lo) / np.where(span > 0, span, 1), 0.0)
    colours = _lut(cmap)[np.round(norm * 255).astype(np.uint8)]      # (..., gh, gw, 3)
    per_pixel = colours[..., rows[:, None], cols[None, :], :]         # (..., h, w, 3)
    a = int(round(alpha * 256))  # integer blend: (image * (256 - a) + colour * a) / 256
    out = image.astype(np.uint16) * np.uint16(256 - a) + per_pixel.astype(np.uint16) * np.uint16(a)
    return ((out + 128) >> 8).astype(np.uint8)


def grid(tiles: Sequence[Sequence[Optional[np.ndarray]]], gap: int = 4) -> np.ndarray:
    """Rows of (H, W, 3) uint8 tiles (None: empty) on a white background."""
    hs = [max((t.shape[0] for t in row if t is not None), default=0) for row in tiles]
    ncol = max(len(row) for row in tiles)
    ws = [max((row[c].shape[1] for row in tiles if c < len(row) and row[c] is not None),
              default=0) for c in range(ncol)]
    out = np.full((sum(hs) + gap * (len(hs) - 1), sum(ws) + gap * (ncol - 1), 3), 255,
                  np.uint8)
    y = 0
    for r, row in enumerate(tiles):
        x = 0
        for c in range(ncol):
            t = row[c] if c < len(row) else None
            if t is not None:
                out[y:y + t.shape[0], x:x + t.shape[1]] = t
            x += ws[c] + gap
        y += hs[r] + gap
    return out


def colorbar(cmap: str, lo: float, hi: float, label: str = "", width: int = 256,
             height: int = 12) -> np.ndarray:
    """A horizontal colour bar with its range written under it."""
    ramp = np.tile(np.linspace(lo, hi, width), (height, 1))
    bar = heatmap_rgb(ramp, cmap, lo, hi)
    text = Image.new("RGB", (width, 14), (255, 255, 255))
    d = ImageDraw.Draw(text)
    d.text((1, 1), f"{lo:.2g}", fill=(0, 0, 0))
    right = f"{hi:.2g}"
    d.text((width - 7 * len(right) - 1, 1), right, fill=(0, 0, 0))
    if label:
        d.text((width // 2 - 3 * len(label), 1), label, fill=(0, 0, 0))
    return np.concatenate([bar, np.asarray(text)], 0)


def outline_cell(rgb: np.ndarray, row: int, col: int, stride: int,
                 color=(0, 255, 0)) -> np.ndarray:
    """A copy of the image with the stride-``stride`` cell (row, col) outlined."""
    out = to_uint8(rgb).copy()
    h, w = out.shape[:2]
    y0, x0 = row * stride, col * stride
    y1, x1 = min(y0 + stride, h) - 1, min(x0 + stride, w) - 1
    c = np.asarray(color, np.uint8)
    out[y0, x0:x1 + 1] = c
    out[y1, x0:x1 + 1] = c
    out[y0:y1 + 1, x0] = c
    out[y0:y1 + 1, x1] = c
    return out


def legend_html(classes: Sequence[str], palette: np.ndarray, present=()) -> str:
    """Colour swatches of all classes; those present in the prediction come first and
    bold. Names are escaped (they come from checkpoint cards)."""
    present = list(present)
    order = present + [k for k in range(len(classes)) if k not in present]
    items = []
    for k in order:
        r, g, b = (int(v) for v in palette[k])
        weight = "600" if k in present else "400"
        opacity = "1" if k in present else "0.55"
        items.append(
            f'<span class="hfgd-legend-item" style="display:inline-flex;align-items:center;'
            f'margin:2px 10px 2px 0;font-weight:{weight};opacity:{opacity}">'
            f'<span style="display:inline-block;width:14px;height:14px;margin-right:4px;'
            f'border:1px solid #444;background:rgb({r},{g},{b})"></span>'
            f'{escape(classes[k])}</span>')
    return '<div class="hfgd-legend">' + "".join(items) + "</div>"
