"""A class legend as a picture: colour swatches with class names, for files on disk
(``hfgd-lab predict`` writes one beside its masks and overlays).

Drawn with PIL (no figure machinery): numpy in, (H, W, 3) uint8 out.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .colors import as_palette

__all__ = ["legend_image"]


def legend_image(names: Sequence[str], palette, notes: Optional[Sequence[str]] = None,
                 order: Optional[Sequence[int]] = None, title: Optional[str] = None,
                 max_rows: int = 25, font_size: int = 14) -> np.ndarray:
    """Colour swatch + class name per row, in columns of at most ``max_rows`` rows.

    Args:
        names: K class names. palette: (K, 3) colours (uint8, or floats in [0, 1]).
        notes: optional K strings shown after the names (e.g. ``"12.5%"``).
        order: which classes, in which order (default: all, by index).
        title: an optional first line.
        max_rows: rows per column before a new column starts.
        font_size: text height in pixels (PIL's bundled font).

    Returns:
        (H, W, 3) uint8 image, white background.

    Raises:
        ValueError: the palette has fewer colours than there are names.
    """
    k = len(names)
    pal = as_palette(palette, k)
    order = list(range(k)) if order is None else [int(i) for i in order]
    font = ImageFont.load_default(size=font_size)
    pad, sw = 8, font_size + 4                      # margin, swatch side
    row_h = sw + 6
    labels = [str(names[i]) + (f"  {notes[i]}" if notes is not None and notes[i] else "")
              for i in order]
    rows = max(1, min(max_rows, len(labels)))
    cols = max(1, -(-len(labels) // rows))
    text_w = [int(np.ceil(font.getlength(t))) for t in labels] or [0]
    col_w = [sw + 8 + max(text_w[c * rows:(c + 1) * rows] or [0]) + 2 * pad
             for c in range(cols)]
    title_h = row_h if title else 0
    width = max(sum(col_w) + pad, int(np.ceil(font.getlength(title))) + 2 * pad if title else 0)
    height = title_h + rows * row_h + 2 * pad
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((pad, pad), title, fill=(0, 0, 0), font=font)
    for n, (i, text) in enumerate(zip(order, labels)):
        c, r = divmod(n, rows)
        x = pad + sum(col_w[:c])
        y = pad + title_h + r * row_h
        draw.rectangle([x, y, x + sw, y + sw], fill=tuple(int(v) for v in pal[i]),
                       outline=(60, 60, 60))
        draw.text((x + sw + 8, y + (sw - font_size) // 2 - 1), text, fill=(0, 0, 0),
                  font=font)
    return np.asarray(img)
