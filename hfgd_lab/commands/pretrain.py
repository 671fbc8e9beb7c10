"""``hfgd-lab pretrain --out W.safetensors``: pretrain a backbone on the built-in scenes."""
from __future__ import annotations

import json


def add_arguments(p):
    p.add_argument("--config", help="YAML with PretrainConfig fields (a 'pretrain:' section "
                                    "or top level)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override fields, e.g. iters=2000 backbone=resnet18")
    p.add_argument("--out", required=True, help="weights file to write (.safetensors); "
                                                "a .json card is written beside it")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true")


def run(args):
    from pathlib import Path

    import torch
    import yaml

    from ..engine.pretrain import PretrainConfig, pretrain
    from ..utils import apply_overrides

    data = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
        data = data.get("pretrain", data)
    known = PretrainConfig.__dataclass_fields__
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"pretrain config: unknown key(s) {unknown}; known: {sorted(known)}")
    cfg = apply_overrides(PretrainConfig(**data), args.set)
    if args.threads:
        torch.set_num_threads(args.threads)
    card = pretrain(cfg, args.out, progress=not args.no_progress)
    last = card["curve"][-1] if card["curve"] else {}
    print(json.dumps({"out": args.out, "seconds": round(card["seconds"], 1), **last}))
