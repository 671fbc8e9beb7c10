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
           "Pretrained", "DEFAULT_MODEL", "WEIGHTS_DIR", "pretrained_backbone"]

# HFGD_LAB_WEIGHTS_DIR points the zoo at another folder (tests, development).
WEIGHTS_DIR = Path(os.environ.get("HFGD_LAB_WEIGHTS_DIR")
                   or Path(__file__).resolve().parent / "weights")
DEFAULT_MODEL = "hfgd_scenes_sg"
DEFAULT_BACKBONE = "scenes_backbone"


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
