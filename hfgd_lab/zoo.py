"""Bundled models: small checkpoints shipped inside the package, loaded by name.

``load_pretrained(name)`` finds ``hfgd_lab/weights/<name>.safetensors`` + ``.json``
wherever the package is installed; ``list_pretrained()`` names what is there.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .engine.checkpoint import (FORMAT, CheckpointError, checkpoint_paths, load_checkpoint,
                                read_card)

__all__ = ["list_pretrained", "load_pretrained", "pretrained_card", "resolve_model",
           "Pretrained", "DEFAULT_MODEL", "WEIGHTS_DIR", "pretrained_backbone",
           "BUNDLED_VARIANTS", "SCENES_MODEL", "write_stand_ins"]

# HFGD_LAB_WEIGHTS_DIR points the zoo at another folder (tests, development).
WEIGHTS_DIR = Path(os.environ.get("HFGD_LAB_WEIGHTS_DIR")
                   or Path(__file__).resolve().parent / "weights")
DEFAULT_MODEL = "hfgd_scenes_sg"
DEFAULT_BACKBONE = "scenes_backbone"
# bundled name -> (variant, config switches), as benchmarks/stop_gradient.py bundles them
BUNDLED_VARIANTS = {"hfgd_scenes_sg": ("hfgd_sg", {"stop_gradient": True}),
                    "hfgd_scenes_nosg": ("hfgd_nosg", {"stop_gradient": False}),
                    "semantic_fpn_scenes": ("semantic_fpn", {"arch": "semantic_fpn"})}
# the bundled models' architecture: the model section of configs/zoo/finetune.yaml
SCENES_MODEL = dict(backbone="convnext_atto",
                    backbone_kwargs={"dims": [32, 64, 128, 256], "depths": [2, 2, 4, 2]},
                    num_classes=10, embed_dim=128, cae_depth=2, cae_heads=4,
                    decoder_channels=64, output_stride=4, dropout=0.1)


@dataclass
class Pretrained:
    """A loaded bundled model with what a user needs beside the weights."""
    name: str
    model: object
    classes: tuple
    palette: np.ndarray
    card: dict

    def __iter__(self):  # model, classes, palette = load_pretrained(...)
        return iter((self.model, self.classes, self.palette))


def _is_model_card(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def list_pretrained() -> list[str]:
    """Names of the bundled checkpoints (default model first)."""
    names = sorted(p.stem for p in WEIGHTS_DIR.glob("*.json")
                   if (WEIGHTS_DIR / f"{p.stem}.safetensors").is_file() and _is_model_card(p))
    return sorted(names, key=lambda n: n != DEFAULT_MODEL)


def pretrained_backbone(name: str = DEFAULT_BACKBONE) -> Path:
    """Path of a bundled pretrained backbone (for ``backbone_weights=``), e.g. the one
    the bundled models were fine-tuned from; its JSON card sits beside it."""
    path = WEIGHTS_DIR / f"{name}.safetensors"
    if not path.is_file():
        raise CheckpointError(f"no bundled backbone named {name!r} in {WEIGHTS_DIR}")
    return path


def pretrained_card(name: str) -> dict:
    _check_name(name)
    return read_card(WEIGHTS_DIR / name)


def _check_name(name: str) -> None:
    available = list_pretrained()
    if name not in available:
        raise CheckpointError(f"no bundled model named {name!r}; available: "
                              f"{', '.join(available) or 'none (run the model-zoo build)'}")


def load_pretrained(name: str = DEFAULT_MODEL, device: str = "cpu") -> Pretrained:
    """Load bundled model ``name`` in eval mode with its classes and palette."""
    _check_name(name)
    model, card = load_checkpoint(WEIGHTS_DIR / name, map_location=device)
    return Pretrained(name, model, tuple(card.get("classes") or ()),
                      np.asarray(card.get("palette") or [], dtype=np.uint8), card)


def resolve_model(spec: str, device: str = "cpu"):
    """A bundled model name or a checkpoint path -> (model, card, stem for outputs)."""
    if spec in list_pretrained():
        p = load_pretrained(spec, device)
        return p.model, p.card, Path(spec)
    model, card = load_checkpoint(spec, map_location=device)
    return model, card, checkpoint_paths(spec)["card"].with_suffix("")


def write_stand_ins(folder, names=tuple(BUNDLED_VARIANTS), seed: int = 0) -> Path:
    """Random-weight checkpoints under the bundled names, and a random
    ``scenes_backbone``, in ``folder``: so that tests, benchmarks and notebook development
    never depend on the trained weights (point ``HFGD_LAB_WEIGHTS_DIR`` at the folder).

    Cards are shaped like the real ones (metrics, variant, the stop-gradient summary) so
    every screen that reads them can be exercised; their numbers are made up, and
    ``"stand_in": true`` says so. Files already there are kept. Returns the folder."""
    import torch

    from .config import HFGDConfig
    from .data.scenes import SCENE_CLASSES, SCENE_PALETTE
    from .engine.checkpoint import save_checkpoint
    from .models import build_model
    from .models.backbone import Backbone, save_backbone_weights

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    summary = {"title": "random stand-in", "seeds": 3, "variants": {
        v: {"val_mIoU": {"mean": 50.0 + i, "std": 1.0},
            **{f"cka_C{s}": {"mean": 0.9 - 0.02 * s, "std": 0.01} for s in (2, 3, 4, 5)}}
        for i, v in enumerate(("semantic_fpn", "hfgd_nosg", "hfgd_sg"))}}
    for i, name in enumerate(names):
        if (folder / f"{name}.json").is_file():
            continue
        torch.manual_seed(seed + i)
        variant, switches = BUNDLED_VARIANTS.get(name, (name, {}))
        model = build_model(HFGDConfig(**{**SCENES_MODEL, **switches})).eval()
        save_checkpoint(folder / name, model, classes=SCENE_CLASSES, palette=SCENE_PALETTE,
                        dtype=torch.float16,
                        metrics={"val_mIoU": 40.0 + i, "val_mAcc": 50.0 + i,
                                 "val_aAcc": 70.0 + i, "val_IoU": [40.0] * 10,
                                 "val_images": 100},
                        extra={"stand_in": True, "dataset": "scenes", "variant": variant,
                               "trained_on": "random weights (a stand-in for tests; not trained)",
                               "sg_experiment": summary})
    if not (folder / f"{DEFAULT_BACKBONE}.json").is_file():
        torch.manual_seed(seed)
        bb = Backbone(SCENES_MODEL["backbone"], **SCENES_MODEL["backbone_kwargs"])
        save_backbone_weights(bb, folder / f"{DEFAULT_BACKBONE}.safetensors",
                              metadata={"backbone": SCENES_MODEL["backbone"]})
        (folder / f"{DEFAULT_BACKBONE}.json").write_text(json.dumps(
            {"kind": "hfgd-lab backbone weights", "stand_in": True,
             "config": {"backbone": SCENES_MODEL["backbone"],
                        "backbone_kwargs": SCENES_MODEL["backbone_kwargs"]},
             "backbone_kwargs": SCENES_MODEL["backbone_kwargs"]}, indent=1))
    return folder
