"""The model-zoo table of docs/model_zoo.md, read from the bundled cards.

    python benchmarks/zoo_report.py                 # markdown table on stdout
    python benchmarks/zoo_report.py --json zoo.json # the same numbers as JSON

Every number comes from the JSON card beside each bundled file (written by
``benchmarks/stop_gradient.py --bundle``): the file's own validation mIoU (one trained
model, seed 0) and, beside it and labelled as such, the mean ± std over the seeds of the
same regime that its card's ``sg_experiment`` carries.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hfgd_lab.engine import zoo  # noqa: E402
from hfgd_lab.engine.checkpoint import read_card  # noqa: E402

HEAD = ("| file | variant | size | fine-tune time, wall (CPU) | val mIoU of this file "
        "(100 scenes) | same, first 8 scenes | val mIoU, mean ± std over seeds (same recipe) |")


def rows() -> list[dict]:
    """One dict per bundled model: name, variant, seed, size_mb, minutes, cpu_minutes,
    val_mIoU, subset_mIoU, subset_images, seeds_mean, seeds_std, seeds, command,
    machine, date, and ``line`` (its markdown table row)."""
    out = []
    for name in zoo.list_pretrained():
        card = read_card(zoo.WEIGHTS_DIR / name)
        m, prov = card["metrics"], card.get("provenance", {})
        variant = card.get("variant", "?")
        exp = card.get("sg_experiment", {})
        agg = exp.get("variants", {}).get(variant, {}).get("val_mIoU", {})
        n = exp.get("seeds_per_variant", {}).get(variant, exp.get("seeds"))
        size = (zoo.WEIGHTS_DIR / f"{name}.safetensors").stat().st_size / 2 ** 20
        r = {"name": name, "variant": variant, "seed": card.get("seed"), "size_mb": size,
             "minutes": prov.get("train_minutes", float("nan")),
             "cpu_minutes": prov.get("train_cpu_minutes", float("nan")),
             "val_mIoU": m["val_mIoU"], "subset_mIoU": m.get("subset_mIoU"),
             "subset_images": m.get("subset_images"), "seeds_mean": agg.get("mean"),
             "seeds_std": agg.get("std"), "seeds": n, "command": prov.get("command"),
             "machine": prov.get("machine"), "date": prov.get("date")}
        seeds_cell = (f"{r['seeds_mean']:.2f} ± {r['seeds_std']:.2f} ({n} seed{'' if n == 1 else 's'})"
                      if r["seeds_mean"] is not None else "–")
        default = " (default)" if name == zoo.DEFAULT_MODEL else ""
        r["line"] = (f"| `{name}`{default} | {variant}, seed {r['seed']} | {size:.1f} MB | "
                     f"{r['minutes']:.1f} min ({r['cpu_minutes']:.1f} min) | "
                     f"{r['val_mIoU']:.2f} | {r['subset_mIoU']:.2f} | {seeds_cell} |")
        out.append(r)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--json", help="also write the numbers here as JSON")
    args = p.parse_args(argv)
    table = rows()
    total = sum(f.stat().st_size for f in zoo.WEIGHTS_DIR.iterdir() if f.is_file()) / 2 ** 20
    print(HEAD)
    print("|" + "---|" * 7)
    for r in table:
        print(r["line"])
    print(f"\nTotal bundled: {total:.1f} MB.")
    for cmd in sorted({r["command"] for r in table if r["command"]}):
        print(f"\nCommand: `{cmd}`")
    for mach in sorted({f"{r['machine']}, {r['date']}" for r in table if r["machine"]}):
        print(f"Machine: {mach}")
    if args.json:
        Path(args.json).write_text(json.dumps({"models": table, "total_mb": total}, indent=1))
    return table


if __name__ == "__main__":
    main()
