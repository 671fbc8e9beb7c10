"""One forward pass, kept: :class:`ImageAnalysis` holds what every picture needs.

``analyze_image`` runs the model once (eval mode, no grad, attention maps on) and
stores its outputs for one image; every analysis (similarity maps, shared PCA,
agreement, attention for any clicked pixel, embeddings) is then derived from the
stored result without touching the model again, so a UI can answer a click in
milliseconds.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..models import resize_logits
from .grid import cell_of_pixel, crop_grid

__all__ = ["ImageAnalysis", "analyze_image", "IMAGENET_MEAN", "IMAGENET_STD",
           "normalize_image", "denormalize_image", "fit_max_side", "as_uint8_image",
           "resize_labels", "HIGH_STRIDE"]

HIGH_STRIDE = 32


# ---- image conversion ---------------------------------------------------------------

def as_uint8_image(image) -> np.ndarray:
    """A PIL image or numpy array (HxW, HxWx1, HxWx3, HxWx4; uint8) as HxWx3 uint8."""
    if not isinstance(image, np.ndarray):  # PIL.Image and friends
        image = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if image.dtype != np.uint8:
        raise TypeError(f"numpy images must be uint8 (0..255), got {image.dtype}; pass "
                        "a normalised torch tensor for float input")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"image must be HxW, HxWx3 or HxWx4, got shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, 2)
    return np.ascontiguousarray(image[..., :3])


def normalize_image(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> (1, 3, H, W) float32, normalised with ImageNet mean and std."""
    # np.require copies read-only arrays (e.g. from PIL), which torch.from_numpy warns about
    x = torch.from_numpy(np.require(as_uint8_image(image), requirements="W"))
    x = x.permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((x - mean) / std)[None]


