"""Per-class IoU and the confusion matrix, as arrays for the figures.

Counting is :class:`hfgd_lab.metrics.SegMetrics` (one confusion matrix, rows = ground
truth, columns = prediction, ``ignore_index`` not counted); this module only reshapes
its result into arrays.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..metrics import SegMetrics

__all__ = ["SegScores", "segmentation_scores", "scores_from_confusion", "normalize_confusion"]


@dataclass
class SegScores:
    """Attributes: confusion (K, K) int64 (rows: truth, cols: prediction); IoU and Acc
    (K,) float64 percent, NaN where undefined; mIoU, mAcc, aAcc percent."""

    confusion: np.ndarray
    IoU: np.ndarray
    Acc: np.ndarray
    mIoU: float
    mAcc: float
    aAcc: float


def _metrics(num_classes: int, ignore_index: int) -> SegMetrics:
    return SegMetrics(num_classes, ignore_index=ignore_index)


def scores_from_confusion(confusion) -> SegScores:
    """IoU / Acc / means (percent) from a (K, K) confusion matrix."""
    conf = np.asarray(confusion, dtype=np.int64)
    c = conf.astype(np.float64)
    tp, gt, pr = np.diag(c), c.sum(1), c.sum(0)
    union = gt + pr - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan) * 100
        acc = np.where(gt > 0, tp / gt, np.nan) * 100
    total = c.sum()

    def nanmean(a):
        a = a[~np.isnan(a)]
        return float(a.mean()) if a.size else float("nan")

    return SegScores(confusion=conf, IoU=iou, Acc=acc, mIoU=nanmean(iou), mAcc=nanmean(acc),
                     aAcc=float(tp.sum() / total * 100) if total else float("nan"))


def segmentation_scores(pred, target, num_classes: int, ignore_index: int = 255) -> SegScores:
    """Confusion matrix and per-class scores of integer label maps (any matching shape,
    tensors or arrays), or of lists of them (one confusion matrix over all pixels)."""
    m = _metrics(num_classes, ignore_index)
    pairs = zip(pred, target) if isinstance(pred, (list, tuple)) else [(pred, target)]
    for p, t in pairs:
        p = p.cpu().numpy() if isinstance(p, torch.Tensor) else np.asarray(p)
        t = t.cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
        m.update(p.astype(np.int64), t.astype(np.int64))
    return scores_from_confusion(m.confusion)


def normalize_confusion(confusion, by: str = "true") -> np.ndarray:
    """Row- (``"true"``: recall per class), column- (``"pred"``: precision) or
    total-normalised (``"all"``) confusion matrix; empty rows/columns stay 0."""
    c = np.asarray(confusion, dtype=np.float64)
    if by == "true":
        d = c.sum(1, keepdims=True)
    elif by == "pred":
        d = c.sum(0, keepdims=True)
    elif by == "all":
        d = np.array(c.sum())
    else:
        raise ValueError(f"by must be 'true', 'pred' or 'all', got {by!r}")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d > 0, c / np.where(d > 0, d, 1), 0.0)


def class_areas(pred, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """(K,) float64 share in [0, 1] of the counted pixels of an integer label map (any
    shape) given to each class; labels outside ``[0, K)`` and ``ignore_index`` are not
    counted (all zeros when none is)."""
    p = np.asarray(pred).ravel().astype(np.int64)
    p = p[(p >= 0) & (p < num_classes) & (p != ignore_index)]
    counts = np.bincount(p, minlength=num_classes).astype(np.float64)
    return counts / max(counts.sum(), 1.0)
