"""CAE attention mapped back onto the image: for a clicked pixel, a region, or a class.

The CAE attends over the padded stride-32 grid (``grid_high``, row-major tokens). A
query pixel's token is the stride-32 cell containing it; a map is one row of an
attention matrix, reshaped to the grid, cropped to the cells that touch the image
(``ceil(H/32) x ceil(W/32)``) and upsampled to the image. Everything here indexes the
attention stored in an :class:`ImageAnalysis`, so a click costs milliseconds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from .grid import cell_of_pixel, cells_to_image, crop_grid

__all__ = ["AttentionMaps", "attention_rollout", "rollout_rows", "fuse_heads", "token_index",
           "token_map_to_image", "mask_to_token_weights", "query_attention",
           "attention_at", "region_attention", "class_attention"]

STRIDE = 32


def _as_array(attentions) -> np.ndarray:
    if isinstance(attentions, (list, tuple)):
        attentions = [a.detach().float().cpu().numpy() if isinstance(a, torch.Tensor)
                      else np.asarray(a) for a in attentions]
        attentions = np.stack(attentions)
    elif isinstance(attentions, torch.Tensor):
        attentions = attentions.detach().float().cpu().numpy()
    a = np.asarray(attentions, dtype=np.float64)
    if a.ndim != 4 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"attentions must be (layers, heads, N, N), got {a.shape}")
    return a


def fuse_heads(attentions, head_fusion: str = "mean") -> np.ndarray:
    """(L, heads, N, N) -> (L, N, N) by ``"mean"``, ``"max"`` or ``"min"`` over heads."""
    a = _as_array(attentions)
    if head_fusion == "mean":
        return a.mean(1)
    if head_fusion == "max":
        return a.max(1)
    if head_fusion == "min":
        return a.min(1)
    raise ValueError(f"head_fusion must be 'mean', 'max' or 'min', got {head_fusion!r}")


def attention_rollout(attentions, head_fusion: str = "mean",
                      residual: bool = True) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema 2020) across layers.

    Per layer the heads are fused, the identity is added for the residual connection
    (``A + I``), rows are renormalised, and the layers are multiplied from the first:
    ``R = A_L' ... A_2' A_1'``. Row ``q`` of the (N, N) result is how much output token
    ``q`` draws on each input token.

    Args:
        attentions: (L, heads, N, N) array/tensor, or a list of (heads, N, N).
        head_fusion: ``"mean"`` (the paper), ``"max"`` or ``"min"``.
        residual: add the identity before renormalising.
    """
    fused = fuse_heads(attentions, head_fusion)
    n = fused.shape[-1]
    eye = np.eye(n)
    r = eye
    for a in fused:
        if residual:
            a = a + eye
        a = a / a.sum(-1, keepdims=True)
        r = a @ r
    return r.astype(np.float32)


def rollout_rows(attentions, weights, head_fusion: str = "mean",
                 residual: bool = True) -> np.ndarray:
    """``weights @ attention_rollout(attentions)`` without forming the (N, N) rollout:
    vector-matrix products from the last layer down, O(L N^2) instead of O(L N^3), so a
    click on a 2048-pixel image costs milliseconds, not seconds.

    Args:
        attentions: (L, heads, N, N); weights: (N,) or (Q, N) query weights.
    Returns:
        (N,) or (Q, N) float32 rows of the rollout.
    """
    fused = fuse_heads(attentions, head_fusion)
    v = np.asarray(weights, dtype=np.float64)
    for a in fused[::-1]:        # R = A_L' ... A_1', so w R = ((w A_L') ...) A_1'
        if residual:
            a = a + np.eye(a.shape[-1])
        a = a / a.sum(-1, keepdims=True)
        v = v @ a
    return v.astype(np.float32)


def token_index(x: float, y: float, input_size, grid_high) -> int:
    """Row-major index in the padded stride-32 grid of the token containing pixel (x, y)."""
    r, c = cell_of_pixel(x, y, STRIDE, input_size)
    return r * grid_high[1] + c


def token_map_to_image(values, grid_high, input_size, mode: str = "nearest") -> np.ndarray:
    """(..., N) values over the padded token grid -> (..., H, W) over the image
    (reshaped row-major, cropped to the cells that touch the image, upsampled)."""
    v = np.asarray(values, dtype=np.float32)
    gh, gw = grid_high
    ch, cw = crop_grid(input_size, STRIDE)
    g = v.reshape(*v.shape[:-1], gh, gw)[..., :ch, :cw]
    return cells_to_image(g, STRIDE, input_size, mode)


def mask_to_token_weights(mask, grid_high) -> np.ndarray:
    """(H, W) bool/float mask -> (N,) weights over the padded token grid, proportional
    to the mask's mass in each token's cell and summing to one."""
    m = np.asarray(mask, dtype=np.float64)
    gh, gw = grid_high
    h, w = m.shape
    if h > gh * STRIDE or w > gw * STRIDE:
        raise ValueError(f"mask {m.shape} is larger than the padded grid {grid_high} x 32")
    pad = np.zeros((gh * STRIDE, gw * STRIDE))
    pad[:h, :w] = m
    counts = pad.reshape(gh, STRIDE, gw, STRIDE).sum((1, 3)).ravel()
    total = counts.sum()
    if total <= 0:
        raise ValueError("the query mask is empty")
    return counts / total


