"""Training and evaluation transforms on sample dicts ``{"image": uint8 HWC, "mask": HW}``.

Same recipe and semantics as mmsegmentation's pipeline (random resize, random crop with
``cat_max_ratio``, flip, photometric distortion, normalise, pad) so that training
numbers are comparable. All randomness comes from ``torch`` (``torch.rand`` /
``torch.randint``): the DataLoader and the engine's seeded sampler seed ``torch`` per
sample or worker, which makes augmentation reproducible and training resumable. Never
use numpy's global RNG here.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .classes import IGNORE_INDEX
from .preprocess import IMAGENET_MEAN, IMAGENET_STD, normalize_array


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


def _randint(low: int, high: int) -> int:
    """Uniform integer in [low, high] (inclusive)."""
    return int(torch.randint(low, high + 1, ()))


def _chance(p: float) -> bool:
    return float(torch.rand(())) < p


def _pair(size) -> tuple[int, int]:
    return (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, sample: dict) -> dict:
        for t in self.transforms:
            sample = t(sample)
        return sample

    def __repr__(self):
        return "Compose([\n" + "".join(f"  {t!r},\n" for t in self.transforms) + "])"


class RandomResize:
    """Rescale by a random ratio in ``scale``, keeping the aspect ratio.

    ``base_size=None``: the image's own size times the ratio. ``base_size=(H, W)``
    (mmseg's ``scale=(2048, 512)`` written as ``(512, 2048)``): the largest rescale with
    long side <= max(H, W) * ratio and short side <= min(H, W) * ratio, whatever the
    image's orientation.
    """

    def __init__(self, scale=(0.5, 2.0), base_size=None):
        self.scale = (float(scale[0]), float(scale[1]))
        self.base_size = None if base_size is None else _pair(base_size)

    def __call__(self, sample):
        ratio = _uniform(*self.scale)
        h, w = sample["image"].shape[:2]
        if self.base_size is None:
            factor = ratio
        else:
            long_, short = max(self.base_size) * ratio, min(self.base_size) * ratio
            factor = min(long_ / max(h, w), short / min(h, w))
        size = (max(1, int(w * factor + 0.5)), max(1, int(h * factor + 0.5)))
        return resize(sample, size)

    def __repr__(self):
        return f"RandomResize(scale={self.scale}, base_size={self.base_size})"


def resize(sample: dict, size_wh: tuple[int, int]) -> dict:
    """Image bilinear, mask nearest, to ``(W, H)``."""
    out = dict(sample)
    if sample["image"].shape[1::-1] == tuple(size_wh):
        return out
    out["image"] = np.asarray(Image.fromarray(sample["image"]).resize(size_wh, Image.BILINEAR))
    if "mask" in sample:
        mask = sample["mask"]
        if mask.dtype == np.uint8:
            out["mask"] = np.asarray(Image.fromarray(mask).resize(size_wh, Image.NEAREST))
        else:
            h, w = mask.shape
            ys = (np.arange(size_wh[1]) * h // size_wh[1]).clip(0, h - 1)
            xs = (np.arange(size_wh[0]) * w // size_wh[0]).clip(0, w - 1)
            out["mask"] = mask[ys[:, None], xs[None, :]]
    return out


class RandomCrop:
    """Random ``size`` crop (smaller images are cropped to their own size; ``Pad``
    fills up later). With ``cat_max_ratio < 1``, up to 10 tries for a crop in which no
    single class covers more than that share of the labelled pixels (mmseg's rule)."""

    def __init__(self, size, cat_max_ratio: float = 0.75, ignore_index: int = IGNORE_INDEX):
        self.size = _pair(size)
        self.cat_max_ratio = cat_max_ratio
        self.ignore_index = ignore_index

    def _box(self, h, w):
        ch, cw = min(self.size[0], h), min(self.size[1], w)
        y, x = _randint(0, h - ch), _randint(0, w - cw)
        return y, x, ch, cw

    def __call__(self, sample):
        h, w = sample["image"].shape[:2]
        y, x, ch, cw = self._box(h, w)
        if self.cat_max_ratio < 1.0 and "mask" in sample:
            for _ in range(10):
                crop = sample["mask"][y:y + ch, x:x + cw]
                counts = np.bincount(crop.ravel().astype(np.int64))
                if counts.size > self.ignore_index:
                    counts = np.delete(counts, self.ignore_index)
                counts = counts[counts > 0]
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                y, x, ch, cw = self._box(h, w)
        out = dict(sample)
        out["image"] = sample["image"][y:y + ch, x:x + cw]
        if "mask" in sample:
            out["mask"] = sample["mask"][y:y + ch, x:x + cw]
        return out

    def __repr__(self):
        return f"RandomCrop(size={self.size}, cat_max_ratio={self.cat_max_ratio})"


class RandomFlip:
    """Horizontal flip of image and mask together, with probability ``p``."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, sample):
        if not _chance(self.p):
            return sample
        out = dict(sample)
        out["image"] = sample["image"][:, ::-1]
        if "mask" in sample:
            out["mask"] = sample["mask"][:, ::-1]
        return out

    def __repr__(self):
        return f"RandomFlip(p={self.p})"


class PhotoMetricDistortion:
    """mmseg's photometric distortion, each step with probability 0.5: brightness
    (+-32), contrast (x0.5..1.5, before or after the colour steps), saturation
    (x0.5..1.5) and hue (+-18 of OpenCV's 180 steps). Image only; uint8 in and out."""

    def __init__(self, brightness_delta=32, contrast_range=(0.5, 1.5),
                 saturation_range=(0.5, 1.5), hue_delta=18):
        self.brightness_delta = brightness_delta
        self.contrast_range = contrast_range
        self.saturation_range = saturation_range
        self.hue_delta = hue_delta

    def __call__(self, sample):
        img = sample["image"].astype(np.float32)
        if _chance(0.5):
            img = img + _uniform(-self.brightness_delta, self.brightness_delta)
        contrast_first = _chance(0.5)
        if contrast_first and _chance(0.5):
            img = img * _uniform(*self.contrast_range)
        do_sat, do_hue = _chance(0.5), _chance(0.5)
        sat = _uniform(*self.saturation_range) if do_sat else 1.0
        hue = _randint(-self.hue_delta, self.hue_delta) if do_hue else 0
        if do_sat or do_hue:
            hsv = np.asarray(Image.fromarray(_to_uint8(img)).convert("HSV")).astype(np.float32)
            if do_sat:
                hsv[..., 1] = hsv[..., 1] * sat
            if do_hue:  # PIL's hue has 256 steps per turn, OpenCV's 180
                hsv[..., 0] = np.mod(hsv[..., 0] + hue * 256.0 / 180.0, 256.0)
            img = np.asarray(Image.fromarray(_to_uint8(hsv), "HSV").convert("RGB"),
                             np.float32)
        if not contrast_first and _chance(0.5):
            img = img * _uniform(*self.contrast_range)
        out = dict(sample)
        out["image"] = _to_uint8(img)
        return out

    def __repr__(self):
        return "PhotoMetricDistortion()"


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


class Normalize:
    """uint8 RGB -> float32 ``(x / 255 - mean) / std`` (still HWC), by
    :func:`hfgd_lab.data.preprocess.normalize_array` (the one normalisation of every
    path). ``mean``/``std`` are the backbone's (``HFGDConfig.normalization``)."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)

    def __call__(self, sample):
        out = dict(sample)
        out["image"] = normalize_array(sample["image"], self.mean, self.std)
        return out

    def __repr__(self):
        return f"Normalize(mean={self.mean}, std={self.std})"


class Pad:
    """Pad bottom/right up to ``size`` (no-op where already larger). Masks get
    ``ignore_index``; images get the mean colour: ``mean * 255`` while uint8, 0 once
    normalised (float), so padding never looks like content."""

    def __init__(self, size, ignore_index: int = IGNORE_INDEX, mean=IMAGENET_MEAN):
        self.size = _pair(size)
        self.ignore_index = ignore_index
        self.mean = np.asarray(mean, np.float32)

    def __call__(self, sample):
        image = sample["image"]
        h, w = image.shape[:2]
        ph, pw = max(self.size[0] - h, 0), max(self.size[1] - w, 0)
        if ph == 0 and pw == 0:
            return sample
        out = dict(sample)
        fill = (np.round(self.mean * 255).astype(np.uint8) if image.dtype == np.uint8
                else np.zeros(3, image.dtype))
        padded = np.empty((h + ph, w + pw, image.shape[2]), image.dtype)
        padded[...] = fill
        padded[:h, :w] = image
        out["image"] = padded
        if "mask" in sample:
            mask = sample["mask"]
            out["mask"] = np.full((h + ph, w + pw), self.ignore_index, mask.dtype)
            out["mask"][:h, :w] = mask
        return out

    def __repr__(self):
        return f"Pad(size={self.size}, ignore_index={self.ignore_index})"


class ToTensor:
    """image HWC -> FloatTensor (3, H, W) (apply ``Normalize`` first); mask ->
    LongTensor (H, W). Other keys pass through."""

    def __call__(self, sample):
        out = dict(sample)
        image = np.ascontiguousarray(sample["image"].transpose(2, 0, 1))
        out["image"] = torch.from_numpy(image).float()
        if "mask" in sample:
            # .astype copies: masks decoded by PIL are read-only, which torch warns about
            out["mask"] = torch.from_numpy(np.asarray(sample["mask"]).astype(np.int64))
        return out

    def __repr__(self):
        return "ToTensor()"


def build_train_transform(crop_size, scale=(0.5, 2.0), base_size=None,
                          cat_max_ratio: float = 0.75, flip: bool = True,
                          photometric: bool = True, mean=IMAGENET_MEAN,
                          std=IMAGENET_STD) -> Compose:
    """mmseg's training pipeline: resize, crop, flip, photometric, normalise (with the
    backbone's ``mean``/``std``), pad."""
    steps = [RandomResize(scale, base_size), RandomCrop(crop_size, cat_max_ratio)]
    if flip:
        steps.append(RandomFlip(0.5))
    if photometric:
        steps.append(PhotoMetricDistortion())
    steps += [Normalize(mean, std), Pad(crop_size, mean=mean), ToTensor()]
    return Compose(steps)


def build_eval_transform(mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Compose:
    """Whole image, normalised with the backbone's ``mean``/``std``, as tensors (sliding
    windows are the engine's job)."""
    return Compose([Normalize(mean, std), ToTensor()])
