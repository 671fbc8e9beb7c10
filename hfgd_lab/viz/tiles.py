"""Small pictures composed from arrays, for a UI that sends one encoded image per panel:
captioned tiles, grids of tiles, colour bars, legends, nearest-neighbour upscaling,
the query cell, and heatmaps of stride-32 cells over an image.

numpy/PIL only (no figures): a 512 px panel costs milliseconds, where a matplotlib
figure per click would cost a tenth of a second. Text is drawn with DejaVu Sans (the
font matplotlib ships) at a size given in pixels of the picture, so a caption keeps a
known height however many tiles a panel holds; a caption that does not fit its tile
wraps onto more lines instead of being cut.

Every function takes and returns (H, W, 3) uint8 RGB unless it says otherwise.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional, Sequence

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .colors import heatmap_rgb, to_uint8

__all__ = ["font", "text_width", "wrap_text", "resize_rgb", "display_scale", "upscale",
           "caption", "grid", "colorbar", "legend_strip", "outline_cell", "pixel_rows",
           "cells_overlay", "lut"]

WHITE = (255, 255, 255)
BLACK = (0, 0, 0)


@functools.lru_cache(maxsize=16)
def font(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (shipped with matplotlib) at ``size`` pixels; Pillow's own scalable
    default font when that file is missing."""
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    try:
        return ImageFont.truetype(str(path), size)
    except OSError:
        return ImageFont.load_default(size=size)


def text_width(text: str, size: int) -> int:
    """Width in pixels of ``text`` drawn at ``size``."""
    return int(np.ceil(font(size).getlength(text)))


def wrap_text(text: str, width: int, size: int) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width`` pixels (a single
    word wider than that is broken between characters): nothing is ever cut off."""
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if text_width(trial, size) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
        while text_width(line, size) > width and len(line) > 1:
            cut = len(line) - 1
            while cut > 1 and text_width(line[:cut], size) > width:
                cut -= 1
            lines.append(line[:cut])
            line = line[cut:]
    if line or not lines:
        lines.append(line)
    return lines


def resize_rgb(rgb: np.ndarray, max_side: int, nearest: bool = False) -> np.ndarray:
    """Downscale (never upscale) an image so its longer side is at most ``max_side``."""
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb
    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(to_uint8(rgb)).resize(size, resample))


def display_scale(size: Sequence[int], target: int = 448, max_factor: int = 8) -> int:
    """The integer factor (1..``max_factor``) that brings an image of ``size`` = (H, W)
    closest to ``target`` pixels on its longer side without passing it: 2 for a 192 px
    scene, 6 for a 61 x 68 upload, 1 for anything of ``target / 2`` pixels or more."""
    longest = max(int(size[0]), int(size[1]), 1)
    return int(min(max_factor, max(1, target // longest)))


def upscale(rgb: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling by an integer ``factor``: pixel (x, y) of the input
    becomes the ``factor`` x ``factor`` block at (x * factor, y * factor), so a point in
    the upscaled picture maps back by integer division."""
    if factor == 1:
        return rgb
    return np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)


@functools.lru_cache(maxsize=512)
def _text_block(width: int, text: str, size: int, pad: int) -> np.ndarray:
    lines = wrap_text(text, width - 2 * pad, size)
    f = font(size)
    ascent, descent = f.getmetrics()
    line_h = ascent + descent
    block = Image.new("RGB", (width, 2 * pad + line_h * len(lines)), WHITE)
    d = ImageDraw.Draw(block)
    for i, line in enumerate(lines):
        d.text((pad, pad + i * line_h), line, fill=BLACK, font=f)
    return np.asarray(block)


def caption(rgb: np.ndarray, text: str, size: int = 14, pad: int = 3) -> np.ndarray:
    """The image with ``text`` on a white band above it, wrapped to the image's width
    (drawn text is cached: it is the slowest part of a small tile)."""
    rgb = to_uint8(rgb)
    return np.concatenate([_text_block(rgb.shape[1], text, size, pad), rgb], 0)


