"""Inference: whole-image or sliding-window, multi-scale and flip test-time augmentation.

One implementation for ``eval``, ``predict``, the app and the notebooks: :func:`infer`
returns class probabilities at the input's resolution, averaged over the augmented
views (softmax, then mean, as mmsegmentation does), so the predicted label is their
argmax; with ``keep_outputs`` it also keeps the full :class:`~hfgd_lab.models.HFGDOutput`
(features, both branches, CAE attention) of the whole-image pass, which the analysis
needs, reusing that pass as one of the views instead of running it twice.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F

from ..models import HFGDOutput, resize_logits


@dataclass
class InferenceOptions:
    mode: str = "whole"                  # whole or slide
    crop_size: Optional[list] = None     # slide window (H, W)
    stride: Optional[list] = None        # slide step (H, W); default 2/3 of the window
    scales: list = field(default_factory=lambda: [1.0])
    flip: bool = False
    branch: str = "up"                   # up (the model's answer) or high (HFG branch)

    @classmethod
    def from_eval_config(cls, ev, branch: str = "up") -> "InferenceOptions":
        return cls(ev.mode, ev.crop_size, ev.stride, list(ev.scales), ev.flip, branch)


def _forward_logits(model, image: torch.Tensor, branch: str) -> torch.Tensor:
    return model.predict(image, branch=branch)


def slide_logits(model, image: torch.Tensor, crop_size, stride=None, branch="up"):
    """Logits (B, K, H, W) averaged over overlapping windows (mmsegmentation's grid).
    A window at least as large as the image is exactly whole-image inference."""
    h, w = image.shape[-2:]
    ch, cw = crop_size
    sh, sw = stride or (max(1, ch * 2 // 3), max(1, cw * 2 // 3))
    rows = max(h - ch + sh - 1, 0) // sh + 1
    cols = max(w - cw + sw - 1, 0) // sw + 1
    logits = counts = None
    for r in range(rows):
        for c in range(cols):
            y1, x1 = min(r * sh, max(h - ch, 0)), min(c * sw, max(w - cw, 0))
            y2, x2 = min(y1 + ch, h), min(x1 + cw, w)
            part = _forward_logits(model, image[..., y1:y2, x1:x2], branch)
            if logits is None:
                logits = image.new_zeros((image.shape[0], part.shape[1], h, w))
                counts = image.new_zeros((1, 1, h, w))
            logits[..., y1:y2, x1:x2] += part
            counts[..., y1:y2, x1:x2] += 1
    return logits / counts


@dataclass
class InferenceResult:
    """What :func:`infer` returns.

    Attributes:
        probs: (B, K, H, W) float32 class probabilities at the input's size, averaged
            over the views.
        outputs: the whole-image, unflipped, scale-1 pass with attention maps
            (``keep_outputs=True``), else None.
        views: how many augmented views were averaged.
        pixels: the (h, w, 3) uint8 image that was run, when the caller preprocessed it
            (:meth:`hfgd_lab.engine.LoadedModel.infer`), else None.
    """

    probs: torch.Tensor
    outputs: Optional[HFGDOutput] = None
    views: int = 1
    pixels: Optional[object] = None


@torch.no_grad()
def infer(model, image: torch.Tensor, opts: InferenceOptions | None = None,
          keep_outputs: bool = False) -> InferenceResult:
    """Probabilities for normalised images (B, 3, H, W) under ``opts`` (whole or
    sliding-window, scales, flip); see :class:`InferenceResult`.

    With ``keep_outputs``, the plain whole-image pass is run once with attention maps and
    serves as one of the views when the options include it (whole mode at scale 1); in
    sliding-window mode, or without scale 1, it is one extra pass.
    """
    opts = opts or InferenceOptions()
    was_training = model.training
    model.eval()
    try:
        h, w = image.shape[-2:]
        outputs = None
        if keep_outputs:
            outputs = model(image, return_attention=True)
        total, views = None, 0
        for scale in opts.scales:
            if scale == 1.0:
                img = image
            else:
                size = (max(1, math.floor(h * scale + 0.5)),
                        max(1, math.floor(w * scale + 0.5)))
                img = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
            for flipped in ([False, True] if opts.flip else [False]):
                x = img.flip(-1) if flipped else img
                if outputs is not None and opts.mode == "whole" and scale == 1.0 \
                        and not flipped:
                    branch = outputs.logits if opts.branch == "up" else outputs.logits_high
                    stride = outputs.output_stride if opts.branch == "up" else 32
                    if branch is None:
                        raise ValueError("this model has no HFG branch (arch='semantic_fpn')")
                    logits = resize_logits(branch, outputs.input_size, stride)
                elif opts.mode == "slide":
                    logits = slide_logits(model, x, opts.crop_size, opts.stride, opts.branch)
                else:
                    logits = _forward_logits(model, x, opts.branch)
                if flipped:
                    logits = logits.flip(-1)
                if logits.shape[-2:] != (h, w):
                    logits = F.interpolate(logits, size=(h, w), mode="bilinear",
                                           align_corners=False)
                probs = logits.float().softmax(1)
                total = probs if total is None else total + probs
                views += 1
        return InferenceResult(total / views, outputs, views)
    finally:
        model.train(was_training)


@torch.no_grad()
def classifier_features(classifier, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A timm classification model on normalised images (B, 3, H, W): its last feature
    map (B, C, H/32, W/32) (``forward_features``) and its logits (B, classes)."""
    was_training = classifier.training
    classifier.eval()
    try:
        feats = classifier.forward_features(image)
        return feats, classifier.forward_head(feats)
    finally:
        classifier.train(was_training)


def predict_probs(model, image: torch.Tensor, opts: InferenceOptions | None = None):
    """Class probabilities (B, K, H, W) for normalised images (B, 3, H, W), averaged over
    the views of ``opts`` (:func:`infer` without the kept outputs)."""
    return infer(model, image, opts).probs
