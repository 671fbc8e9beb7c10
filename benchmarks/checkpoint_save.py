"""What a crash-safe checkpoint costs: one training save of the bundled models'
architecture, timed side by side in one run against the two-file saves it replaced
and against a plain ``torch.save`` of the same state (what most training loops do).

- **set** (now): :func:`hfgd_lab.engine.checkpoint.save_training_set` -- one set folder
  (weights, optimizer + RNG state, card), every file and folder fsync'd, renamed into
  place, ``last.json`` and ``best.json`` switched, the previous set removed.
- **two-file** (hfgd-lab 0.2): ``save_checkpoint(last, optimizer=...)`` then
  ``save_checkpoint(best)``: the weights written twice, not atomic as a whole.
- **torch.save**: ``{"model": state_dict, "optimizer": state_dict}`` pickled to one
  file, no fsync (not crash-safe, and unpickling it is what this project never does).

The three are interleaved round-robin, starting model rotating; medians and IQR.

    python benchmarks/checkpoint_save.py --rounds 15 --json docs/results/checkpoint_save.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hfgd_lab import HFGDConfig, build_model  # noqa: E402
from hfgd_lab.engine import checkpoint as C  # noqa: E402
from hfgd_lab.engine.zoo import BUNDLED_MODEL  # noqa: E402


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--dir", help="where to write (default: a temporary folder; the disk "
                                  "decides the fsync cost)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model(HFGDConfig(**BUNDLED_MODEL))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    model.loss(model(torch.randn(2, 3, 64, 64)), torch.zeros(2, 64, 64, dtype=torch.long)
               )["loss"].backward()
    opt.step()
    base = Path(args.dir or tempfile.mkdtemp(prefix="ckpt-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    card = dict(classes=[f"c{i}" for i in range(10)], metrics={"mIoU": 1.0})

    def new_set(it):
        C.save_training_set(base / "set", model, iteration=it, pointers=("last", "best"),
                            optimizer=opt, train_state={"iteration": it}, **card)

    def two_files(it):
        C.save_checkpoint(base / "two" / "last", model, optimizer=opt,
                          train_state={"iteration": it}, **card)
        C.save_checkpoint(base / "two" / "best", model, **card)

    def pickled(it):
        (base / "pickle").mkdir(exist_ok=True)
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                    "iteration": it}, base / "pickle" / "last.pth")

    ways = {"set (crash-safe)": new_set, "two-file (0.2)": two_files,
            "torch.save": pickled}
    times = {k: [] for k in ways}
    names = list(ways)
    for r in range(args.rounds + 2):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            ways[name](r)
            if r >= 2:  # two warm-up rounds
                times[name].append(time.perf_counter() - t0)
    sizes = {"set (crash-safe)": _size(base / "set"), "two-file (0.2)": _size(base / "two"),
             "torch.save": _size(base / "pickle")}
    ref = float(np.median(times["two-file (0.2)"]))
    rows = []
    for name in names:
        t = np.array(times[name]) * 1000
        q1, med, q3 = np.percentile(t, [25, 50, 75])
        rows.append({"way": name, "median_ms": round(float(med), 1),
                     "iqr_ms": round(float(q3 - q1), 1),
                     "x_two_file": round(float(med) / (ref * 1000), 2),
                     "disk_MB": round(sizes[name] / 1e6, 2)})
    params = sum(p.numel() for p in model.parameters())
    result = {"command": "python benchmarks/checkpoint_save.py "
                         + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": f"{platform.machine()} {os.cpu_count()} cores, Python "
                         f"{platform.python_version()}, torch {torch.__version__}",
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "model": f"bundled architecture (tf_efficientnet_lite0, {params / 1e6:.2f} M "
                       "parameters), AdamW state", "rounds": args.rounds, "rows": rows}
    print(f"{result['model']}, {args.rounds} rounds")
    print("| way | median ms | IQR ms | x two-file | disk MB |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['way']} | {r['median_ms']} | {r['iqr_ms']} | {r['x_two_file']} | "
              f"{r['disk_MB']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if not args.dir:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