def grid(tiles: Sequence[Sequence[Optional[np.ndarray]]], gap: int = 6) -> np.ndarray:
    """Rows of tiles (None: empty) on a white background; each row as tall as its
    tallest tile, each column as wide as its widest."""
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
             height: int = 14, size: int = 13) -> np.ndarray:
    """A horizontal colour bar from ``lo`` to ``hi`` with both ends and ``label`` written
    under it (the label between the ends, wrapped below them when it does not fit)."""
    ramp = np.tile(np.linspace(lo, hi, max(width, 2)), (height, 1))
    bar = heatmap_rgb(ramp, cmap, lo, hi)
    left, right = f"{lo:.2g}", f"{hi:.2g}"
    f = font(size)
    ascent, descent = f.getmetrics()
    line_h = ascent + descent
    room = width - text_width(left, size) - text_width(right, size) - 16
    inline = bool(label) and text_width(label, size) <= room
    extra = [] if inline or not label else wrap_text(label, width - 4, size)
    text = Image.new("RGB", (width, 4 + line_h * (1 + len(extra))), WHITE)
    d = ImageDraw.Draw(text)
    d.text((1, 2), left, fill=BLACK, font=f)
    d.text((width - text_width(right, size) - 1, 2), right, fill=BLACK, font=f)
    if inline:
        d.text(((width - text_width(label, size)) // 2, 2), label, fill=BLACK, font=f)
    for i, line in enumerate(extra):
        d.text((2, 2 + line_h * (i + 1)), line, fill=BLACK, font=f)
    return np.concatenate([bar, np.asarray(text)], 0)


def legend_strip(items: Sequence[tuple], width: int, size: int = 13,
                 swatch: Optional[int] = None) -> np.ndarray:
    """Colour swatches with their names, ``items`` = [(rgb, text), ...], laid out left to
    right and wrapped onto as many rows as ``width`` needs (nothing cut)."""
    f = font(size)
    ascent, descent = f.getmetrics()
    line_h = ascent + descent + 4
    sw = swatch or ascent
    rows, row, x = [], [], 2
    for rgb, text in items:
        w = sw + 4 + text_width(str(text), size) + 12
        if row and x + w > width:
            rows.append(row)
            row, x = [], 2
        row.append((x, rgb, str(text)))
        x += w
    if row:
        rows.append(row)
    img = Image.new("RGB", (width, max(1, len(rows)) * line_h + 4), WHITE)
    d = ImageDraw.Draw(img)
    for r, row in enumerate(rows):
        y = 2 + r * line_h
        for x, rgb, text in row:
            top = y + (line_h - 4 - sw) // 2
            d.rectangle([x, top, x + sw, top + sw], fill=tuple(int(v) for v in rgb),
                        outline=(60, 60, 60))
            d.text((x + sw + 4, y), text, fill=BLACK, font=f)
    return np.asarray(img)


def outline_cell(rgb: np.ndarray, row: int, col: int, stride: int,
                 color=(0, 255, 0), thickness: int = 1) -> np.ndarray:
    """A copy of the image with the ``stride``-pixel cell (``row``, ``col``) outlined
    (``thickness`` pixels, inside the cell)."""
    out = to_uint8(rgb).copy()
    h, w = out.shape[:2]
    y0, x0 = row * stride, col * stride
    y1, x1 = min(y0 + stride, h), min(x0 + stride, w)
    t = max(1, int(thickness))
    c = np.asarray(color, np.uint8)
    out[y0:min(y0 + t, y1), x0:x1] = c
    out[max(y1 - t, y0):y1, x0:x1] = c
    out[y0:y1, x0:min(x0 + t, x1)] = c
    out[y0:y1, max(x1 - t, x0):x1] = c
    return out


@functools.lru_cache(maxsize=16)
def lut(cmap: str) -> np.ndarray:
    """(256, 3) uint8 colours of a matplotlib colour map."""
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
    colours = lut(cmap)[np.round(norm * 255).astype(np.uint8)]       # (..., gh, gw, 3)
    per_pixel = colours[..., rows[:, None], cols[None, :], :]          # (..., h, w, 3)
    a = int(round(alpha * 256))  # integer blend: (image * (256 - a) + colour * a) / 256
    out = image.astype(np.uint16) * np.uint16(256 - a) + per_pixel.astype(np.uint16) * np.uint16(a)
    return ((out + 128) >> 8).astype(np.uint8)
