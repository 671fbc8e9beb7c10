"""``hfgd-lab profile``: parameters and GFLOPs of a model, per part."""
from __future__ import annotations

import json

from ._common import int_at_least


def add_arguments(p):
    p.add_argument("config", nargs="?", help="model or experiment YAML (its model section); "
                                             "default: HFGDConfig defaults")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override model fields, e.g. output_stride=8 (or model.output_stride=8, "
                        "as train takes it)")
    p.add_argument("--size", type=int_at_least(32), nargs=2, default=[512, 512],
                   metavar=("H", "W"), help="input size in pixels (default 512 512)")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args):
    # heavy imports inside run(): the models import torch and timm (~3-5 s, measured),
    # which `hfgd-lab --help` and argument errors must not pay
    from ..config import HFGDConfig
    from ..models import build_model
    from ..models.profile import format_profile, profile_model
    from ..utils import apply_overrides

    cfg = HFGDConfig.from_yaml(args.config) if args.config else HFGDConfig()
    sets = [a[len("model."):] if a.startswith("model.") else a for a in args.set]
    cfg = apply_overrides(cfg, sets)
    # counting needs no weights: never download (offline) nor read a weights file
    cfg = cfg.replace(pretrained=False, backbone_weights=None)
    prof = profile_model(build_model(cfg), (1, 3, *args.size))
    print(json.dumps(prof, indent=2) if args.json else format_profile(prof))
