"""SegMetrics: mIoU, mAcc and aAcc from one confusion matrix over all evaluated pixels.

Definitions as in mmsegmentation, so numbers are comparable: per-class IoU = TP /
(GT + Pred - TP) and accuracy = TP / GT over the whole dataset (not averaged per
image); classes with no union (IoU) or no ground truth (Acc) are NaN and left out of
the means; aAcc is pixel accuracy; pixels labelled ``ignore_index`` are not counted.
The matrix is a plain int64 array (``confusion``) so that DDP can sum it across ranks.
"""
from __future__ import annotations

import numpy as np
import torch


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


class SegMetrics:
    """Accumulates a (K, K) confusion matrix, rows = ground truth, cols = prediction.

    ``update`` takes integer label maps of any matching shape (``(H, W)``,
    ``(B, H, W)``, ...), as torch tensors or numpy arrays. Per-class ``IoU``/``Acc``
    from ``compute`` are percentages like the means.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255):
        if num_classes < 1:
            raise ValueError(f"num_classes={num_classes}: must be >= 1")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.confusion = np.zeros((self.num_classes, self.num_classes), np.int64)

    def reset(self) -> None:
        self.confusion = np.zeros_like(self.confusion)

    def update(self, pred, target) -> None:
        pred, target = _as_numpy(pred), _as_numpy(target)
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {pred.shape} != target shape {target.shape}")
        for what, a in (("prediction", pred), ("target", target)):
            if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
                raise ValueError(f"{what} must be integer class labels, got dtype {a.dtype}"
                                 + (" (take argmax over the class axis first)"
                                    if what == "prediction" else ""))
        k = self.num_classes
        target = target.ravel().astype(np.int64, copy=False)
        pred = pred.ravel().astype(np.int64, copy=False)
        valid = target != self.ignore_index
        if not valid.all():
            target, pred = target[valid], pred[valid]
        if target.size == 0:
            return
        for what, a in (("prediction", pred), ("target", target)):
            low, high = int(a.min()), int(a.max())
            if low < 0 or high >= k:
                extra = "" if what == "prediction" else f" or == ignore_index {self.ignore_index}"
                raise ValueError(f"{what} values must be in [0, {k}){extra}; "
                                 f"got min {low}, max {high}")
        counts = np.bincount(target * k + pred, minlength=k * k)
        self.confusion += counts.reshape(k, k)

    def merge(self, other: "SegMetrics") -> "SegMetrics":
        """Add another accumulator's counts (e.g. from another worker)."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge metrics over {other.num_classes} classes into "
                             f"{self.num_classes}")
        self.confusion += other.confusion
        return self

    def confusion_tensor(self) -> torch.Tensor:
        """The counts as an int64 tensor (a copy), for ``dist.all_reduce``."""
        return torch.from_numpy(self.confusion.copy())

    def set_confusion(self, counts) -> None:
        """Replace the counts, e.g. with the all-reduced tensor."""
        counts = _as_numpy(counts)
        if counts.shape != self.confusion.shape:
            raise ValueError(f"confusion shape {counts.shape} != {self.confusion.shape}")
        self.confusion = np.rint(counts).astype(np.int64)

    def all_reduce(self) -> None:
        """Sum the counts over all DDP ranks (no-op without an initialised process
        group). Goes through CUDA when the backend is NCCL."""
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()):
            return
        t = self.confusion_tensor()
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
        self.set_confusion(t.cpu())

    def compute(self) -> dict:
        conf = self.confusion.astype(np.float64)
        tp = np.diag(conf)
        gt, pred = conf.sum(1), conf.sum(0)
        union = gt + pred - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, tp / union, np.nan) * 100
            acc = np.where(gt > 0, tp / gt, np.nan) * 100
        total = conf.sum()
        return {
            "mIoU": _nanmean(iou),
            "mAcc": _nanmean(acc),
            "aAcc": float(tp.sum() / total * 100) if total > 0 else float("nan"),
            "IoU": iou.tolist(),
            "Acc": acc.tolist(),
        }


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")
