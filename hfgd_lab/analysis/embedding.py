"""Pixel features and class tokens in 2D (PCA or t-SNE), deterministic."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

__all__ = ["Embedding", "embed", "pixel_embedding", "grid_labels"]


@dataclass
class Embedding:
    """2D coordinates of pixel features (and the class tokens, embedded with them).

    Attributes:
        points: (n, 2) one row per sampled pixel feature.
        labels: (n,) int class of each pixel (ground truth if given, else prediction;
            ``ignore_index`` where unlabelled).
        source: (n,) str, which feature set each point came from (e.g. "high", "up").
        token_points: (K, 2) the class tokens, or None.
        method: ``"pca"`` or ``"tsne"``.
        index: (n,) flat index of each pixel in its own grid.
    """

    points: np.ndarray
    labels: np.ndarray
    source: np.ndarray
    token_points: Optional[np.ndarray]
    method: str
    index: np.ndarray


def _np(a) -> np.ndarray:
    return a.detach().float().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def embed(features, tokens=None, labels=None, source=None, method: str = "pca",
          normalize: bool = True, random_state: int = 0, perplexity: float = 30.0,
          index=None) -> Embedding:
    """Embed (n, D) features and optional (K, D) tokens jointly in 2D.

    Args:
        features: (n, D) rows. tokens: (K, D) class tokens or None.
        labels, source, index: per-row metadata carried into the result.
        method: ``"pca"`` (linear, fast) or ``"tsne"`` (sklearn, slower: subsample).
        normalize: L2-normalise every vector first, so that direction (what a cosine
            or dot classifier compares) rather than norm decides the layout and tokens
            sit on the features' scale.
        random_state: seed of the solver.
        perplexity: t-SNE perplexity (clipped below the number of points).
    """
    x = _np(features).astype(np.float64)
    n = len(x)
    t = None if tokens is None else _np(tokens).astype(np.float64)
    allx = x if t is None else np.concatenate([x, t])
    if normalize:
        allx = allx / np.maximum(np.linalg.norm(allx, axis=1, keepdims=True), 1e-12)
    if method == "pca":
        from sklearn.decomposition import PCA
        pts = PCA(n_components=2, random_state=random_state).fit_transform(allx)
    elif method == "tsne":
        from sklearn.manifold import TSNE
        perp = float(min(perplexity, max(1.0, (len(allx) - 1) / 3)))
        pts = TSNE(n_components=2, perplexity=perp, init="pca", random_state=random_state,
                   learning_rate="auto").fit_transform(allx)
    else:
        raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")
    pts = pts.astype(np.float32)
    return Embedding(
        points=pts[:n], token_points=None if t is None else pts[n:],
        labels=np.full(n, -1, np.int64) if labels is None else np.asarray(labels, np.int64),
        source=np.full(n, "features") if source is None else np.asarray(source),
        method=method, index=np.arange(n) if index is None else np.asarray(index))


def grid_labels(labels: np.ndarray, stride: int, grid) -> np.ndarray:
    """Label of each cell of a stride-``stride`` grid: the label at the centre pixel of
    the cell's part of the image. (H, W) -> grid."""
    h, w = labels.shape

    def centres(n, size):
        start = np.arange(n) * stride
        end = np.minimum(start + stride, size)
        return np.clip((start + end - 1) // 2, 0, size - 1)

    return labels[centres(grid[0], h)][:, centres(grid[1], w)]


def pixel_embedding(analysis, branches: Sequence[str] = ("high", "up"), method: str = "pca",
                    max_pixels: Optional[int] = None, use_target: bool = True, tokens: bool = True,
                    normalize: bool = True, random_state: int = 0,
                    perplexity: float = 30.0) -> Embedding:
    """Pixel features of the chosen branches and the class tokens in one 2D embedding.

    Each branch contributes at most ``max_pixels`` cells of its own grid (a
    deterministic subsample; default 2000 for PCA and 300 for t-SNE, whose cost grows
    quickly: ~1000 points take tens of seconds on one core). Points are labelled by
    the ground truth at the cell centre when the analysis has a target (and
    ``use_target``), else by that branch's own prediction.
    """
    if max_pixels is None:
        max_pixels = 300 if method == "tsne" else 2000
    rng = np.random.default_rng(random_state)
    feats, labels, source, index = [], [], [], []
    for b in branches:
        if b == "high":
            analysis.require_high("embedding F_high")
            f, stride, logits = analysis.feat_high, 32, analysis.logits_high
        elif b == "up":
            f, stride, logits = analysis.feat_up, analysis.output_stride, analysis.logits
        else:
            raise ValueError(f"branches must be 'high' and/or 'up', got {b!r}")
        grid = tuple(f.shape[-2:])
        rows = _np(f).reshape(f.shape[0], -1).T
        if use_target and analysis.target is not None:
            lab = grid_labels(analysis.target, stride, grid).ravel()
        else:
            lab = logits.argmax(0).numpy().ravel()
        idx = np.arange(len(rows))
        if len(idx) > max_pixels:
            idx = np.sort(rng.choice(len(idx), max_pixels, replace=False))
        feats.append(rows[idx])
        labels.append(lab[idx])
        source.append(np.full(len(idx), b))
        index.append(idx)
    return embed(np.concatenate(feats), analysis.class_tokens if tokens else None,
                 np.concatenate(labels), np.concatenate(source), method, normalize,
                 random_state, perplexity, np.concatenate(index))
