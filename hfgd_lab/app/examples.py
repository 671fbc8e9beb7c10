"""The app's example images, from :mod:`hfgd_lab.data.samples` (the notebooks' ones):
built-in scenes with their ground truth, and real photographs shipped with installed
packages, each with its credit. They are written once at start-up into the server's
private folder (which Gradio may serve), and an upload of the same bytes is recognised
by its digest (a scene's ground truth then scores it; a photo is named as one).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from ..analysis import digest_file
from ..data.samples import photo_sources, scene_samples

__all__ = ["Example", "make_examples", "SCENES"]

# (index, size) of the scene examples, from a split the models never saw
SCENES = ((0, 192), (3, 192), (5, 256), (7, 384))
SCENE_SPLIT = "examples"


@dataclass
class Example:
    """One example image on disk.

    Attributes:
        name: caption under its thumbnail (short). title: how the banner names it.
        path: the file. kind: ``"scene"`` or ``"photo"``.
        mask: (H, W) int64 ground truth of a scene, else None.
        digest: sha1 of the file (how an upload of it is recognised).
        credit: where it comes from and its licence.
    """

    name: str
    title: str
    path: Path
    kind: str
    mask: Optional[np.ndarray]
    digest: str
    credit: str = ""


def make_examples(folder, scenes=SCENES, photos: bool = True) -> list[Example]:
    """Write the example images into ``folder`` (created if needed) and describe them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for index, size in scenes:
        s = scene_samples(1, size=size, seed=0, split=SCENE_SPLIT, start=index)[0]
        path = folder / f"scene_{size}px_{index}.png"
        Image.fromarray(s.image).save(path)
        out.append(Example(f"scene {index}, {size} px", f"scene {index} ({size} px)", path,
                           "scene", s.mask, digest_file(path), s.credit))
    if photos:
        for src in photo_sources():
            path = folder / f"photo_{src.name}{src.path.suffix}"
            shutil.copyfile(src.path, path)
            title = src.name.replace("_", " ")
            out.append(Example(title, f"photo: {title}", path, "photo", None,
                               digest_file(path), src.credit))
    return out
