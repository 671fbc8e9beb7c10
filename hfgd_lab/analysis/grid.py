"""Alignment between the model's strided grids and the image's pixels.

A map at stride ``s`` cropped to ``ceil(H / s)`` cells covers the pixels
``[i * s, (i + 1) * s)``; every resize here keeps that correspondence, the same way
:func:`hfgd_lab.models.resize_logits` does for logits.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..models import resize_logits

__all__ = ["cells_to_image", "resize_between_strides", "cell_of_pixel", "crop_grid"]


def crop_grid(input_size, stride: int) -> tuple[int, int]:
    """Number of cells ``(ceil(H / s), ceil(W / s))`` that cover an ``(H, W)`` input."""
    h, w = input_size
    return math.ceil(h / stride), math.ceil(w / stride)


def cells_to_image(arr, stride: int, input_size, mode: str = "bilinear") -> np.ndarray:
    """Map a strided grid ``(..., h, w)`` onto the input's ``(..., H, W)`` pixels.

    Args:
        arr: numpy array or tensor whose last two axes are a (cropped or padded) grid at
            ``stride``; ``h * stride >= H`` and ``w * stride >= W``.
        stride: pixels per cell.
        input_size: ``(H, W)`` of the image.
        mode: ``"nearest"`` (each cell painted over its pixels: shows the true
            resolution) or ``"bilinear"`` (aligned like ``resize_logits``).

    Returns:
        float32 numpy array ``(..., H, W)``.
    """
    h, w = input_size
    if isinstance(arr, torch.Tensor):
        arr = arr.detach().float().cpu().numpy()
    arr = np.asarray(arr, dtype=np.float32)
    gh, gw = arr.shape[-2:]
    if gh * stride < h or gw * stride < w:
        raise ValueError(f"a {gh}x{gw} grid at stride {stride} does not cover {h}x{w} pixels")
    if mode == "nearest":
        return np.repeat(np.repeat(arr, stride, -2)[..., :h, :], stride, -1)[..., :w]
    if mode != "bilinear":
        raise ValueError(f"mode must be 'nearest' or 'bilinear', got {mode!r}")
    lead = arr.shape[:-2]
    t = torch.from_numpy(np.ascontiguousarray(arr.reshape(1, -1, gh, gw)))
    # a padded grid is first cropped to the cells that touch the input
    ch, cw = crop_grid(input_size, stride)
    t = t[..., :ch, :cw]
    out = resize_logits(t, (h, w), stride)
    return out.reshape(*lead, h, w).numpy()


def resize_between_strides(x: torch.Tensor, stride_from: int, stride_to: int,
                           out_hw) -> torch.Tensor:
    """Bilinearly resample a ``(B, C, h, w)`` map from one stride onto a finer grid
    of ``out_hw`` cells at ``stride_to``, keeping cells aligned in pixel space."""
    if stride_from % stride_to:
        raise ValueError(f"stride {stride_from} is not a multiple of {stride_to}")
    r = stride_from // stride_to
    full = (x.shape[-2] * r, x.shape[-1] * r)
    y = F.interpolate(x, size=full, mode="bilinear", align_corners=False) if r > 1 else x
    oh, ow = out_hw
    if full[0] < oh or full[1] < ow:
        raise ValueError(f"a {tuple(x.shape[-2:])} grid at stride {stride_from} does not "
                         f"cover {oh}x{ow} cells at stride {stride_to}")
    return y[..., :oh, :ow]


def cell_of_pixel(x: float, y: float, stride: int, input_size) -> tuple[int, int]:
    """``(row, col)`` of the stride-``stride`` cell containing pixel ``(x, y)``
    (x: column, y: row, in the image's pixels; clamped to the image)."""
    h, w = input_size
    xi = int(min(max(math.floor(x), 0), w - 1))
    yi = int(min(max(math.floor(y), 0), h - 1))
    return yi // stride, xi // stride
