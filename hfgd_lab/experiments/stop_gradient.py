"""The stop-gradient experiment: SemanticFPN vs HFGD without vs with stop-gradient.

Each variant is fine-tuned from the same pretrained backbone on the same labelled
subset, for several seeds (seed = initialisation and sample order; the subset is
fixed by the config, so variants compare *paired*). Each run records:

* validation mIoU over training (and on the labelled images, for the train-val gap);
* the gradient norm each loss sends into each module, on a fixed probe batch;
* the drift of every backbone stage from its pretrained state (linear CKA on
  validation images).

The benchmark script, the teaching notebook and the docs all call these functions.
"""
from __future__ import annotations

import copy
import json
import math
import os
import time
from pathlib import Path

import multiprocessing as mp

import numpy as np
import torch
from tqdm.auto import tqdm

from ..analysis import backbone_cka, gradient_norms
from ..config import LEVELS as STAGES
from ..config import VARIANTS
from ..data import build_dataset
from ..data.transforms import build_eval_transform
from ..engine.checkpoint import load_checkpoint
from ..engine.evaluate import evaluate
from ..engine.experiment import ExperimentConfig
from ..engine.train import train
from ..models import Backbone

LABELS = {"semantic_fpn": "SemanticFPN", "hfgd_nosg": "HFGD no-sg", "hfgd_sg": "HFGD sg",
          "hfgd_partial_sg": "HFGD partial sg"}


