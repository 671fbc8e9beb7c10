"""The pretrained backbone's own ImageNet classifier, from the same packaged weights.

HFGD's premise in its purest form: an ImageNet classifier's rows are class tokens
trained only with high-level (stride-32) features. :func:`imagenet_classifier` builds
the full timm classification model of a backbone with packaged offline weights
(:data:`hfgd_lab.models.weights.PACKAGED`): every tensor, the head convolution and the
classifier included, comes from the one packaged file. Its class names come with timm
(``timm.data.ImageNetInfo``), offline.
"""
from __future__ import annotations

import functools

import timm
from timm.data import ImageNetInfo
from torch import nn

from .weights import PACKAGED, WeightsError, packaged_state_dict

__all__ = ["imagenet_classifier", "imagenet_class_names"]


def imagenet_classifier(name: str = "tf_efficientnet_lite0") -> nn.Module:
    """The full ImageNet-1k classification model ``name`` with its packaged weights, in
    eval mode. For EfficientNets, ``model.forward_features(x)`` returns the (B, 1280,
    H/32, W/32) features after the head convolution and ``model.classifier`` the 1000
    class tokens (weight (1000, 1280), bias (1000,)).

    Raises:
        WeightsError: ``name`` has no packaged weights, or its package is not installed.
    """
    if name not in PACKAGED:
        raise WeightsError(f"no packaged ImageNet classifier for {name!r}; packaged: "
                           f"{', '.join(PACKAGED)}")
    model = timm.create_model(name, pretrained=False)
    missing, unexpected = model.load_state_dict(packaged_state_dict(name), strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise WeightsError(f"packaged weights of {name!r} leave {missing[:4]} unset")
    return model.eval()


@functools.lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in index order (first synonym of each)."""
    info = ImageNetInfo()
    return tuple(info.index_to_description(i).split(",")[0].strip() for i in range(1000))
