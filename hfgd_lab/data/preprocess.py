"""From RGB uint8 pixels to the tensor a backbone expects, and back: the one place.

The normalisation belongs to the backbone (timm's ``pretrained_cfg``: mean = std = 0.5
for the ``tf_`` EfficientNets, ImageNet's constants for most others); it is stored in
:class:`hfgd_lab.HFGDConfig` (``cfg.normalization``) and in every checkpoint card, and
every path -- the dataset transforms (training, evaluation), ``predict``, the app, the
analysis, the notebooks and ``pretrain`` -- applies it through :func:`normalize_array`,
so one image reaches the network as one tensor whatever path it took.

Resizing for compute (the app's and ``predict``'s resolution caps) is here too: images
bilinear with antialiasing, label maps nearest.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from .io import _composite_on_white, read_image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "normalize_array", "normalize_image",
           "denormalize_image", "fit_max_side", "resize_image", "resize_labels",
           "prepare_image", "as_uint8_image"]


def as_uint8_image(image) -> np.ndarray:
    """A PIL image or a uint8 array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) as a
    contiguous (H, W, 3) uint8 array, by the reader's rules (:mod:`hfgd_lab.data.io`: a
    PIL image goes through :func:`read_image` at full size; alpha is composited on white).
    Other dtypes raise ``TypeError`` (read files and other arrays with
    :func:`hfgd_lab.data.read_image`, which knows their bit depth)."""
    if isinstance(image, Image.Image):
        return read_image(image, max_side=None, min_side=1).array
    if not isinstance(image, np.ndarray):
        image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"images must be uint8 (0..255), got {image.dtype}; read other "
                        "data with hfgd_lab.data.read_image")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"image must be HxW, HxWx3 or HxWx4, got shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, 2)
    if image.shape[2] == 4:
        return _composite_on_white(image)
    return np.ascontiguousarray(image)


def normalize_array(image: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W, 3) float32 ``(pixel / 255 - mean) / std``.

    The one normalisation arithmetic of the project (float32 throughout)."""
    m = np.asarray(mean, np.float32)
    s = np.asarray(std, np.float32)
    return (image.astype(np.float32) / np.float32(255.0) - m) / s


def normalize_image(image, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 tensor, by :func:`normalize_array`."""
    x = normalize_array(as_uint8_image(image), mean, std)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def denormalize_image(x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
                      std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """(3, H, W) or (1, 3, H, W) normalised tensor -> (H, W, 3) uint8 (for display)."""
    if x.dim() == 4:
        x = x[0]
    m = torch.tensor(mean, device=x.device).view(3, 1, 1)
    s = torch.tensor(std, device=x.device).view(3, 1, 1)
    y = (x.detach().float() * s + m).clamp(0, 1).mul(255).round().byte()
    return y.permute(1, 2, 0).cpu().numpy()


def fit_max_side(size, max_side: Optional[int]) -> tuple[int, int]:
    """``(H, W)`` scaled down (never up) so that its longer side is at most ``max_side``."""
    h, w = size
    if not max_side or max(h, w) <= max_side:
        return int(h), int(w)
    s = max_side / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def resize_image(image: np.ndarray, size) -> np.ndarray:
    """(H, W, 3) uint8 resized to ``size`` = (h, w): bilinear, antialiased when shrinking."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR,
                                                    reducing_gap=None))


def resize_labels(labels: np.ndarray, size) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W) label map to ``size`` (sampled at pixel
    centres, so every output label is one of the input's)."""
    h, w = labels.shape
    if (h, w) == tuple(size):
        return labels
    rows = np.minimum((np.arange(size[0]) + 0.5) * h / size[0], h - 1).astype(int)
    cols = np.minimum((np.arange(size[1]) + 0.5) * w / size[1], w - 1).astype(int)
    return labels[rows][:, cols]


def prepare_image(image, mean: Sequence[float] = IMAGENET_MEAN,
                  std: Sequence[float] = IMAGENET_STD,
                  max_side: Optional[int] = None) -> tuple[torch.Tensor, np.ndarray]:
    """A uint8 image -> ``(x, pixels)``: the (1, 3, h, w) normalised tensor the model
    runs on and the (h, w, 3) uint8 pixels it shows, after scaling the longer side down
    to ``max_side`` (never up)."""
    img = as_uint8_image(image)
    img = resize_image(img, fit_max_side(img.shape[:2], max_side))
    return normalize_image(img, mean, std), img
