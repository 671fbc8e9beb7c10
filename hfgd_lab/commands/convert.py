"""``hfgd-lab convert CKPT OUT``: any checkpoint as a Hub-style model folder.

CKPT is what ``from_pretrained`` takes: a two-file checkpoint (``NAME`` /
``NAME.json`` / ``NAME.safetensors``), a run folder or its ``best`` / ``last``, a
checkpoint set folder, a bundled model's name or a Hub repo id. OUT becomes a folder
with ``model.safetensors``, ``config.json`` (the card) and a generated ``README.md``
model card; ``hfgd_lab.from_pretrained(OUT)`` loads it back to identical logits.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

_OURS = ("model.safetensors", "config.json", "README.md")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint: two-file stem / .json / .safetensors, run "
                                      "folder, runs/x/best, set folder, bundled name or Hub "
                                      "repo id")
    p.add_argument("out", help="model folder to write (created; an existing hfgd-lab model "
                               "folder is updated)")
    p.add_argument("--half", action="store_true",
                   help="store floating weights as float16 (half the size)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace model.safetensors / config.json / README.md in OUT even "
                        "when hfgd-lab did not write them")


def check_out(out: Path, overwrite: bool) -> None:
    """OUT must be a new folder, an hfgd-lab model folder, or (``--overwrite``) any
    folder; checked before anything is loaded. Raises ValueError naming OUT."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"OUT {str(out)!r} is an existing file: expected a folder path")
    if not out.is_dir() or overwrite:
        return
    clash = [n for n in _OURS if (out / n).exists()]
    if not clash:
        return
    try:
        ours = json.loads((out / "config.json").read_text()).get("format", "").startswith(
            "hfgd-lab/")
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise ValueError(f"OUT {str(out)!r} already holds {', '.join(clash)} that hfgd-lab "
                         "did not write: choose another folder or pass --overwrite")


def run(args) -> int:
    out = Path(args.out).expanduser()
    check_out(out, args.overwrite)
    # torch and the engine load here, not at import: `hfgd-lab --help` stays ~0.1 s
    # (the CLI's start-up rule, hfgd_lab/cli.py)
    import torch

    from ..engine.loaded import from_pretrained

    loaded = from_pretrained(args.checkpoint)
    loaded.save_pretrained(out, dtype=torch.float16 if args.half else None,
                           overwrite=args.overwrite)
    size = sum((out / n).stat().st_size for n in _OURS if (out / n).is_file())
    print(f"wrote {out}/ (model.safetensors, config.json, README.md; {size / 1e6:.1f} MB): "
          f"{loaded.name}, {loaded.num_classes} classes, backbone {loaded.cfg.backbone}")
    print(f"load it with: hfgd_lab.from_pretrained({str(out)!r})  or  "
          f"hfgd-lab predict {out} IMAGES --out DIR")
    return 0
