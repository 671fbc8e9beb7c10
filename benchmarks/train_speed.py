#!/usr/bin/env python
"""Training speed from a checkout: the training step against smp, and the data loader
against the training step.

    python benchmarks/train_speed.py --threads 1 --repeats 10 --markdown --json OUT.json
        the training step of HFGD OS8/4/2, SemanticFPN, smp FPN and UPerNet side by side:
        the same as ``hfgd-lab bench --train ...`` (hfgd_lab/bench_train.py)

    python benchmarks/train_speed.py --loader --json OUT.json
        does the data ever wait? For each experiment config (default: the shipped quick
        configs, ``configs/scenes_quick.yaml`` with scenes generated on the fly and
        ``configs/scenes_folder.yaml`` reading PNG files, written here to a temporary
        folder from the same scenes), and for each ``data.num_workers`` in ``--workers``:
        (a) the loader alone: ms per batch drawn from ``train.build_train_loader``;
        (b) the training step alone on one fixed batch (forward, loss, backward, gradient
            clipping, AdamW, as ``hfgd-lab train`` does);
        (c) both together, as training runs: ms per iteration, and the part of it spent
            waiting in ``next(batches)``.
        The ``num_workers`` variants are interleaved in rounds (a fresh loader each time,
        its first iterations untimed); the table shows medians over all timed iterations.
        torch runs with its default number of threads (``--threads`` to change), as
        ``hfgd-lab train`` does.
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import yaml  # noqa: E402
from PIL import Image  # noqa: E402

from hfgd_lab.bench import environment  # noqa: E402
from hfgd_lab.bench import main as bench_main  # noqa: E402
from hfgd_lab.bench_train import load_average  # noqa: E402
from hfgd_lab.data.scenes import SCENE_CLASSES, SCENE_PALETTE, render_scene, scene_seed  # noqa: E402,E501
from hfgd_lab.engine.distributed import DistInfo  # noqa: E402
from hfgd_lab.engine.experiment import ExperimentConfig  # noqa: E402
from hfgd_lab.engine.train import build_datasets, build_optimizer, build_train_loader  # noqa: E402,E501
from hfgd_lab.models import build_model  # noqa: E402

CONFIGS = ("configs/scenes_quick.yaml", "configs/scenes_folder.yaml")


def write_scene_folder(root: Path, num: int, size: int, seed: int) -> None:
    """``num`` scenes of the train split and a quarter as val, in the folder layout."""
    for split, n in (("train", num), ("val", max(1, num // 4))):
        for sub in ("images", "masks"):
            (root / sub / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            s = render_scene(scene_seed(seed, split, i), size)
            Image.fromarray(s.image).save(root / "images" / split / f"scene_{i:06d}.png",
                                          compress_level=1)
            Image.fromarray(s.mask).save(root / "masks" / split / f"scene_{i:06d}.png",
                                         compress_level=1)
    (root / "classes.txt").write_text("".join(
        f"{c} {r} {g} {b}\n" for c, (r, g, b) in zip(SCENE_CLASSES, SCENE_PALETTE)))


class Trainer:
    """One training step as ``hfgd-lab train`` runs it (CPU, no AMP, no DDP)."""

    def __init__(self, cfg: ExperimentConfig):
        torch.manual_seed(cfg.train.seed)
        self.model = build_model(cfg.model).train()
        self.optimizer = build_optimizer(self.model, cfg.train)
        self.clip = cfg.train.grad_clip or float("inf")

    def step(self, batch) -> None:
        out = self.model(batch["image"])
        loss = self.model.loss(out, batch["mask"])["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def measure_loader(cfg: ExperimentConfig, workers, rounds: int, iters: int, warmup: int,
                   log) -> dict:
    """The (a), (b), (c) timings of the module docstring, per num_workers."""
    train_ds, _ = build_datasets(cfg)
    info = DistInfo()
    device = torch.device("cpu")
    trainer = Trainer(cfg)
    res = {nw: {"loader_ms": [], "loader_cpu_ms": [], "iteration_ms": [], "wait_ms": [],
                "iteration_cpu_ms": []} for nw in workers}
    step_ms, step_cpu_ms = [], []
    fixed = next(iter(build_train_loader(train_ds, cfg, info, device)))
    for _ in range(warmup):
        trainer.step(fixed)
    for r in range(rounds):
        for j in range(len(workers)):
            nw = workers[(r + j) % len(workers)]
            cfg.data.num_workers = nw
            # (a) the loader alone
            batches = iter(build_train_loader(train_ds, cfg, info, device,
                                              start=r * 1000 * cfg.data.batch_size))
            for _ in range(warmup):
                next(batches)
            for _ in range(iters):
                t0, c0 = time.perf_counter(), time.process_time()
                next(batches)
                res[nw]["loader_ms"].append(1000 * (time.perf_counter() - t0))
                res[nw]["loader_cpu_ms"].append(1000 * (time.process_time() - c0))
            del batches
            # (b) the step alone, on a fixed batch
            for _ in range(max(1, iters // len(workers))):
                t0, c0 = time.perf_counter(), time.process_time()
                trainer.step(fixed)
                step_ms.append(1000 * (time.perf_counter() - t0))
                step_cpu_ms.append(1000 * (time.process_time() - c0))
            # (c) both, as training runs
            batches = iter(build_train_loader(train_ds, cfg, info, device,
                                              start=(r * 1000 + 500) * cfg.data.batch_size))
            for _ in range(warmup):
                trainer.step(next(batches))
            for _ in range(iters):
                t0, c0 = time.perf_counter(), time.process_time()
                batch = next(batches)
                t1 = time.perf_counter()
                trainer.step(batch)
                t2, c2 = time.perf_counter(), time.process_time()
                res[nw]["wait_ms"].append(1000 * (t1 - t0))
                res[nw]["iteration_ms"].append(1000 * (t2 - t0))
                res[nw]["iteration_cpu_ms"].append(1000 * (c2 - c0))
            del batches
            log(f"  round {r + 1}/{rounds}, num_workers={nw}: iteration "
                f"{statistics.median(res[nw]['iteration_ms']):.0f} ms")
    step = statistics.median(step_ms)
    out = {"batch_size": cfg.data.batch_size, "crop_size": list(cfg.data.crop_size),
           "step_alone_ms": step, "step_alone_times_ms": step_ms,
           "step_alone_cpu_ms": statistics.median(step_cpu_ms), "workers": {}}
    base = statistics.median(res[workers[0]]["iteration_ms"])
    for nw in workers:
        d = res[nw]
        it = statistics.median(d["iteration_ms"])
        out["workers"][str(nw)] = {
            "loader_alone_ms": statistics.median(d["loader_ms"]),
            "loader_alone_cpu_ms": statistics.median(d["loader_cpu_ms"]),
            "iteration_cpu_ms": statistics.median(d["iteration_cpu_ms"]),
            "iteration_ms": it, "wait_ms": statistics.median(d["wait_ms"]),
            "wait_mean_ms": statistics.fmean(d["wait_ms"]),
            "img_per_s": 1000 * cfg.data.batch_size / it,
            "iteration_vs_first": it / base, **{f"{k}_times": v for k, v in d.items()}}
    return out


def format_loader(name: str, r: dict, markdown: bool) -> str:
    heads = ["num_workers", "loader alone ms/batch (CPU)", "step alone ms (CPU)",
             "iteration ms (training process CPU)", "waiting for data ms/it", "img/s",
             f"iteration x {next(iter(r['workers']))} workers"]
    rows = [[nw, f"{w['loader_alone_ms']:.0f} ({w['loader_alone_cpu_ms']:.0f})",
             f"{r['step_alone_ms']:.0f} ({r['step_alone_cpu_ms']:.0f})",
             f"{w['iteration_ms']:.0f} ({w['iteration_cpu_ms']:.0f})",
             f"{w['wait_ms']:.1f} (mean {w['wait_mean_ms']:.1f})",
             f"{w['img_per_s']:.1f}", f"{w['iteration_vs_first']:.2f}"]
            for nw, w in r["workers"].items()]
    title = (f"{name}: batch {r['batch_size']} x {r['crop_size'][0]}x{r['crop_size'][1]}, "
             f"{torch.get_num_threads()} torch thread(s) in the training process")
    if markdown:
        lines = ["| " + " | ".join(heads) + " |", "|" + "|".join("---" for _ in heads) + "|"]
        return title + "\n\n" + "\n".join(lines + ["| " + " | ".join(x) + " |" for x in rows])
    widths = [max(len(h), *(len(x[i]) for x in rows)) for i, h in enumerate(heads)]
    fmt = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([title, fmt(heads)] + [fmt(x) for x in rows])


def run_loader(args) -> dict:
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr,
                                                                 flush=True))
    if args.threads:
        torch.set_num_threads(args.threads)
    env = environment(argparse.Namespace(command=" ".join(
        [Path(sys.argv[0]).name, *sys.argv[1:]])))
    results = {"environment": env, "mode": "loader", "load_before": load_average(),
               "settings": {k: getattr(args, k) for k in (
                   "configs", "workers", "rounds", "iters", "warmup", "threads", "set")},
               "configs": {}}
    with tempfile.TemporaryDirectory(prefix="hfgd_loader_") as tmp:
        for path in args.configs:
            cfg = ExperimentConfig.from_yaml(ROOT / path if not Path(path).is_file()
                                             else path)
            if args.set:
                data = cfg.to_dict()
                for item in args.set:
                    key, _, value = item.partition("=")
                    section, _, field = key.partition(".")
                    data[section][field] = yaml.safe_load(value)
                cfg = ExperimentConfig.from_dict(data)
            if cfg.data.name == "folder":
                folder = Path(tmp) / Path(path).stem
                n = args.folder_images
                log(f"{path}: writing {n} scenes to {folder}")
                write_scene_folder(folder, n, max(cfg.data.crop_size), seed=1)
                cfg.data.root = str(folder)
            log(f"{path}: num_workers {args.workers}, {args.rounds} rounds of {args.iters} "
                "iterations")
            r = measure_loader(cfg, args.workers, args.rounds, args.iters, args.warmup, log)
            r["data"] = cfg.data.name
            results["configs"][path] = r
            print(format_loader(f"{path} ({cfg.data.name})", r, args.markdown) + "\n")
    results["load_after"] = load_average()
    print(f"load average (1/5/15 min) before {results['load_before']}, "
          f"after {results['load_after']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
        log(f"wrote {args.json}")
    return results


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--loader" not in argv:
        return bench_main(["--train", *[a for a in argv if a != "--train"]])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--loader", action="store_true", required=True)
    p.add_argument("--configs", nargs="+", default=list(CONFIGS),
                   help="experiment YAML files (a folder dataset is written from scenes)")
    p.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2],
                   help="data.num_workers values to compare (the first is the reference)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    p.add_argument("--iters", type=int, default=8, help="timed iterations per phase")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations per phase")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads in the training process (0: torch's default)")
    p.add_argument("--folder-images", type=int, default=200,
                   help="scenes written for a folder config's train split")
    p.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE",
                   help="override config fields of every config (e.g. data.batch_size=2)")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--json", metavar="OUT")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if min(args.workers) < 0 or args.rounds < 1 or args.iters < 1 or args.warmup < 0:
        p.error("need --workers >= 0, --rounds >= 1, --iters >= 1, --warmup >= 0")
    return run_loader(args)


if __name__ == "__main__":
    main()
