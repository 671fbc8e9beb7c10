"""Class-token similarity: how much each pixel feature looks like each class token E_k.

Both branches are classified by the same tokens, so the same question asked of F_high
and F_up shows what the upsampler inherited from the high-level features.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..models.classifier import classify
from .grid import cells_to_image

__all__ = ["ClassSimilarity", "class_similarity", "token_similarity", "feature_similarity"]

MODES = ("cosine", "dot")


@dataclass
class ClassSimilarity:
    """Per-class similarity maps of both branches.

    Attributes:
        classes: the class indices, in the order of the first axis of the maps.
        high: (k, H, W) (or the stride-32 grid with ``size="grid"``) for F_high; None
            without an HFG branch.
        up: (k, H, W) (or the upsampler's grid) for F_up.
        mode: ``"cosine"`` (in [-1, 1]) or ``"dot"`` (the raw logit of a dot classifier).
        size: ``"image"`` or ``"grid"``.
    """

    classes: list
    high: Optional[np.ndarray]
    up: np.ndarray
    mode: str
    size: str

    def of(self, k: int) -> tuple[Optional[np.ndarray], np.ndarray]:
        """(high, up) maps of class ``k``."""
        i = self.classes.index(k)
        return (None if self.high is None else self.high[i]), self.up[i]


def feature_similarity(feat: torch.Tensor, tokens: torch.Tensor,
                       mode: str = "cosine") -> torch.Tensor:
    """(D, h, w) or (B, D, h, w) features x (K, D) tokens -> (..., K, h, w) similarity.

    ``"dot"`` is exactly ``classify(feat, tokens, "dot")``; ``"cosine"`` normalises both.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    squeeze = feat.dim() == 3
    f = feat[None] if squeeze else feat
    out = classify(f.float(), tokens.float(), "cosine" if mode == "cosine" else "dot")
    return out[0] if squeeze else out


def class_similarity(analysis, classes=None, mode: str = "cosine",
                     size: str = "image") -> ClassSimilarity:
    """Similarity of every pixel feature of F_high and F_up to the class tokens.

    Args:
        analysis: an :class:`ImageAnalysis`.
        classes: an index, a list of indices, or None for all K (memory grows as
            K x H x W: pass the classes a view shows).
        mode: ``"cosine"`` (default) or ``"dot"`` (= the logit of a dot classifier).
        size: ``"image"`` (bilinear, aligned like ``resize_logits``) or ``"grid"``
            (each branch on its own grid).
    """
    if size not in ("image", "grid"):
        raise ValueError(f"size must be 'image' or 'grid', got {size!r}")
    if classes is None:
        classes = list(range(analysis.num_classes))
    elif isinstance(classes, (int, np.integer)):
        classes = [int(classes)]
    classes = [int(k) for k in classes]
    bad = [k for k in classes if not 0 <= k < analysis.num_classes]
    if bad:
        raise IndexError(f"class indices {bad} out of range 0..{analysis.num_classes - 1}")
    tokens = analysis.class_tokens[classes]

    def maps(feat, stride):
        s = feature_similarity(feat, tokens, mode)
        if size == "grid":
            return s.numpy().astype(np.float32)
        return cells_to_image(s, stride, analysis.input_size, "bilinear")

    high = maps(analysis.feat_high, 32) if analysis.has_high else None
    up = maps(analysis.feat_up, analysis.output_stride)
    return ClassSimilarity(classes=classes, high=high, up=up, mode=mode, size=size)


def token_similarity(tokens) -> np.ndarray:
    """(K, K) cosine similarity between class tokens (a tensor or array (K, D))."""
    t = torch.as_tensor(tokens).detach().float()
    t = F.normalize(t, dim=1)
    return (t @ t.T).numpy()
