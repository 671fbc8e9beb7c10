"""Plain-array drawing helpers: label maps and heatmaps to uint8 RGB.

No figures here, so a Gradio app can use them directly: everything takes numpy
arrays and returns an (H, W, 3) uint8 array.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..data.classes import default_palette  # (n, 3) uint8: VOC's colours without black

__all__ = ["default_palette", "as_palette", "colorize", "blend", "overlay", "heatmap_rgb",
           "heatmap_overlay", "to_uint8", "mark_point", "normalize_map"]




def as_palette(palette, k: int = 0) -> np.ndarray:
    """A (K, 3) uint8 palette from uint8 or float [0, 1] colours (None: the default
    palette of ``k`` colours); fails if it has fewer than ``k`` colours."""
    if palette is None:
        return default_palette(k)
    pal = np.asarray(palette)
    if pal.ndim != 2 or pal.shape[1] != 3:
        raise ValueError(f"palette must be (K, 3), got {pal.shape}")
    if pal.dtype != np.uint8:
        scale = 255.0 if np.issubdtype(pal.dtype, np.floating) and pal.max() <= 1.0 else 1.0
        pal = np.clip(np.round(pal * scale), 0, 255).astype(np.uint8)
    if len(pal) < k:
        raise ValueError(f"palette has {len(pal)} colours, the mask has labels up to {k - 1}")
    return pal


def to_uint8(rgb) -> np.ndarray:
    """Float RGB in [0, 1] (or any uint8) -> uint8."""
    a = np.asarray(rgb)
    if a.dtype == np.uint8:
        return a
    return np.clip(np.round(a * 255.0), 0, 255).astype(np.uint8)


def colorize(mask, palette=None, ignore_index: int = 255,
             ignore_color=(0, 0, 0)) -> np.ndarray:
    """(H, W) integer labels -> (H, W, 3) uint8 colours; ``ignore_index`` (and any label
    outside the palette) gets ``ignore_color``."""
    m = np.asarray(mask).astype(np.int64)
    valid = (m >= 0) & (m != ignore_index)
    if palette is None:
        pal = default_palette(int(m[valid].max()) + 1 if valid.any() else 1)
    else:
        pal = as_palette(palette, 0)
        valid &= m < len(pal)
    # one table lookup (the palette plus the ignore colour last): no boolean scatter
    lut = np.concatenate([pal, np.asarray(ignore_color, np.uint8).reshape(1, 3)])
    return lut[np.where(valid, m, len(pal))]


def blend(image, rgb, alpha: float = 0.5, where=None) -> np.ndarray:
    """``(1 - alpha) * image + alpha * rgb`` as uint8 (only where ``where`` is True)."""
    img = to_uint8(image).astype(np.float32)
    col = to_uint8(rgb).astype(np.float32)
    if img.shape != col.shape:
        raise ValueError(f"image {img.shape} and colours {col.shape} differ in shape")
    out = (1 - alpha) * img + alpha * col
    if where is not None:
        w = np.asarray(where, bool)[..., None]
        out = np.where(w, out, img)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def overlay(image, mask, palette=None, alpha: float = 0.5,
            ignore_index: int = 255) -> np.ndarray:
    """Label map drawn over the image (H, W, 3) uint8; ignored pixels show the image."""
    m = np.asarray(mask)
    if m.shape != np.asarray(image).shape[:2]:
        raise ValueError(f"mask {m.shape} does not match the image {np.asarray(image).shape[:2]}")
    return blend(image, colorize(m, palette, ignore_index), alpha, where=m != ignore_index)


def normalize_map(values, vmin: Optional[float] = None,
                  vmax: Optional[float] = None) -> np.ndarray:
    """Scale to [0, 1] with ``vmin``/``vmax`` (default: the finite min and max)."""
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    lo = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    if hi <= lo:
        return np.zeros_like(v)
    return np.clip((v - lo) / (hi - lo), 0, 1)


def heatmap_rgb(values, cmap: str = "viridis", vmin: Optional[float] = None,
                vmax: Optional[float] = None) -> np.ndarray:
    """(H, W) values -> (H, W, 3) uint8 through a matplotlib colormap (NaN: black)."""
    import matplotlib

    v = np.asarray(values, dtype=np.float64)
    rgba = matplotlib.colormaps[cmap](normalize_map(v, vmin, vmax))
    rgb = to_uint8(rgba[..., :3])
    rgb[~np.isfinite(v)] = 0
    return rgb


def heatmap_overlay(image, values, cmap: str = "inferno", alpha: float = 0.6,
                    vmin: Optional[float] = None, vmax: Optional[float] = None) -> np.ndarray:
    """A heatmap blended over the image, (H, W, 3) uint8."""
    return blend(image, heatmap_rgb(values, cmap, vmin, vmax), alpha)


def mark_point(rgb, x: float, y: float, color=(0, 255, 0), radius: int = 5) -> np.ndarray:
    """A copy of an (H, W, 3) uint8 image with a cross at pixel (x, y)."""
    out = to_uint8(rgb).copy()
    h, w = out.shape[:2]
    xi, yi = int(round(x)), int(round(y))
    c = np.asarray(color, np.uint8)
    for d in range(-radius, radius + 1):
        for t in (-1, 0, 1):
            if 0 <= yi + t < h and 0 <= xi + d < w:
                out[yi + t, xi + d] = c
            if 0 <= yi + d < h and 0 <= xi + t < w:
                out[yi + d, xi + t] = c
    return out
