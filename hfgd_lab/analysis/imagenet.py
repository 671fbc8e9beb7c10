"""What the pretrained features know, before any fine-tuning: the backbone's own ImageNet
classifier on any photo.

An ImageNet classifier's rows are class tokens trained only with high-level (stride-32)
features -- HFGD's premise in its purest form. For a photo, :func:`imagenet_view` ranks
the 1000 classes by the classifier's own answer (global average pooling, then the
linear classifier) and, for the top ones, maps over the image how much each stride-32
cell's feature looks like the class token: the cosine similarity and the class evidence
(the cell's logit ``<f, w_k> + b_k``; their mean over the cells *is* the classifier's
logit, so this is the class activation map of Zhou et al., CVPR 2016).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..config import backbone_normalization
from ..data.preprocess import prepare_image
from ..engine.inference import classifier_features
from ..models.imagenet import imagenet_class_names
from .grid import cells_to_image

__all__ = ["ImageNetView", "imagenet_view", "analyze_imagenet"]

STRIDE = 32


@dataclass
class ImageNetView:
    """The pretrained classifier on one image.

    Attributes:
        image: (H, W, 3) uint8, the image that was classified.
        classes: the top-k class indices (ImageNet-1k), best first.
        names: their names; probs: (k,) their softmax probabilities.
        cosine: (k, H, W) cosine similarity in [-1, 1] of each stride-32 cell's feature
            to each class token (nearest: one value per 32-pixel cell).
        evidence: (k, H, W) the cells' logits for each class (their mean over the cells
            is the classifier's logit).
        grid_cosine, grid_evidence: the same on the (h, w) stride-32 grid.
    """

    image: np.ndarray
    classes: list
    names: list
    probs: np.ndarray
    cosine: np.ndarray
    evidence: np.ndarray
    grid_cosine: np.ndarray
    grid_evidence: np.ndarray


def imagenet_view(features: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                  image: np.ndarray, top_k: int = 5,
                  names: Optional[Sequence[str]] = None) -> ImageNetView:
    """Top classes and their maps from classifier features.

    Args:
        features: (C, h, w) the classifier's last features (after its head convolution).
        weight: (K, C) class tokens (the linear classifier's rows); bias: (K,) or None.
        image: (H, W, 3) uint8, the classified image (h = ceil(H / 32), w likewise).
        top_k: how many classes to keep.
        names: K class names (default: ImageNet-1k's).

    Returns:
        :class:`ImageNetView`.
    """
    f = features.detach().float()
    w = weight.detach().float()
    b = bias.detach().float() if bias is not None else torch.zeros(w.shape[0])
    logits = f.mean((1, 2)) @ w.T + b                      # global pooling, then linear
    probs = logits.softmax(0)
    top = probs.topk(min(top_k, w.shape[0]))
    idx = top.indices
    evidence = torch.einsum("chw,kc->khw", f, w[idx]) + b[idx, None, None]
    cosine = torch.einsum("chw,kc->khw", F.normalize(f, dim=0), F.normalize(w[idx], dim=1))
    size = image.shape[:2]
    names = names or imagenet_class_names()
    return ImageNetView(image=image, classes=idx.tolist(),
                        names=[names[i] for i in idx.tolist()],
                        probs=top.values.numpy(),
                        cosine=cells_to_image(cosine, STRIDE, size, "nearest"),
                        evidence=cells_to_image(evidence, STRIDE, size, "nearest"),
                        grid_cosine=cosine.numpy(), grid_evidence=evidence.numpy())


def analyze_imagenet(classifier, image, backbone: str = "tf_efficientnet_lite0",
                     max_side: Optional[int] = 320, top_k: int = 5) -> ImageNetView:
    """:func:`imagenet_view` of a uint8 photo through ``classifier``
    (:func:`hfgd_lab.models.imagenet.imagenet_classifier`), normalised the way
    ``backbone`` expects, with the longer side capped at ``max_side`` (the classifier
    was trained at 224 px: far larger inputs dilute its confidence)."""
    mean, std = backbone_normalization(backbone)
    x, pixels = prepare_image(image, mean, std, max_side)
    feats, _ = classifier_features(classifier, x)
    head = classifier.get_classifier()
    return imagenet_view(feats[0], head.weight, head.bias, pixels, top_k)