def denormalize_image(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (1, 3, H, W) normalised tensor -> HxWx3 uint8 (for display)."""
    if x.dim() == 4:
        x = x[0]
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1)
    y = (x.detach().float() * std + mean).clamp(0, 1).mul(255).round().byte()
    return y.permute(1, 2, 0).cpu().numpy()


def fit_max_side(size, max_side: Optional[int]) -> tuple[int, int]:
    """``(H, W)`` scaled down (never up) so that its longer side is at most ``max_side``."""
    h, w = size
    if not max_side or max(h, w) <= max_side:
        return int(h), int(w)
    s = max_side / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def _resize_tensor(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False,
                         antialias=True)


def resize_labels(target: np.ndarray, size) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W) label map to ``size`` (pixel centres)."""
    h, w = target.shape
    if (h, w) == tuple(size):
        return target
    rows = np.minimum((np.arange(size[0]) + 0.5) * h / size[0], h - 1).astype(int)
    cols = np.minimum((np.arange(size[1]) + 0.5) * w / size[1], w - 1).astype(int)
    return target[rows][:, cols]


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
    _cache: dict = field(default_factory=dict, repr=False)

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
        from .similarity import class_similarity
        return class_similarity(self, classes, mode, size)

    def token_similarity(self) -> np.ndarray:
        from .similarity import token_similarity
        return token_similarity(self.class_tokens)

    def shared_pca(self, **kw):
        """See :func:`hfgd_lab.analysis.shared_pca`."""
        from .guidance import shared_pca
        return shared_pca(self, **kw)

    def agreement(self):
        """See :func:`hfgd_lab.analysis.feature_agreement`."""
        from .guidance import feature_agreement
        return feature_agreement(self)

    def decision_changes(self, target=None, ignore_index: int = 255):
        """See :func:`hfgd_lab.analysis.decision_changes`."""
        from .guidance import decision_changes
        return decision_changes(self, target, ignore_index)

    def attention(self, x: float, y: float, mode: str = "nearest"):
        """See :func:`hfgd_lab.analysis.attention_at`."""
        from .attention import attention_at
        return attention_at(self, x, y, mode=mode)

    def class_attention(self, k: int, branch: str = "up", mode: str = "nearest"):
        """See :func:`hfgd_lab.analysis.class_attention`."""
        from .attention import class_attention
        return class_attention(self, k, branch=branch, mode=mode)

    def region_attention(self, mask, mode: str = "nearest", label: str = "region"):
        from .attention import region_attention
        return region_attention(self, mask, mode=mode, label=label)

    def rollout_matrix(self, head_fusion: str = "mean") -> np.ndarray:
        """(N, N) attention rollout over all layers, computed once and cached."""
        key = ("rollout", head_fusion, id(self.attentions))  # a replaced array misses
        if key not in self._cache:
            from .attention import attention_rollout
            self.require_attention()
            self._cache[key] = attention_rollout(self.attentions, head_fusion=head_fusion)
        return self._cache[key]

    def embedding(self, **kw):
        """See :func:`hfgd_lab.analysis.pixel_embedding`."""
        from .embedding import pixel_embedding
        return pixel_embedding(self, **kw)


# ---- the forward pass ---------------------------------------------------------------

def _prepare(image, max_side):
    """-> (normalised (1,3,H,W) tensor, uint8 image, original size)."""
    if isinstance(image, torch.Tensor):
        x = image if image.dim() == 4 else image[None]
        if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
            raise ValueError(f"tensor images must be (3, H, W) or (1, 3, H, W), "
                             f"got {tuple(image.shape)}")
        x = x.detach().float().cpu()
        orig = tuple(x.shape[-2:])
        size = fit_max_side(orig, max_side)
        if size != orig:
            x = _resize_tensor(x, size)
        return x, denormalize_image(x), orig
    img = as_uint8_image(image)
    orig = img.shape[:2]
    size = fit_max_side(orig, max_side)
    if size != tuple(orig):
        t = torch.from_numpy(img).permute(2, 0, 1)[None].float()
        img = _resize_tensor(t, size).clamp(0, 255).round().byte()[0].permute(1, 2, 0).numpy()
        img = np.ascontiguousarray(img)
    return normalize_image(img), img, tuple(orig)


def analyze_image(model, image, target=None, *, max_side: Optional[int] = None,
                  outputs=None, probs=None, index: int = 0, device=None) -> ImageAnalysis:
    """Run ``model`` once on ``image`` and keep what every analysis needs.

    Args:
        model: an HFGD model (or its SemanticFPN baseline) from ``build_model``.
        image: HxWx3 uint8 numpy array (or PIL image; normalised with ImageNet mean and
            std here), or a normalised ``(3, H, W)`` / ``(1, 3, H, W)`` tensor.
        target: optional (H0, W0) integer label map for the original image.
        max_side: downscale (never upscale) so the longer side is at most this, before
            the forward pass; queries are then in the downscaled pixels.
        outputs: precomputed :class:`HFGDOutput` for this (already resized) image, e.g.
            from sliding-window or flip inference in the engine; the forward pass is
            skipped. Include ``attentions`` for the attention analyses.
        probs: optional (K, H, W) (or (1, K, H, W)) image-size upsampler probabilities
            for the analysed image, e.g. ``engine.inference.predict_probs`` with flip /
            sliding-window / multi-scale options; ``pred`` and ``confidence`` then come
            from them (``pred_source == "probs"``) while features, logits and attention
            come from the single forward pass.
        index: which batch element of ``outputs`` to keep.
        device: where to run the forward pass (default: the model's device).

    Returns:
        :class:`ImageAnalysis`.
    """
    t0 = time.perf_counter()
    x, img, orig = _prepare(image, max_side)
    h, w = x.shape[-2:]
    if outputs is None:
        dev = device or next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                outputs = model(x.to(dev), return_attention=True)
        finally:
            model.train(was_training)
    elif tuple(outputs.input_size) != (h, w):
        raise ValueError(f"outputs were computed for an input of {tuple(outputs.input_size)}, "
                         f"the analysed image is {(h, w)} (check max_side)")
    t1 = time.perf_counter()

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
        target=tgt, pred_source=pred_source,
        timings={"forward": t1 - t0, "post": time.perf_counter() - t1})
