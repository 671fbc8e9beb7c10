"""Evaluation: mIoU / mAcc / aAcc and per-class IoU and accuracy over a dataset."""
from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from ..data.transforms import build_eval_transform
from ..metrics import SegMetrics
from .distributed import DistInfo
from .inference import InferenceOptions, predict_probs


@torch.no_grad()
def evaluate(model, dataset, opts: InferenceOptions | None = None, device="cpu",
             info: DistInfo | None = None, max_images: int | None = None,
             progress: bool = True, desc: str = "eval") -> dict:
    """Metrics of ``model`` on ``dataset`` (items: dict(image, mask) tensors).

    A dataset built without a transform gets the evaluation transform with the model's
    own input normalisation (``model.cfg.normalization``: the backbone's mean/std), set on
    the dataset; one with a transform is used as it is.

    Under DDP each rank takes every ``world_size``-th image and the confusion
    matrices are summed, so every rank returns the same numbers.
    """
    info = info or DistInfo()
    was_training = model.training
    model.eval()
    net = getattr(model, "module", model)
    k = net.cfg.num_classes
    if getattr(dataset, "transform", False) is None:
        dataset.transform = build_eval_transform(*net.cfg.normalization)
    metrics = SegMetrics(num_classes=k, ignore_index=net.cfg.ignore_index)
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    indices = range(info.rank, n, info.world_size)
    bar = tqdm(indices, desc=desc, disable=not (progress and info.is_main), leave=False)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if str(device).startswith("cuda") \
        else torch.autocast("cpu", enabled=False)
    for i in bar:
        sample = dataset[i]
        image = sample["image"].unsqueeze(0).to(device)
        with amp:
            probs = predict_probs(net, image, opts)
        metrics.update(probs.argmax(1).cpu(), sample["mask"].unsqueeze(0))
    if info.enabled:
        metrics.all_reduce()
    model.train(was_training)
    result = metrics.compute()
    result["num_images"] = n
    return result


def format_results(result: dict, classes=None) -> str:
    """A plain-text table: summary line, then per-class IoU and accuracy."""
    lines = [f"mIoU {result['mIoU']:.2f}  mAcc {result['mAcc']:.2f}  aAcc {result['aAcc']:.2f}"
             f"  ({result.get('num_images', '?')} images)"]
    ious, accs = result.get("IoU", []), result.get("Acc", [])
    names = list(classes) if classes is not None else [str(i) for i in range(len(ious))]
    width = max([len(s) for s in names] + [5])
    lines.append(f"{'class':<{width}}  {'IoU':>6}  {'Acc':>6}")

    def fmt(v):
        return "   n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:6.2f}"
    for name, iou, acc in zip(names, ious, accs):
        lines.append(f"{name:<{width}}  {fmt(iou)}  {fmt(acc)}")
    return "\n".join(lines)