@dataclass
class AttentionMaps:
    """Where a query (a pixel, a region or a class) attends, per layer and head.

    Attributes:
        label: what was queried, e.g. ``"pixel (120, 64)"`` or ``"class 3"``.
        query: (x, y) pixel for a point query, else None.
        query_token: (row, col) of the query's token for a point query, else None.
        weights: (N,) the query as a distribution over the padded tokens.
        grid: (L, heads, h, w) attention on the cropped stride-32 grid.
        per_head: (L, heads, H, W) the same over the image.
        head_mean: (L, H, W) average over heads.
        rollout: (H, W) attention rollout across layers (None without attention).
        grid_rollout: (h, w) rollout on the cropped grid.
        padding_mass: (L, heads) attention that went to padding tokens (not drawn).
    """

    label: str
    query: Optional[tuple]
    query_token: Optional[tuple]
    weights: np.ndarray
    grid: np.ndarray
    per_head: np.ndarray
    head_mean: np.ndarray
    rollout: np.ndarray
    grid_rollout: np.ndarray
    padding_mass: np.ndarray

    @property
    def num_layers(self) -> int:
        return int(self.grid.shape[0])

    @property
    def num_heads(self) -> int:
        return int(self.grid.shape[1])


def query_attention(attentions, weights, grid_high, input_size, rollout=None,
                    mode: str = "nearest", label: str = "query", query=None,
                    query_token=None) -> AttentionMaps:
    """Attention of a query distribution ``weights`` (N,) over tokens, per layer and
    head, head-averaged and rolled out, mapped onto the image.

    Args:
        attentions: (L, heads, N, N) array (rows: queries).
        weights: (N,) non-negative query weights (a one-hot vector for one token).
        grid_high: padded token grid (gh, gw); input_size: (H, W).
        rollout: a precomputed (N, N) rollout matrix; None: the query's rollout row is
            computed directly (:func:`rollout_rows`).
        mode: upsampling, ``"nearest"`` (token cells) or ``"bilinear"``.
    """
    a = attentions if isinstance(attentions, np.ndarray) else _as_array(attentions)
    w = np.asarray(weights, dtype=np.float64)
    nz = np.flatnonzero(w)
    if len(nz) == 1:  # one token: a row lookup
        rows = a[:, :, nz[0], :] * w[nz[0]]
    else:
        rows = np.einsum("n,lhnm->lhm", w[nz], a[:, :, nz, :])
    rows = rows.astype(np.float32)
    if rollout is None:
        roll = rollout_rows(a, w)
    else:
        roll = (w[nz] @ rollout[nz]).astype(np.float32)
    gh, gw = grid_high
    ch, cw = crop_grid(input_size, STRIDE)
    grid = rows.reshape(*rows.shape[:2], gh, gw)[..., :ch, :cw]
    padding = rows.sum(-1) - grid.sum((-2, -1))
    per_head = cells_to_image(grid, STRIDE, input_size, mode)
    groll = roll.reshape(gh, gw)[:ch, :cw]
    return AttentionMaps(label=label, query=query, query_token=query_token, weights=w,
                         grid=grid, per_head=per_head, head_mean=per_head.mean(1),
                         rollout=cells_to_image(groll, STRIDE, input_size, mode),
                         grid_rollout=groll, padding_mass=padding)


def attention_at(analysis, x: float, y: float, mode: str = "nearest") -> AttentionMaps:
    """Where the token under pixel (x, y) (in the analysed image's pixels) attends."""
    analysis.require_attention()
    r, c = cell_of_pixel(x, y, STRIDE, analysis.input_size)
    n = analysis.grid_high[0] * analysis.grid_high[1]
    w = np.zeros(n)
    w[r * analysis.grid_high[1] + c] = 1.0
    return query_attention(analysis.attentions, w, analysis.grid_high, analysis.input_size,
                           None, mode, label=f"pixel ({x:.0f}, {y:.0f})",
                           query=(float(x), float(y)), query_token=(r, c))


def region_attention(analysis, mask, mode: str = "nearest",
                     label: str = "region") -> AttentionMaps:
    """Mean attention of all pixels in an (H, W) mask (each token weighted by how many
    of its pixels are in the mask)."""
    analysis.require_attention()
    w = mask_to_token_weights(mask, analysis.grid_high)
    return query_attention(analysis.attentions, w, analysis.grid_high, analysis.input_size,
                           None, mode, label=label)


def class_attention(analysis, k: int, branch: str = "up", mode: str = "nearest",
                    class_name: Optional[str] = None) -> AttentionMaps:
    """Class-conditioned query: the mean attention of all pixels predicted as ``k`` by
    ``branch`` (``"up"``: the model's answer, or ``"high"``). Raises ValueError when no
    pixel is predicted as ``k``."""
    pred = analysis.pred if branch == "up" else analysis.pred_high
    if branch not in ("up", "high") or pred is None:
        raise ValueError(f"branch must be 'up' or 'high' (with an HFG branch), got {branch!r}")
    mask = pred == k
    if not mask.any():
        raise ValueError(f"no pixel is predicted as class {k} by the {branch!r} branch")
    return region_attention(analysis, mask, mode, label=f"class {class_name or k}")
