"""Example images: built-in procedural scenes (with their ground truth) and real photos
that ship with installed packages (scikit-learn's sample images, matplotlib's sample
data). Written at startup into a temporary folder, which Gradio serves as examples
without any ``allowed_paths``.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .state import digest_file

__all__ = ["Example", "make_examples", "photo_sources"]

# (split, index, size) of the scene examples: a held-out split the models never saw
SCENES = (("examples", 0, 192), ("examples", 3, 192), ("examples", 5, 256),
          ("examples", 7, 384))


@dataclass
class Example:
    """One example image on disk."""

    name: str
    path: Path
    kind: str                       # "scene" or "photo"
    mask: Optional[np.ndarray]      # ground truth (scenes), at the image's size
    digest: str                     # sha1 of the file, how an upload is recognised
    credit: str = ""


def photo_sources() -> list[tuple[str, Path, str]]:
    """(name, path, credit) of real photographs shipped with installed packages."""
    out = []
    try:
        import sklearn.datasets
        folder = Path(sklearn.datasets.__file__).parent / "images"
        for f, author in (("china.jpg", "danielbuechele"), ("flower.jpg", "vultilion")):
            if (folder / f).is_file():
                out.append((f"photo: {Path(f).stem}", folder / f,
                            f"scikit-learn sample image, {author} on Flickr, CC BY 2.0"))
    except ImportError:
        pass
    try:
        import matplotlib
        f = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        if f.is_file():
            out.append(("photo: grace_hopper", f,
                        "matplotlib sample data (Grace Hopper, public domain)"))
    except ImportError:
        pass
    return out


def make_examples(folder=None, scenes=SCENES) -> list[Example]:
    """Write the example images into ``folder`` (default: a new temporary folder)."""
    from PIL import Image

    from ..data.scenes import SceneDataset

    folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="hfgd-lab-examples-"))
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for split, index, size in scenes:
        ds = SceneDataset(num=index + 1, size=size, seed=0, split=split)
        image, mask = ds.load(index)
        path = folder / f"scene_{size}px_{index}.png"
        Image.fromarray(image).save(path)
        out.append(Example(f"scene {index} ({size} px)", path, "scene", np.asarray(mask),
                           digest_file(path), "built-in procedural scene"))
    for name, src, credit in photo_sources():
        path = folder / src.name
        shutil.copyfile(src, path)
        out.append(Example(name, path, "photo", None, digest_file(path), credit))
    return out
