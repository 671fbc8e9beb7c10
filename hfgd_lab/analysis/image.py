"""One forward pass, kept: :class:`ImageAnalysis` holds what every picture needs.

:func:`analyze_image` prepares the image with the model's own normalisation
(:func:`hfgd_lab.data.prepare_image`), runs it through the engine's one inference
function (:func:`hfgd_lab.engine.infer`, attention maps kept, test-time augmentation when
asked) and keeps the outputs for one image; every analysis (similarity maps, shared PCA,
agreement, attention for any clicked pixel, embeddings) is then derived from the stored
result without touching the model again, so a UI can answer a click in milliseconds.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from ..data.preprocess import (as_uint8_image, denormalize_image, fit_max_side, prepare_image,
                               resize_labels)
from ..engine.inference import InferenceOptions, infer
from ..models import resize_logits
from .attention import attention_at, attention_rollout, class_attention, region_attention
from .embedding import pixel_embedding
from .grid import cell_of_pixel, crop_grid
from .guidance import decision_changes, feature_agreement, shared_pca
from .similarity import class_similarity, token_similarity

__all__ = ["ImageAnalysis", "analyze_image", "HIGH_STRIDE"]

HIGH_STRIDE = 32


def _predict(logits: torch.Tensor, input_size, stride: int, chunk: int = 16384):
    """Image-size argmax and max-softmax of (K, h, w) logits, exactly as argmax of
    ``resize_logits``; channels-last and in chunks of pixels, since reductions over
    the class axis of a (K, H, W) tensor are slow on CPU for large K."""
    x = logits[None].float().contiguous(memory_format=torch.channels_last)
    up = resize_logits(x, input_size, stride)
    k = up.shape[1]
    rows = up.permute(0, 2, 3, 1).reshape(-1, k)  # (H*W, K), no copy when channels-last
    pred = torch.empty(rows.shape[0], dtype=torch.long)
    conf = torch.empty(rows.shape[0])
    for i in range(0, rows.shape[0], chunk):
        part = rows[i:i + chunk]
        top, idx = part.max(1)
        pred[i:i + chunk] = idx
        conf[i:i + chunk] = 1.0 / (part - top[:, None]).exp_().sum(1)
    h, w = input_size
    return pred.view(h, w).numpy().astype(np.int64), conf.view(h, w).numpy()


# ---- the stored result --------------------------------------------------------------

@dataclass(eq=False)
class ImageAnalysis:
    """Everything one forward pass says about one image.

    Model outputs are CPU float32 **tensors** without the batch axis; per-pixel results
    derived from them are **numpy** arrays at the analysed image's size ``(H, W)``.

    Attributes:
        image: (H, W, 3) uint8, the image that was analysed (after ``max_side``).
        input_size: (H, W) of ``image``; every ``x, y`` query is in these pixels.
        original_size: (H0, W0) before ``max_side`` (see :meth:`point_from_original`).
        output_stride: stride of ``logits`` / ``feat_up`` (8, 4 or 2).
        grid_high: padded stride-32 token grid (gh, gw) that ``attentions`` live on.
        logits: (K, ceil(H/os), ceil(W/os)) upsampler logits (the model's answer).
        logits_high: (K, ceil(H/32), ceil(W/32)) HFG-branch logits, None for SemanticFPN.
        feat_up: (D, ceil(H/os), ceil(W/os)) F_up.
        feat_high: (D, ceil(H/32), ceil(W/32)) F_high, None for SemanticFPN.
        class_tokens: (K, D) the class tokens E.
        classifier: ``"dot"`` or ``"cosine"``, as the model classifies.
        logit_scale: the cosine classifier's ``exp(logit_scale)``, else None.
        attentions: (L, heads, N, N) CAE attention, N = gh * gw (rows: queries, row-major
            tokens; every row sums to one over all N tokens, padding included), or None.
        pred, pred_high: (H, W) int64 argmax of the image-size logits per branch.
        confidence, confidence_high: (H, W) float32 max softmax probability.
        probs, probs_high: (K, h, w) float32 softmax on each branch's own grid.
        target: (H, W) int64 ground truth if given (resized nearest), else None.
        pred_source: ``"forward"`` (pred from ``logits``) or ``"probs"`` (from
            probabilities passed to ``analyze_image``, e.g. test-time augmentation).
        timings: seconds spent in ``forward`` (with preprocessing) and ``post``.
    """

    image: np.ndarray
    input_size: tuple
    original_size: tuple
    output_stride: int
    grid_high: tuple
    logits: torch.Tensor
    logits_high: Optional[torch.Tensor]
    feat_up: torch.Tensor
    feat_high: Optional[torch.Tensor]
    class_tokens: torch.Tensor
    classifier: str
    logit_scale: Optional[float]
    attentions: Optional[np.ndarray]
    pred: np.ndarray
    pred_high: Optional[np.ndarray]
    confidence: np.ndarray
    confidence_high: Optional[np.ndarray]
    probs: np.ndarray
    probs_high: Optional[np.ndarray]
    target: Optional[np.ndarray] = None
    pred_source: str = "forward"
    timings: dict = field(default_factory=dict)

    # ---- shape facts ----------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return int(self.class_tokens.shape[0])

    @property
    def has_high(self) -> bool:
        """False for the SemanticFPN baseline (no HFG branch)."""
        return self.feat_high is not None

    @property
    def has_attention(self) -> bool:
        return self.attentions is not None and len(self.attentions) > 0

    @property
    def num_layers(self) -> int:
        return 0 if self.attentions is None else int(self.attentions.shape[0])

    @property
    def num_heads(self) -> int:
        return 0 if not self.has_attention else int(self.attentions.shape[1])

    @property
    def padded_size(self) -> tuple:
        """(H, W) of the padded input the backbone saw."""
        return self.grid_high[0] * HIGH_STRIDE, self.grid_high[1] * HIGH_STRIDE

    @property
    def grid_size_high(self) -> tuple:
        """(ceil(H/32), ceil(W/32)): stride-32 cells that touch the image."""
        return crop_grid(self.input_size, HIGH_STRIDE)

    @property
    def grid_size_up(self) -> tuple:
        return crop_grid(self.input_size, self.output_stride)

    def point_from_original(self, x: float, y: float) -> tuple[float, float]:
        """Map a point in the original (pre-``max_side``) image to analysed pixels."""
        (h0, w0), (h, w) = self.original_size, self.input_size
        return x * w / w0, y * h / h0

    def token_of(self, x: float, y: float) -> int:
        """Row-major index (in the padded grid) of the stride-32 token containing (x, y)."""
        r, c = cell_of_pixel(x, y, HIGH_STRIDE, self.input_size)
        return r * self.grid_high[1] + c

    def require_high(self, what: str = "this analysis"):
        if not self.has_high:
            raise ValueError(f"{what} needs the HFG branch; this model is a SemanticFPN "
                             "baseline (arch='semantic_fpn')")

    def require_attention(self):
        if not self.has_attention:
            raise ValueError("no CAE attention stored: the model has cae_depth=0 or no HFG "
                             "branch, or precomputed outputs were passed without attentions")

    # ---- derived analyses (thin wrappers over the functions of this package) ---------
    def similarity(self, classes=None, mode: str = "cosine", size: str = "image"):
        """See :func:`hfgd_lab.analysis.class_similarity`."""
        return class_similarity(self, classes, mode, size)

    def token_similarity(self) -> np.ndarray:
        return token_similarity(self.class_tokens)

    def shared_pca(self, **kw):
        """See :func:`hfgd_lab.analysis.shared_pca`."""
        return shared_pca(self, **kw)

    def agreement(self):
        """See :func:`hfgd_lab.analysis.feature_agreement`."""
        return feature_agreement(self)

    def decision_changes(self, target=None, ignore_index: int = 255):
        """See :func:`hfgd_lab.analysis.decision_changes`."""
        return decision_changes(self, target, ignore_index)

    def attention(self, x: float, y: float, mode: str = "nearest"):
        """See :func:`hfgd_lab.analysis.attention_at`."""
        return attention_at(self, x, y, mode=mode)

    def class_attention(self, k: int, branch: str = "up", mode: str = "nearest"):
        """See :func:`hfgd_lab.analysis.class_attention`."""
        return class_attention(self, k, branch=branch, mode=mode)

    def region_attention(self, mask, mode: str = "nearest", label: str = "region"):
        return region_attention(self, mask, mode=mode, label=label)

    def rollout_matrix(self, head_fusion: str = "mean") -> np.ndarray:
        """(N, N) attention rollout over all layers (queries need only its rows, which
        :func:`hfgd_lab.analysis.attention.rollout_rows` computes without it)."""
        self.require_attention()
        return attention_rollout(self.attentions, head_fusion=head_fusion)

    def embedding(self, **kw):
        """See :func:`hfgd_lab.analysis.pixel_embedding`."""
        return pixel_embedding(self, **kw)


# ---- the forward pass ---------------------------------------------------------------

def analyze_image(model, image, target=None, *, max_side: Optional[int] = None,
                  outputs=None, probs=None, options: Optional[InferenceOptions] = None,
                  index: int = 0, device=None) -> ImageAnalysis:
    """Run ``model`` once on ``image`` and keep what every analysis needs.

    Args:
        model: an HFGD model (or its SemanticFPN baseline), or a
            :class:`hfgd_lab.engine.LoadedModel`.
        image: (H, W, 3) uint8 array or PIL image (normalised here with the model's own
            ``cfg.normalization``), or an already normalised (3, H, W) / (1, 3, H, W)
            tensor.
        target: optional (H0, W0) integer label map for the original image.
        max_side: downscale (never upscale) so the longer side is at most this, before
            the forward pass; queries are then in the downscaled pixels.
        outputs: precomputed :class:`HFGDOutput` for this (already resized) image; the
            forward pass is skipped. Include ``attentions`` for the attention analyses.
        probs: optional (K, H, W) (or (1, K, H, W)) image-size probabilities, e.g. from
            test-time augmentation; ``pred`` and ``confidence`` then come from them
            (``pred_source == "probs"``) while features, logits and attention come from
            the single whole-image pass.
        options: test-time augmentation (:class:`hfgd_lab.engine.InferenceOptions`); the
            whole-image pass is one of its views, run once (``engine.infer``).
        index: which batch element of ``outputs`` to keep.
        device: where to run the forward pass (default: the model's device).

    Returns:
        :class:`ImageAnalysis`.

    Raises:
        ValueError: tensors of the wrong shape, or ``outputs`` / ``probs`` / ``target``
            that do not fit the analysed image.
    """
    net = getattr(model, "model", model)          # a LoadedModel or a bare model
    mean, std = net.cfg.normalization
    t0 = time.perf_counter()
    if isinstance(image, torch.Tensor):
        x = image if image.dim() == 4 else image[None]
        if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
            raise ValueError(f"tensor images must be (3, H, W) or (1, 3, H, W), "
                             f"got {tuple(image.shape)}")
        x = x.detach().float().cpu()
        orig = tuple(x.shape[-2:])
        size = fit_max_side(orig, max_side)
        if size != orig:
            x = torch.nn.functional.interpolate(x, size=size, mode="bilinear",
                                                align_corners=False, antialias=True)
        img = denormalize_image(x, mean, std)
    else:
        arr = as_uint8_image(image)
        orig = tuple(arr.shape[:2])
        x, img = prepare_image(arr, mean, std, max_side)
    h, w = x.shape[-2:]
    if outputs is None:
        dev = device or next(net.parameters()).device
        result = infer(net, x.to(dev), options, keep_outputs=True)
        outputs = result.outputs
        if options is not None and (options.flip or options.mode != "whole"
                                    or list(options.scales) != [1.0]):
            probs = result.probs
    elif tuple(outputs.input_size) != (h, w):
        raise ValueError(f"outputs were computed for an input of {tuple(outputs.input_size)}, "
                         f"the analysed image is {(h, w)} (check max_side)")
    t1 = time.perf_counter()
    return _from_outputs(net, outputs, img, orig, target, probs, index,
                         {"forward": t1 - t0}, t1)


def _from_outputs(model, outputs, img, orig, target, probs, index, timings, t1):
    h, w = img.shape[:2]

    def one(t):
        return None if t is None else t[index].detach().float().cpu()

    logits, logits_high = one(outputs.logits), one(outputs.logits_high)
    os_ = int(outputs.output_stride)
    attn = None
    if outputs.attentions:
        attn = torch.stack([a[index] for a in outputs.attentions]).float().cpu().numpy()
    pred, conf = _predict(logits, (h, w), os_)
    pred_source = "forward"
    if probs is not None:
        p = torch.as_tensor(probs).detach().float().cpu()
        p = p[index] if p.dim() == 4 else p
        if tuple(p.shape) != (logits.shape[0], h, w):
            raise ValueError(f"probs must be (K, H, W) = {(logits.shape[0], h, w)}, "
                             f"got {tuple(p.shape)}")
        top, idx = p.max(0)
        pred, conf = idx.numpy().astype(np.int64), top.numpy().astype(np.float32)
        pred_source = "probs"
    pred_high = conf_high = probs_high = None
    if logits_high is not None:
        pred_high, conf_high = _predict(logits_high, (h, w), HIGH_STRIDE)
        probs_high = logits_high.softmax(0).numpy()
    scale = getattr(model, "logit_scale", None)
    grid_high = tuple(outputs.grid_high) if any(outputs.grid_high) else \
        (math.ceil(h / HIGH_STRIDE), math.ceil(w / HIGH_STRIDE))
    tgt = None
    if target is not None:
        tgt = np.asarray(target.cpu() if isinstance(target, torch.Tensor) else target)
        tgt = np.squeeze(tgt)
        if tgt.shape != tuple(orig):
            raise ValueError(f"target shape {tgt.shape} does not match the image {orig}")
        tgt = resize_labels(tgt.astype(np.int64), (h, w))
    timings = {**timings, "post": time.perf_counter() - t1}
    return ImageAnalysis(
        image=img, input_size=(int(h), int(w)), original_size=tuple(int(v) for v in orig),
        output_stride=os_, grid_high=grid_high,
        logits=logits, logits_high=logits_high,
        feat_up=one(outputs.feat_up), feat_high=one(outputs.feat_high),
        class_tokens=model.class_tokens.detach().float().cpu().clone(),
        classifier=getattr(getattr(model, "cfg", None), "classifier", "dot"),
        logit_scale=float(scale.detach().exp()) if scale is not None else None,
        attentions=attn, pred=pred, pred_high=pred_high, confidence=conf,
        confidence_high=conf_high, probs=logits.softmax(0).numpy(), probs_high=probs_high,
        target=tgt, pred_source=pred_source, timings=timings)
