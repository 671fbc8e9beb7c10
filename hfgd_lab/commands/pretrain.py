"""``hfgd-lab pretrain --out W.safetensors``: pretrain a backbone on the built-in scenes.

The config, every override and the output location are checked before the first
iteration; an existing weights file is replaced only when pretrain wrote it (its card
says so) or with ``--overwrite``.
"""
from __future__ import annotations

import json
from pathlib import Path

from ._common import positive_int, probe_writable_dir

CARD_KIND = "hfgd-lab backbone weights"  # what engine.pretrain writes in the card


def add_arguments(p):
    p.add_argument("--config", help="YAML with PretrainConfig fields (a 'pretrain:' section "
                                    "or top level)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override fields, e.g. iters=2000 backbone=resnet18")
    p.add_argument("--out", required=True, help="weights file to write (.safetensors); "
                                                "a .json card is written beside it")
    p.add_argument("--threads", type=positive_int, help="torch threads (default: torch's choice)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing output files that pretrain did not write")
    p.add_argument("--no-progress", action="store_true")


def check_out(out: Path, overwrite: bool) -> Path:
    """The weights file and its card can be written and replace nothing foreign."""
    weights = out if out.suffix == ".safetensors" else out.with_suffix(".safetensors")
    card = weights.with_suffix(".json")
    for path in (weights, card):
        if path.is_dir():
            raise IsADirectoryError(f"--out {out}: {path} is a folder")
    ours = False
    if card.is_file():
        try:
            ours = json.loads(card.read_text()).get("kind") == CARD_KIND
        except (OSError, ValueError, AttributeError):
            ours = False
    foreign = [p for p in (weights, card) if p.exists() and not ours]
    if foreign and not overwrite:
        raise FileExistsError(f"--out {out}: {foreign[0]} exists and was not written by "
                              "hfgd-lab pretrain; choose another --out, or pass --overwrite")
    probe_writable_dir(weights.parent, "--out", out)
    return weights


def run(args):
    # heavy imports inside run(): the engine imports torch and timm (~3-5 s, measured),
    # which `hfgd-lab --help` and argument errors must not pay
    import torch
    import yaml

    from ..config import ConfigError, check_types
    from ..engine.pretrain import PretrainConfig, pretrain
    from ..utils import apply_overrides

    data = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise FileNotFoundError(f"--config {path}: file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: must be a mapping of PretrainConfig fields")
        data = data.get("pretrain", data)
    known = PretrainConfig.__dataclass_fields__
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"pretrain config: unknown key(s) {unknown}; known: {sorted(known)}")
    cfg = apply_overrides(PretrainConfig(**data), args.set)
    check_types(cfg, "pretrain")  # typed like the experiment configs: "fast" is no lr
    cfg.validate()
    out = check_out(Path(args.out), args.overwrite)
    if args.threads:
        torch.set_num_threads(args.threads)
    card = pretrain(cfg, out, progress=not args.no_progress)
    last = card["curve"][-1] if card["curve"] else {}
    print(json.dumps({"out": str(out), "seconds": round(card["seconds"], 1), **last}))
