"""Procedural-scene generation speed, images/s on ONE core, at 192 and 256 px.

Data must never be the bottleneck: fine-tuning runs ~15-25 img/s per core, so scene
generation should stay well above 100 img/s per core at 192 px. Rates are measured
in this process's CPU time (one thread), so other jobs sharing the machine do not
count against them, and each is the best of several short rounds. Usage: ``python benchmarks/scene_speed.py [--rounds 5] [--per-round 40]``.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch  # noqa: E402

from hfgd_lab.data import SceneDataset, build_train_transform  # noqa: E402


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def best_rate(fn, n: int, rounds: int) -> float:
    """Best images per CPU-second over ``rounds`` rounds of ``n`` calls."""
    best = float("inf")
    offset = 0
    for _ in range(rounds):
        start = time.process_time()
        for i in range(n):
            fn(offset + i)
        best = min(best, time.process_time() - start)
        offset += n
    return n / best


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--per-round", type=int, default=40)
    p.add_argument("--sizes", type=int, nargs="+", default=[192, 256])
    args = p.parse_args()
    torch.set_num_threads(1)
    n, rounds = args.per_round, args.rounds
    print(f"machine: {cpu_name()}, "
          f"{os.cpu_count()} cores, load avg {os.getloadavg()[0]:.1f}; "
          f"python {platform.python_version()}, torch {torch.__version__}; 1 thread")
    print(f"{'size':>5}  {'generate':>9}  {'+eval tf':>9}  {'+train tf':>9}   (img/s per CPU-second, one thread)")
    for size in args.sizes:
        ds = SceneDataset(num=n * rounds, size=size)
        gen = best_rate(ds.load, n, rounds)
        ev = best_rate(ds.__getitem__, n, rounds)
        train = SceneDataset(num=n * rounds, size=size,
                             transform=build_train_transform((size, size)))
        tr = best_rate(train.__getitem__, n, rounds)
        print(f"{size:>5}  {gen:9.1f}  {ev:9.1f}  {tr:9.1f}")


if __name__ == "__main__":
    main()
