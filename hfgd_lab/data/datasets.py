"""The real benchmarks, in mmsegmentation's directory layouts and label conventions,
plus ``FolderDataset`` for a user's own data.

Layouts (``root`` is the directory given to ``build_dataset``):

- ``ade20k``: ``images/{training,validation}/*.jpg``, ``annotations/{...}/*.png``;
  150 classes, 0 ("other") -> ignore, v -> v - 1. Splits ``train``/``val`` map to
  ``training``/``validation``.
- ``pascal_context59``: ``JPEGImages/*.jpg``, ``SegmentationClassContext/*.png``,
  ``ImageSets/SegmentationContext/{train,val}.txt``; 59 classes, 0 -> ignore, v -> v - 1.
- ``coco_stuff164k``: ``images/{train2017,val2017}/*.jpg`` and
  ``annotations/{train2017,val2017}/`` holding ``*_labelTrainIds.png`` (0..170, 255) or
  raw stuffthingmaps ``*.png`` (ids 0..181, mapped to the 171 train ids; unused -> ignore).
  Train ids are preferred when both exist.
- ``cityscapes``: ``leftImg8bit/{train,val}/<city>/*_leftImg8bit.png`` and
  ``gtFine/{train,val}/<city>/*_gtFine_labelTrainIds.png`` (19 classes), or raw
  ``*_gtFine_labelIds.png`` mapped with the official table (unmapped -> ignore).
- ``voc2012``: ``JPEGImages/*.jpg``, ``SegmentationClass/*.png`` (palette PNGs, 255 =
  object border, ignored), ``ImageSets/Segmentation/<split>.txt``; 21 classes with
  background. ``aug=True`` reads masks from ``SegmentationClassAug`` (use with a split
  list such as ``aug.txt`` / ``trainaug.txt``).
- ``folder`` (your own data)::

      root/classes.txt            one class per line: "name" or "name r g b"
      root/images/<split>/*.jpg   (.jpg, .jpeg or .png)
      root/masks/<split>/*.png    same stem as the image; values = line index in
                                  classes.txt, 255 = ignore (mode L or P PNG)

  Without ``images/<split>`` (and no other sub-folder), ``root/images`` and
  ``root/masks`` are used directly. Lines of ``classes.txt`` that are empty or start
  with ``#`` are skipped; names may contain spaces. ``reduce_zero_label=True`` treats
  0 as ignore and shifts the rest down by one (for masks where 0 means "unlabelled").
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import classes as C
from .base import DatasetError, SegDataset, list_files, pair_files, require_dir

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


def _palette(colours) -> np.ndarray:
    return np.asarray(colours, dtype=np.uint8).reshape(-1, 3)


def _split_dir(split: str, aliases: dict) -> str:
    return aliases.get(split, split)


class _PairedDirs(SegDataset):
    """Images and masks in two parallel directories, matched by file name."""

    image_dir: str
    mask_dir: str
    image_suffixes: tuple = (".jpg",)
    mask_suffixes: tuple = (".png",)
    split_aliases: dict = {}
    recursive = False

    def __init__(self, root, split="train", transform=None):
        super().__init__(root, split, transform)
        root = require_dir(Path(root), f"{type(self).__name__} root")
        sub = _split_dir(split, self.split_aliases)
        image_dir = require_dir(root / self.image_dir / sub, f"split {split!r} image")
        mask_dir = require_dir(root / self.mask_dir / sub, f"split {split!r} mask")
        images = list_files(image_dir, self.image_suffixes, self.recursive)
        masks = list_files(mask_dir, self.mask_suffixes, self.recursive)
        self.samples = pair_files(images, masks, image_dir, mask_dir, self.mask_suffixes[0])


class _SplitList(SegDataset):
    """Images and masks named by the ids of a split list (VOC, Pascal Context)."""

    image_dir = "JPEGImages"
    mask_dir: str
    list_dir: str

    def __init__(self, root, split="train", transform=None):
        super().__init__(root, split, transform)
        root = require_dir(Path(root), f"{type(self).__name__} root")
        list_file = root / self.list_dir / f"{split}.txt"
        if not list_file.is_file():
            have = sorted(p.stem for p in (root / self.list_dir).glob("*.txt"))
            raise FileNotFoundError(f"{list_file}: split list not found"
                                    + (f" (available: {', '.join(have)})" if have else ""))
        ids = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
        if not ids:
            raise DatasetError(f"{list_file}: split list is empty")
        image_dir = require_dir(root / self.image_dir, "image")
        mask_dir = require_dir(root / self.mask_dir, "mask")
        images, masks = list_files(image_dir, (".jpg",)), list_files(mask_dir, (".png",))
        absent = [i for i in ids if i not in images]
        if absent:
            raise FileNotFoundError(
                f"{image_dir / (absent[0] + '.jpg')}: image listed in {list_file} not found "
                f"({len(absent)} of {len(ids)} listed images missing)")
        self.samples = pair_files({i: images[i] for i in ids}, masks, image_dir, mask_dir,
                                  ".png")


class ADE20KDataset(_PairedDirs):
    """ADE20K (SceneParsing, ``ADEChallengeData2016``): 150 classes."""

    CLASSES = C.ADE20K_CLASSES
    PALETTE = _palette(C.ADE20K_PALETTE)
    image_dir, mask_dir = "images", "annotations"
    split_aliases = {"train": "training", "val": "validation"}
    _lut = C.reduce_zero_label_lut()

    def label_lut(self, mask_path):
        return self._lut


class PascalContext59Dataset(_SplitList):
    """Pascal Context, the 59-class benchmark (background ignored)."""

    CLASSES = C.PASCAL_CONTEXT59_CLASSES
    PALETTE = _palette(C.PASCAL_CONTEXT59_PALETTE)
    mask_dir, list_dir = "SegmentationClassContext", "ImageSets/SegmentationContext"
    _lut = C.reduce_zero_label_lut()

    def label_lut(self, mask_path):
        return self._lut


class COCOStuff164kDataset(_PairedDirs):
    """COCO-Stuff 164k: 171 classes (80 things + 91 stuff)."""

    CLASSES = C.COCO_STUFF_CLASSES
    PALETTE = _palette(C.COCO_STUFF_PALETTE)
    image_dir, mask_dir = "images", "annotations"
    mask_suffixes = ("_labelTrainIds.png", ".png")
    split_aliases = {"train": "train2017", "val": "val2017"}
    _raw_lut = C.coco_stuff_lut()

    def label_lut(self, mask_path):
        return None if mask_path.name.endswith("_labelTrainIds.png") else self._raw_lut


class CityscapesDataset(_PairedDirs):
    """Cityscapes, fine annotations: 19 classes."""

    CLASSES = C.CITYSCAPES_CLASSES
    PALETTE = _palette(C.CITYSCAPES_PALETTE)
    image_dir, mask_dir = "leftImg8bit", "gtFine"
    image_suffixes = ("_leftImg8bit.png",)
    mask_suffixes = ("_gtFine_labelTrainIds.png", "_gtFine_labelIds.png")
    recursive = True
    _raw_lut = C.table_lut(C.CITYSCAPES_ID_TO_TRAINID)

    def label_lut(self, mask_path):
        return None if mask_path.name.endswith("_labelTrainIds.png") else self._raw_lut

    def sample_name(self, image_path):
        return image_path.name[: -len("_leftImg8bit.png")]


class VOC2012Dataset(_SplitList):
    """Pascal VOC 2012: 20 object classes + background."""

    CLASSES = C.VOC_CLASSES
    PALETTE = C.voc_colormap(21)
    mask_dir, list_dir = "SegmentationClass", "ImageSets/Segmentation"

    def __init__(self, root, split="train", transform=None, aug: bool = False):
        if aug:
            self.mask_dir = "SegmentationClassAug"
        super().__init__(root, split, transform)


def read_classes_txt(path: Path) -> tuple[tuple, np.ndarray]:
    """``classes.txt`` -> (names, palette); lines are ``name`` or ``name r g b``."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: classes.txt not found (one class name per line, "
                                "optionally followed by r g b)")
    names, colours = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) >= 4 and all(p.lstrip("-").isdigit() for p in parts[-3:]):
            rgb = [int(p) for p in parts[-3:]]
            if not all(0 <= v <= 255 for v in rgb):
                raise DatasetError(f"{path}:{n}: colour {rgb} is not 0..255")
            names.append(" ".join(parts[:-3]))
            colours.append(rgb)
        else:
            names.append(line)
            colours.append(None)
    if not names:
        raise DatasetError(f"{path}: no classes")
    if len(names) > 255:
        raise DatasetError(f"{path}: {len(names)} classes; at most 255 (255 = ignore)")
    fallback = C.default_palette(len(names))
    palette = np.array([c if c is not None else fallback[i] for i, c in enumerate(colours)],
                       np.uint8)
    return tuple(names), palette


class FolderDataset(SegDataset):
    """Your own data: ``images/``, ``masks/`` and ``classes.txt`` (see module docstring)."""

    def __init__(self, root, split="train", transform=None, reduce_zero_label: bool = False):
        super().__init__(root, split, transform)
        root = require_dir(Path(root), "folder dataset root")
        self.CLASSES, self.PALETTE = read_classes_txt(root / "classes.txt")
        images_root = require_dir(root / "images", "images")
        if (images_root / split).is_dir():
            image_dir, mask_dir = images_root / split, root / "masks" / split
        else:
            subdirs = sorted(p.name for p in images_root.iterdir() if p.is_dir())
            if subdirs:
                raise FileNotFoundError(f"{images_root / split}: split folder not found "
                                        f"(available: {', '.join(subdirs)})")
            image_dir, mask_dir = images_root, root / "masks"
        require_dir(mask_dir, "masks")
        images = list_files(image_dir, IMAGE_SUFFIXES)
        masks = list_files(mask_dir, (".png",))
        self.samples = pair_files(images, masks, image_dir, mask_dir, ".png")
        self._lut = C.reduce_zero_label_lut() if reduce_zero_label else None

    def label_lut(self, mask_path):
        return self._lut
