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
from scipy.stats import t as student_t
from tqdm.auto import tqdm

from ..analysis import backbone_cka, gradient_norms
from ..config import LEVELS as STAGES
from ..config import VARIANTS
from ..data import build_dataset
from ..data.transforms import build_eval_transform
from ..engine import zoo
from ..engine.checkpoint import CheckpointError, load_checkpoint, read_card
from ..engine.evaluate import evaluate
from ..engine.experiment import ExperimentConfig
from ..engine.train import train
from ..models import Backbone

RESULTS_ENV = "HFGD_LAB_RESULTS_DIR"


def results_dir() -> Path:
    """Where the stored results live: ``HFGD_LAB_RESULTS_DIR``, else the checkout's
    ``docs/results``."""
    env = os.environ.get(RESULTS_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2] / "docs" / "results"


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


# ---- the experiment in words (docs, notebook 03, the app) ------------------------------------------

def _ms(v):
    """(mean, std) from a summary entry (tuple or JSON list)."""
    m, s = v
    return float(m), float(s)


def _t975(df: int) -> float:
    """Student's t 97.5% quantile (two-sided 95%), for a paired mean over few seeds."""
    return float(student_t.ppf(0.975, df))


def describe_summary(summary: dict) -> str:
    """Markdown: what a stop-gradient experiment summary (``summarize(...)``, or its JSON)
    measured, in words -- accuracy with the paired sg − no-sg difference and whether it
    is beyond the seed-to-seed noise (a paired t-interval), the gradient reaching the backbone from loss_up,
    and the drift of each backbone stage. Says whichever way it came out."""
    v = summary.get("variants", {})
    names = LABELS
    out = []
    acc = [f"{names.get(k, k)} {_ms(r['val_mIoU'])[0]:.1f}" for k, r in v.items()]
    if acc:
        n = max(len(r.get("seeds", [])) for r in v.values())
        out.append(f"- **Validation mIoU** (mean over {n} seed{'s' if n != 1 else ''}): "
                   + ", ".join(acc) + ".")
    pair = summary.get("paired", {}).get("hfgd_sg - hfgd_nosg")
    if pair:
        m, s = _ms(pair["mean_std"])
        per = pair.get("per_seed", [])
        n = len(per)
        txt = (f"- **sg − no-sg, paired on the same seed**: {m:+.1f} mIoU"
               + (f" ± {s:.1f} (per seed: {', '.join(f'{d:+.1f}' for d in per)})" if n > 1
                  else ""))
        if n < 2:
            txt += (". With one seed there is no estimate of the seed-to-seed noise, so this "
                    "alone cannot say which is better: rerun with several seeds.")
        else:
            half = _t975(n - 1) * s / math.sqrt(n)  # 95% half-width of the paired mean
            same_sign = all(d > 0 for d in per) or all(d < 0 for d in per)
            if abs(m) <= half or not same_sign:
                txt += (f". That is within the seed-to-seed noise (95% interval ±{half:.1f}): "
                        "**no measurable effect of the stop-gradient on accuracy** in this "
                        "regime.")
            else:
                txt += (f". Every seed points the same way and the mean is beyond the noise "
                        f"(95% interval ±{half:.1f}): **the stop-gradient "
                        f"{'helped' if m > 0 else 'hurt'}** in this regime.")
        out.append(txt)
    for k in ("hfgd_sg", "hfgd_nosg", "semantic_fpn"):
        if k in v and "grad_up_backbone" in v[k]:
            g = _ms(v[k]["grad_up_backbone"])[0]
            out.append(f"- **Gradient from loss_up into the backbone**, {names[k]}: "
                       + ("exactly 0 (the stop-gradient at work)" if g == 0 else f"{g:.3g}")
                       + ".")
    if "hfgd_sg" in v and "hfgd_nosg" in v:
        cells, closer = [], []
        for st in ("C2", "C3", "C4", "C5"):
            key = f"cka_{st}"
            if key not in v["hfgd_sg"]:
                continue
            a, b = _ms(v["hfgd_sg"][key])[0], _ms(v["hfgd_nosg"][key])[0]
            if math.isnan(a) or math.isnan(b):
                continue
            cells.append(f"{st} {a:.3f} vs {b:.3f}")
            closer.append((st, a - b))
        if cells:
            up = [st for st, d in closer if d > 0.005]
            down = [st for st, d in closer if d < -0.005]
            txt = ("- **Drift** (linear CKA to the pretrained backbone, 1 = unchanged; sg vs "
                   "no-sg): " + ", ".join(cells) + ". ")
            if up:
                txt += f"With sg, {', '.join(up)} stayed closer to the pretrained state"
                txt += f"; {', '.join(down)} drifted more." if down else "."
            elif down:
                txt += f"With sg, {', '.join(down)} drifted more; no stage stayed closer."
            else:
                txt += "No stage differs by more than 0.005."
            out.append(txt)
    return "\n".join(out)


def stored_results(folder=None) -> list[dict]:
    """The stored stop-gradient results, one dict per regime: ``source`` (file), ``title``,
    ``regime`` (settings in words), ``summary`` (as ``summarize`` returns it), ``runs``
    (per-run results, or None) and ``figure`` (the saved summary PNG, or None).

    Reads ``results_dir()/sg_*.json`` (``{"meta", "summary"[, "runs"]}``); with none there,
    falls back to the summary the default bundled model's card carries."""
    folder = Path(folder) if folder else results_dir()
    out = []
    for f in sorted(folder.glob("sg_*.json")):
        data = json.loads(f.read_text())
        meta = data.get("meta", {})
        cfg = meta.get("config") or {}
        d, t = cfg.get("data", {}), cfg.get("train", {})
        seeds = sorted({s for row in data["summary"].get("variants", {}).values()
                        for s in row.get("seeds", [])})
        kw = d.get("kwargs", {})
        regime = (f"{kw.get('num', '?')} labelled scenes of {kw.get('size', '?')} px, "
                  f"{t.get('iters', '?')} iterations of batch {d.get('batch_size', '?')}, "
                  f"backbone lr × {t.get('backbone_lr_mult', '?')}, seeds {seeds}; "
                  f"{meta.get('date', '?')}, {meta.get('machine', '?')}")
        fig = f.parent.parent / "figures" / f"{f.stem}_summary.png"
        out.append({"source": str(f), "title": meta.get("title", f.stem), "regime": regime,
                    "summary": data["summary"], "runs": data.get("runs"),
                    "figure": fig if fig.is_file() else None})
    if out:
        return out
    try:
        card = read_card(zoo.bundled_path(zoo.DEFAULT_MODEL))
    except CheckpointError:
        card = {}
    exp = card.get("sg_experiment")
    if exp:
        n = int(exp.get("seeds", 0))
        variants = {v: {"seeds": list(range(n)),
                        **{k: (x["mean"], x["std"]) for k, x in row.items()}}
                    for v, row in exp.get("variants", {}).items()}
        out.append({"source": f"card of {zoo.DEFAULT_MODEL}", "title": exp.get("title", "sg"),
                    "regime": f"{n} seeds (from the bundled model's card; paired differences "
                              "are in docs/results)",
                    "summary": {"variants": variants, "paired": {}}, "runs": None,
                    "figure": None})
    return out