def variant_config(base: ExperimentConfig, variant: str, seed: int, work_dir, pretrained=None):
    """The experiment config of one run."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {list(VARIANTS)}")
    data = copy.deepcopy(base.to_dict())
    data["model"].update(VARIANTS[variant][1])
    if pretrained:
        data["model"]["backbone_weights"] = str(pretrained)
        data["model"]["pretrained"] = False
    data["train"].update(seed=int(seed), work_dir=str(work_dir))
    return ExperimentConfig.from_dict(data)


def _stack(dataset, n: int):
    items = [dataset[i] for i in range(min(n, len(dataset)))]
    return (torch.stack([s["image"] for s in items]), torch.stack([s["mask"] for s in items]))


def run_variant(base: ExperimentConfig, variant: str, seed: int, work_dir, pretrained=None,
                probe_every: int = 50, probe_images: int = 8, cka_images: int = 16,
                progress: bool = False) -> dict:
    """Fine-tune one (variant, seed) and measure it; writes ``result.json`` in work_dir."""
    cfg = variant_config(base, variant, seed, work_dir, pretrained)
    d = cfg.data
    eval_tf = build_eval_transform(*cfg.model.normalization)
    labelled = build_dataset(d.name, d.root, d.train_split, transform=eval_tf, **d.kwargs)
    val = build_dataset(d.name, d.root, d.val_split, transform=eval_tf,
                        **{**d.kwargs, **d.val_kwargs})
    probe_x, probe_y = _stack(labelled, probe_images)
    grads = []

    def on_step(it, model, losses):
        step = it + 1
        if step == 1 or step % probe_every == 0 or step == cfg.train.iters:
            g = gradient_norms(model, probe_x, probe_y, train=False)
            grads.append({"iter": step, "norms": g.as_dict()})

    t0 = time.perf_counter()
    out = train(cfg, progress=progress, on_step=on_step, verbose=False)
    seconds = time.perf_counter() - t0
    model, card = load_checkpoint(Path(work_dir) / "last")
    train_metrics = evaluate(model, labelled, progress=False)
    cka = {}
    if pretrained or cfg.model.pretrained:
        ref = Backbone(cfg.model.backbone, pretrained=cfg.model.pretrained,
                       weights=str(pretrained) if pretrained else None,
                       **cfg.model.backbone_kwargs)
        cka = dict(backbone_cka(model, ref, _stack(val, cka_images)[0]))
    log = [json.loads(line) for line in (Path(work_dir) / "log.jsonl").read_text().splitlines()]
    result = {
        "variant": variant, "seed": seed, "seconds": seconds,
        "val": {k: out["last"][k] for k in ("mIoU", "mAcc", "aAcc", "IoU")},
        "best_val": out["best"], "history": out["history"],
        "train_mIoU": train_metrics["mIoU"],
        "cka": cka, "grad_norms": grads,
        "loss_curve": [{k: r[k] for k in ("iter", "loss", "loss_high", "loss_up")}
                       for r in log if "loss" in r],
        "config": cfg.to_dict(),
    }
    Path(work_dir, "result.json").write_text(json.dumps(result, indent=1, default=float))
    return result


def _job(args):
    base_dict, variant, seed, work_dir, pretrained, kw, threads = args
    torch.set_num_threads(threads)
    return run_variant(ExperimentConfig.from_dict(base_dict), variant, seed, work_dir,
                       pretrained, **kw)


def run_experiment(base: ExperimentConfig, out_dir, seeds=(0, 1, 2), variants=tuple(VARIANTS),
                   pretrained=None, jobs: int = 1, threads: int | None = None,
                   progress: bool = True, reuse: bool = True, **kw) -> list[dict]:
    """Every (variant, seed) run, ``jobs`` at a time in separate processes (each with
    ``threads`` torch threads); finished runs (``result.json`` present) are reused."""
    out_dir = Path(out_dir)
    todo, results = [], []
    for seed in seeds:
        for v in variants:
            wd = out_dir / f"{v}_seed{seed}"
            if reuse and (wd / "result.json").is_file():
                results.append(json.loads((wd / "result.json").read_text()))
            else:
                todo.append((base.to_dict(), v, seed, str(wd), pretrained, kw,
                             threads or max(1, (os.cpu_count() or 1) // max(jobs, 1))))
    bar = tqdm(total=len(todo), desc="runs", disable=not progress)
    if jobs <= 1:
        for job in todo:
            results.append(_job(job[:5] + ({**job[5], "progress": progress},) + job[6:]))
            bar.update()
    else:
        with mp.get_context("spawn").Pool(jobs) as pool:
            for r in pool.imap_unordered(_job, todo):
                results.append(r)
                bar.update()
    bar.close()
    return sorted(results, key=lambda r: (list(VARIANTS).index(r["variant"]), r["seed"]))


# ---- summaries --------------------------------------------------------------------

def _mean_std(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not xs:
        return float("nan"), float("nan")
    return float(np.mean(xs)), float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0


def mean_grad(result, module_prefix="backbone", loss="loss_up", skip_first=True) -> float:
    """Mean over probes of the gradient norm ``loss`` sends into the modules whose name
    starts with ``module_prefix`` (their norms combined as one vector)."""
    vals = []
    for g in result["grad_norms"][1 if skip_first and len(result["grad_norms"]) > 1 else 0:]:
        sq = sum(v[loss] ** 2 for m, v in g["norms"].items() if m.startswith(module_prefix))
        vals.append(math.sqrt(sq))
    return float(np.mean(vals)) if vals else float("nan")


def summarize(results: list[dict]) -> dict:
    """Per variant: mean ± std over seeds of every reported number, plus paired
    differences (same seed) against SemanticFPN and sg against no-sg."""
    by_variant = {}
    for r in results:
        by_variant.setdefault(r["variant"], []).append(r)
    summary = {}
    for v, rs in by_variant.items():
        row = {"seeds": [r["seed"] for r in rs],
               "val_mIoU": _mean_std([r["val"]["mIoU"] for r in rs]),
               "best_val_mIoU": _mean_std([r["best_val"]["mIoU"] for r in rs]),
               "train_mIoU": _mean_std([r["train_mIoU"] for r in rs]),
               "gap": _mean_std([r["train_mIoU"] - r["val"]["mIoU"] for r in rs]),
               "grad_up_backbone": _mean_std([mean_grad(r, "backbone", "loss_up") for r in rs]),
               "grad_high_backbone": _mean_std([mean_grad(r, "backbone", "loss_high")
                                                for r in rs]),
               "minutes": _mean_std([r["seconds"] / 60 for r in rs])}
        for s in STAGES:
            row[f"cka_{s}"] = _mean_std([r["cka"].get(s) for r in rs])
        summary[v] = row
    paired = {}
    seeds = {v: {r["seed"]: r for r in rs} for v, rs in by_variant.items()}
    for a, b in (("hfgd_sg", "hfgd_nosg"), ("hfgd_sg", "semantic_fpn"),
                 ("hfgd_nosg", "semantic_fpn")):
        if a in seeds and b in seeds:
            common = sorted(set(seeds[a]) & set(seeds[b]))
            diffs = [seeds[a][s]["val"]["mIoU"] - seeds[b][s]["val"]["mIoU"] for s in common]
            paired[f"{a} - {b}"] = {"mean_std": _mean_std(diffs), "per_seed": diffs}
    return {"variants": summary, "paired": paired}


def _fmt(ms, digits=1):
    m, s = ms
    return "n/a" if math.isnan(m) else f"{m:.{digits}f} ± {s:.{digits}f}"


def markdown_table(summary: dict) -> str:
    """The results table of docs/stop_gradient.md."""
    head = ("| variant | val mIoU | train mIoU | train−val gap | CKA C2 | CKA C3 | CKA C4 | "
            "CKA C5 | ‖∇ backbone‖ from loss_up | ‖∇ backbone‖ from loss_high | min/run |")
    lines = [head, "|" + "---|" * 11]
    for v, row in summary["variants"].items():
        lines.append(
            f"| {LABELS.get(v, v)} | {_fmt(row['val_mIoU'])} | {_fmt(row['train_mIoU'])} | "
            f"{_fmt(row['gap'])} | " + " | ".join(_fmt(row[f'cka_{s}'], 3) for s in STAGES) +
            f" | {_fmt(row['grad_up_backbone'], 3)} | {_fmt(row['grad_high_backbone'], 3)} | "
            f"{_fmt(row['minutes'])} |")
    lines.append("")
    lines.append("| paired difference (same seed) | val mIoU | per seed |")
    lines.append("|---|---|---|")
    for name, p in summary["paired"].items():
        a, b = name.split(" - ")
        lines.append(f"| {LABELS.get(a, a)} − {LABELS.get(b, b)} | {_fmt(p['mean_std'])} | "
                     + ", ".join(f"{d:+.1f}" for d in p["per_seed"]) + " |")
    return "\n".join(lines)
