"""Data: reading files, preprocessing, datasets, transforms and the built-in scenes.

- :mod:`.io`: the one image reader and the one label-map reader (every path uses them);
- :mod:`.preprocess`: the backbone's normalisation and resizing caps, pixels -> tensor;
- ``build_dataset(name, root, split, transform, **kwargs)``: every dataset is a
  :class:`SegDataset` with ``CLASSES``, ``PALETTE``, ``load(i)`` (uint8 image, train-id
  mask, 255 = ignore), ``name(i)`` and ``ds[i]`` (transformed tensors);
- :mod:`.samples`: example images (scenes with ground truth, real photos with credits).
"""
from __future__ import annotations

from .base import DatasetError, SegDataset
from .classes import IGNORE_INDEX, default_palette
from .datasets import (ADE20KDataset, CityscapesDataset, COCOStuff164kDataset, FolderDataset,
                       PascalContext59Dataset, VOC2012Dataset)
from .scenes import SCENE_CLASSES, TEXTURES, SceneDataset, generate_scene, render_scene
from .io import (DEFAULT_MAX_SIDE, ImageError, LabelMapError, LoadedImage, read_image,
                 read_label_map)
from .preprocess import (IMAGENET_MEAN, IMAGENET_STD, as_uint8_image, denormalize_image,
                         fit_max_side, normalize_array, normalize_image, prepare_image,
                         resize_image, resize_labels)
from .transforms import build_eval_transform, build_train_transform

DATASETS = {
    "ade20k": ADE20KDataset,
    "pascal_context59": PascalContext59Dataset,
    "coco_stuff164k": COCOStuff164kDataset,
    "cityscapes": CityscapesDataset,
    "voc2012": VOC2012Dataset,
    "folder": FolderDataset,
    "scenes": SceneDataset,
}


def build_dataset(name: str, root=None, split: str = "train", transform=None,
                  **kwargs) -> SegDataset:
    """A dataset by name (see ``DATASETS``). ``root`` is required except for
    ``"scenes"``, which is generated (kwargs: ``num``, ``size``, ``seed``,
    ``variation``, ``targets``)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    if name == "scenes":
        return SceneDataset(split=split, transform=transform, root=root, **kwargs)
    if root is None:
        raise ValueError(f"dataset {name!r} needs a root directory")
    return DATASETS[name](root, split=split, transform=transform, **kwargs)


__all__ = ["build_dataset", "DATASETS", "SegDataset", "DatasetError", "SceneDataset",
           "generate_scene", "render_scene", "SCENE_CLASSES", "TEXTURES", "ADE20KDataset",
           "PascalContext59Dataset", "COCOStuff164kDataset", "CityscapesDataset",
           "VOC2012Dataset", "FolderDataset", "build_train_transform", "build_eval_transform",
           "IMAGENET_MEAN", "IMAGENET_STD", "IGNORE_INDEX", "default_palette",
           "read_image", "read_label_map", "ImageError", "LabelMapError", "LoadedImage",
           "DEFAULT_MAX_SIDE", "as_uint8_image", "normalize_array", "normalize_image",
           "denormalize_image", "fit_max_side", "resize_image", "resize_labels",
           "prepare_image"]
