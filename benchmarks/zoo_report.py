"""The model-zoo table of docs/model_zoo.md, read from the bundled cards.

    python benchmarks/zoo_report.py            # markdown table on stdout

Every number comes from the JSON card beside each bundled file (written by
``hfgd-lab pretrain`` and ``benchmarks/stop_gradient.py --bundle``).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main():
    from hfgd_lab.zoo import WEIGHTS_DIR, list_pretrained, pretrained_card

    rows = ["| file | what | size | time on this CPU | validation mIoU (100 scenes) | "
            "subset mIoU (first 8) |", "|---|---|---|---|---|---|"]
    bb = WEIGHTS_DIR / "scenes_backbone.json"
    if bb.is_file():
        card = json.loads(bb.read_text())
        size = (WEIGHTS_DIR / "scenes_backbone.safetensors").stat().st_size / 2 ** 20
        c = card["config"]
        rows.append(f"| `scenes_backbone` | {c['backbone']} {c['backbone_kwargs']} pretrained "
                    f"{c['iters']} it × {c['batch_size']} ({card['images_seen']} scenes): "
                    f"{' + '.join(c['objectives'])} | {size:.1f} MB | "
                    f"{card['seconds'] / 60:.1f} min | – | – |")
    for name in list_pretrained():
        card = pretrained_card(name)
        m, prov = card["metrics"], card.get("provenance", {})
        size = (WEIGHTS_DIR / f"{name}.safetensors").stat().st_size / 2 ** 20
        rows.append(f"| `{name}` | {card.get('variant', '?')}, seed {card.get('seed', '?')} | "
                    f"{size:.1f} MB | {prov.get('train_minutes', float('nan')):.1f} min | "
                    f"{m['val_mIoU']:.2f} | {m['subset_mIoU']:.2f} |")
    total = sum(p.stat().st_size for p in WEIGHTS_DIR.iterdir() if p.is_file()) / 2 ** 20
    print("\n".join(rows))
    print(f"\nTotal bundled: {total:.1f} MB.")


if __name__ == "__main__":
    main()
