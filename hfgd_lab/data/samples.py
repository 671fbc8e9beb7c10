"""Example images, one home for the app and the notebooks: built-in scenes with their
ground truth, and real photographs that ship inside installed packages, each with its
credit.

Photos (all offline): scikit-image's ``astronaut``, ``chelsea``, ``coffee``, ``rocket``
(public domain / CC0 per scikit-image's data docstrings), scikit-learn's ``china`` and
``flower`` (CC BY 2.0, Flickr), matplotlib's ``grace_hopper`` (public domain). Every
photo is read through :func:`hfgd_lab.data.read_image`, like an upload.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import matplotlib
import numpy as np
import skimage
import sklearn.datasets

from .io import read_image
from .scenes import SceneDataset

__all__ = ["Sample", "PhotoSource", "PHOTOS", "photo_sources", "photo_samples",
           "scene_samples"]


@dataclass
class Sample:
    """An image to look at, with ground truth when it has one.

    Attributes:
        name: how it is shown. image: (H, W, 3) uint8.
        mask: (H, W) int64 ground truth (scenes), else None.
        background: (H, W) the background class under every pixel (scenes only: the
            context that decides an object's class), else None.
        source: where it comes from; credit: attribution for photos.
        kind: ``"scene"`` or ``"photo"``.
    """

    name: str
    image: np.ndarray
    mask: Optional[np.ndarray] = None
    background: Optional[np.ndarray] = None
    source: str = ""
    credit: str = ""
    kind: str = "scene"


@dataclass(frozen=True)
class PhotoSource:
    """A photo file shipped with an installed package."""

    name: str
    path: Path
    credit: str


_SKIMAGE_CREDIT = {
    "astronaut": "scikit-image sample data: astronaut Eileen Collins (NASA, public domain)",
    "chelsea": "scikit-image sample data: Chelsea the cat (Stefan van der Walt, CC0)",
    "coffee": "scikit-image sample data: a cup of coffee (Rachel Michetti, CC0)",
    "rocket": "scikit-image sample data: DSCOVR launch on Falcon 9 (SpaceX, public domain)",
}
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "china", "flower", "grace_hopper")


def photo_sources() -> list[PhotoSource]:
    """The real photographs available offline, in :data:`PHOTOS` order."""
    found = {}
    data = Path(skimage.__file__).parent / "data"
    for stem, credit in _SKIMAGE_CREDIT.items():
        for ext in (".png", ".jpg"):
            if (data / f"{stem}{ext}").is_file():
                found[stem] = PhotoSource(stem, data / f"{stem}{ext}", credit)
                break
    images = Path(sklearn.datasets.__file__).parent / "images"
    for stem, author in (("china", "danielbuechele"), ("flower", "vultilion")):
        if (images / f"{stem}.jpg").is_file():
            found[stem] = PhotoSource(stem, images / f"{stem}.jpg",
                                      f"scikit-learn sample image, {author} on Flickr, CC BY 2.0")
    grace = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if grace.is_file():
        found["grace_hopper"] = PhotoSource("grace_hopper", grace,
                                            "matplotlib sample data (Grace Hopper, public domain)")
    return [found[n] for n in PHOTOS if n in found]


def photo_samples(names: Sequence[str] = ("chelsea", "coffee"),
                  max_side: Optional[int] = None) -> list[Sample]:
    """Real photographs by name (:data:`PHOTOS`), read like uploads, optionally capped
    to ``max_side`` on the longer side.

    Raises:
        KeyError: a name that is not available offline (the message lists them).
    """
    sources = {p.name: p for p in photo_sources()}
    out = []
    for name in names:
        stem = Path(name).stem
        if stem not in sources:
            raise KeyError(f"no offline photo named {name!r}; available: {', '.join(sources)}")
        src = sources[stem]
        img = read_image(src.path, max_side=max_side).array
        out.append(Sample(f"photo: {stem}", img, source=str(src.path), credit=src.credit,
                          kind="photo"))
    return out


def scene_samples(n: int, size=192, seed: int = 1, split: str = "val",
                  variation: float = 1.0, start: int = 0) -> list[Sample]:
    """Scenes ``start .. start+n-1`` of the built-in generator (image, labels, context)."""
    ds = SceneDataset(num=start + n, size=size, seed=seed, split=split, variation=variation)
    out = []
    for i in range(start, start + n):
        s = ds.scene(i)
        out.append(Sample(f"scene {i}", s.image, s.mask.astype(np.int64), s.background,
                          f"scenes(seed={seed}, split={split!r}, size={size})",
                          "built-in procedural scene", "scene"))
    return out
