"""SegDataset: the one dataset interface the engine, the analysis tools and the app use.

A dataset is a list of (image file, mask file) pairs plus a label mapping; ``load(i)``
reads one pair through the project's one image reader and one label-map reader
(:mod:`hfgd_lab.data.io`: bit depth by format, alpha on white, EXIF applied to both,
lossless masks only) and applies the mapping; ``ds[i]`` also runs the transform. Missing
files fail at construction (one directory listing, no per-file stat); what needs the
pixels (sizes, label values) is checked at load time, cheaply, and every message names
the file.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .classes import IGNORE_INDEX
from .io import ImageError, LabelMapError, read_image, read_label_map
from .transforms import build_eval_transform


class DatasetError(ValueError):
    """A dataset file is unreadable or inconsistent; the message names the file."""


def list_files(folder: Path, suffixes: tuple[str, ...], recursive: bool = False) -> dict[str, Path]:
    """``{key: path}`` for the files in ``folder`` ending in one of ``suffixes``; the key
    is the path relative to ``folder`` without the suffix. When two files share a key,
    the earlier suffix wins (``x_labelTrainIds.png`` over ``x.png``). One directory walk,
    not a stat per expected file, so that 100k-image datasets open in a second."""
    found: dict[str, tuple[int, Path]] = {}
    walk = os.walk(folder) if recursive else [(str(folder), None, os.listdir(folder))]
    for dirpath, _, files in walk:
        rel = os.path.relpath(dirpath, folder)
        for name in files:
            for rank, suffix in enumerate(suffixes):
                if name.endswith(suffix):
                    key = name[: -len(suffix)] if rel == "." else f"{rel}/{name[: -len(suffix)]}"
                    if key not in found or rank < found[key][0]:
                        found[key] = (rank, Path(dirpath) / name)
                    break
    return {key: found[key][1] for key in sorted(found)}


def pair_files(images: dict[str, Path], masks: dict[str, Path], image_dir: Path,
               mask_dir: Path, mask_hint: str) -> list[tuple[Path, Path]]:
    """Match images to masks by key; an image without a mask fails, naming it."""
    if not images:
        raise FileNotFoundError(f"{image_dir}: no images found")
    missing = [k for k in images if k not in masks]
    if missing:
        first = images[missing[0]]
        raise FileNotFoundError(
            f"{first}: image has no mask (expected {mask_dir / (missing[0] + mask_hint)}); "
            f"{len(missing)} of {len(images)} images in {image_dir} have none")
    return [(images[k], masks[k]) for k in images]


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: {what} directory not found")
    return path


def apply_lut(lut: np.ndarray, mask: np.ndarray, path) -> np.ndarray:
    """Raw label -> train id through a 256-entry table, for a label map of any integer
    type; values the table does not cover fail, naming them."""
    if mask.dtype != np.uint8:
        if mask.size and int(mask.max()) >= len(lut):
            values = np.unique(mask[mask >= len(lut)])
            shown = ", ".join(str(v) for v in values[:10]) + (" ..." if values.size > 10 else "")
            raise DatasetError(f"{path}: raw label values {shown} are outside this dataset's "
                               f"label table (raw values 0..{len(lut) - 1})")
        mask = mask.astype(np.intp)
    return lut[mask]


class SegDataset:
    """Base class of every dataset: ``load(i)`` -> (image, mask), ``ds[i]`` -> tensors.

    Subclasses set ``CLASSES`` and ``PALETTE`` and fill ``self.samples`` with
    ``(image path, mask path)`` pairs; a raw-label mapping is a 256-entry lookup table
    returned by ``label_lut(mask_path)`` (``None``: labels are train ids already).
    Procedural datasets override ``__len__``, ``load`` and ``name`` instead.

    Args:
        root: dataset directory.
        split: which part (e.g. ``"train"``, ``"val"``).
        transform: callable on a sample dict; ``None`` -> :func:`build_eval_transform`.
    """

    CLASSES: tuple = ()
    PALETTE: np.ndarray = np.zeros((0, 3), np.uint8)
    ignore_index: int = IGNORE_INDEX

    def __init__(self, root=None, split: str = "train", transform=None):
        self.root = Path(root) if root is not None else None
        self.split = split
        self.transform = transform
        self.samples: list[tuple[Path, Path]] = []

    # -- what subclasses customise -------------------------------------------------
    def label_lut(self, mask_path: Path) -> np.ndarray | None:
        """Raw label -> train id lookup table for this mask file (None: keep)."""
        return None

    def sample_name(self, image_path: Path) -> str:
        return image_path.stem

    # -- the interface -------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.CLASSES)

    def __len__(self) -> int:
        return len(self.samples)

    def name(self, i: int) -> str:
        """The sample's file stem (what predictions are saved as)."""
        return self.sample_name(self.samples[i][0])

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(RGB uint8 (H, W, 3), train ids (H, W), 255 = ignore), checked."""
        image_path, mask_path = self.samples[i]
        if not image_path.is_file():
            raise FileNotFoundError(f"{image_path}: image file not found")
        if not mask_path.is_file():
            raise FileNotFoundError(f"{mask_path}: mask file not found")
        try:
            image = read_image(image_path, max_side=None, min_side=1).array
            mask = read_label_map(mask_path)
        except (ImageError, LabelMapError) as e:
            raise DatasetError(str(e)) from None
        if image.shape[:2] != mask.shape:
            raise DatasetError(
                f"{mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} (WxH) differs from "
                f"image {image_path} size {image.shape[1]}x{image.shape[0]} (both upright, "
                "after their EXIF orientation)")
        lut = self.label_lut(mask_path)
        if lut is not None:
            mask = apply_lut(lut, mask, mask_path)
        self.check_labels(mask, mask_path)
        return image, mask

    def check_labels(self, mask: np.ndarray, path) -> None:
        """Every value must be a class index (< K) or the ignore index."""
        k = self.num_classes
        if mask.size and (int(mask.max()) >= k or int(mask.min()) < 0):
            values = np.unique(mask)
            bad = values[((values >= k) | (values < 0)) & (values != self.ignore_index)]
            if bad.size:
                shown = ", ".join(str(v) for v in bad[:10]) + (" ..." if bad.size > 10 else "")
                raise DatasetError(
                    f"{path}: label values {shown} out of range for {k} classes "
                    f"(after label mapping, values must be < {k} or == {self.ignore_index})")

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            if -len(self) <= i < 0:
                i += len(self)
            else:
                raise IndexError(f"index {i} out of range for {len(self)} samples")
        image, mask = self.load(i)
        sample = {"image": image, "mask": mask, "name": self.name(i)}
        if self.transform is None:
            self.transform = build_eval_transform()
        return self.transform(sample)

    def __repr__(self) -> str:
        root = f", root={str(self.root)!r}" if self.root is not None else ""
        return (f"{type(self).__name__}(split={self.split!r}{root}, "
                f"{len(self)} samples, {self.num_classes} classes)")
