"""The stop-gradient experiment: SemanticFPN vs HFGD without vs with stop-gradient.

Each variant is fine-tuned from the same pretrained backbone on the same labelled
subset, for several seeds (seed = initialisation and sample order; the subset is
fixed by the config, so variants compare *paired*). Each run records:

* validation mIoU over training (and on the labelled images, for the train-val gap);
* the gradient norm each loss sends into each module, on a fixed probe batch;
* the drift of every backbone stage from its pretrained state (linear CKA on
  validation images).

A *plan* (``configs/sg/regimes.yaml``, :func:`load_plan`) names several regimes -- each
an override list of one base config -- the variants, the seeds and the order in which to
run them; :func:`run_plan` runs every missing run, reusing finished ones. The
summaries give paired differences with Student-t intervals (:func:`paired_stats`), and
:func:`regime_map` / :func:`describe_regime_map` turn the stored regimes into the
plain-words map of docs/stop_gradient.md.

The benchmark script, the teaching notebook and the docs all call these functions.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from scipy.stats import t as student_t
from tqdm.auto import tqdm

from ..analysis import backbone_cka, gradient_norms
from ..config import LEVELS as STAGES
from ..config import VARIANTS, ConfigError
from ..data import build_dataset
from ..data.transforms import build_eval_transform
from ..engine import zoo
from ..engine.checkpoint import CheckpointError, load_checkpoint, read_card
from ..engine.evaluate import evaluate
from ..engine.experiment import ExperimentConfig
from ..engine.train import train
from ..models import Backbone
from ..utils import apply_overrides

RESULTS_ENV = "HFGD_LAB_RESULTS_DIR"
_CHECKOUT = Path(__file__).resolve().parents[2]  # the folder that holds this hfgd_lab


def results_dir() -> Path:
    """Where the stored results live: ``HFGD_LAB_RESULTS_DIR``, else the checkout's
    ``docs/results``."""
    env = os.environ.get(RESULTS_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2] / "docs" / "results"


LABELS = {"semantic_fpn": "SemanticFPN", "hfgd_nosg": "HFGD no-sg", "hfgd_sg": "HFGD sg",
          "hfgd_partial_sg": "HFGD partial sg"}
# the paired comparisons every summary reports, "a - b" (same seed, same labelled subset)
PAIRS = (("hfgd_sg", "hfgd_nosg"), ("hfgd_partial_sg", "hfgd_nosg"),
         ("hfgd_partial_sg", "hfgd_sg"), ("hfgd_sg", "semantic_fpn"),
         ("hfgd_nosg", "semantic_fpn"), ("hfgd_partial_sg", "semantic_fpn"))
LOSSES = ("loss_high", "loss_up")


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
                progress: bool = False, extra_val: dict | None = None) -> dict:
    """Fine-tune one (variant, seed) and measure it; writes ``result.json`` in work_dir.

    ``extra_val`` ``{name: dataset kwargs}``: further validation sets (the base
    validation kwargs with these changed), scored once at the end as
    ``result["extra_val"][name]`` (mIoU, %) -- e.g. validation scenes that look like the
    training scenes in the appearance-shift regime."""
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

    t0, c0 = time.perf_counter(), time.process_time()
    out = train(cfg, progress=progress, on_step=on_step, verbose=False)
    # wall time depends on what else the machine runs; CPU time of this process (with
    # one torch thread: about a quiet run's wall time) does much less
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    model, card = load_checkpoint(Path(work_dir) / "last")
    train_metrics = evaluate(model, labelled, progress=False)
    cka = {}
    if pretrained or cfg.model.pretrained:
        ref = Backbone(cfg.model.backbone, pretrained=cfg.model.pretrained,
                       weights=str(pretrained) if pretrained else None,
                       **cfg.model.backbone_kwargs)
        cka = dict(backbone_cka(model, ref, _stack(val, cka_images)[0]))
    extra = {}
    for name, kw in (extra_val or {}).items():
        ds = build_dataset(d.name, d.root, d.val_split, transform=eval_tf,
                           **{**d.kwargs, **d.val_kwargs, **kw})
        extra[name] = evaluate(model, ds, progress=False)["mIoU"]
    log = [json.loads(line) for line in (Path(work_dir) / "log.jsonl").read_text().splitlines()]
    result = {
        "variant": variant, "seed": seed, "seconds": seconds, "cpu_seconds": cpu_seconds,
        "extra_val": extra,
        "backbone_pretraining": card.get("backbone_pretraining"),
        "threads": torch.get_num_threads(),
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
    """One run (in this process); an exception comes back as ``{"error": ...}`` (and
    ``error.json`` in the run's folder) so that one failed run does not stop the
    others."""
    base_dict, variant, seed, work_dir, pretrained, kw, threads = args
    torch.set_num_threads(threads)
    try:
        return run_variant(ExperimentConfig.from_dict(base_dict), variant, seed, work_dir,
                           pretrained, **kw)
    except Exception as e:  # reported by the caller, with the run's folder
        err = {"variant": variant, "seed": seed, "work_dir": str(work_dir),
               "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        Path(work_dir, "error.json").write_text(json.dumps(err, indent=1))
        return err


def _first_difference(a, b, path=""):
    """The first dotted key where two JSON-like values differ, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            d = _first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
            if d:
                return d
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            d = _first_difference(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    return None if a == b else f"{path}: {a!r} vs {b!r}"


def _comparable(cfg: dict) -> dict:
    """A run's config as JSON, without where it was written."""
    out = json.loads(json.dumps(cfg, default=str))
    out.get("train", {}).pop("work_dir", None)
    return out


def finished_run(work_dir, cfg: ExperimentConfig) -> dict | None:
    """The stored ``result.json`` of a finished run in ``work_dir``, or None.

    Raises :class:`ConfigError` naming the folder and the first differing key when the
    stored run was made with another config (reusing it would mix regimes)."""
    path = Path(work_dir) / "result.json"
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    diff = _first_difference(_comparable(result.get("config", {})), _comparable(cfg.to_dict()))
    if diff:
        raise ConfigError(f"{work_dir} holds a finished run with another config ({diff}); "
                          "delete that folder or choose another runs folder")
    return result


def _launch(job: tuple) -> subprocess.Popen:
    """Start one run as its own process (``python -m hfgd_lab.experiments.stop_gradient
    --job FILE``) with this checkout first on its path; the job goes through a JSON file
    in the run's folder, the result comes back as ``result.json`` or ``error.json``."""
    work_dir = Path(job[3])
    work_dir.mkdir(parents=True, exist_ok=True)
    for name in ("error.json",):
        (work_dir / name).unlink(missing_ok=True)
    job_file = work_dir / "job.json"
    job_file.write_text(json.dumps(list(job), default=str))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(_CHECKOUT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    log = open(work_dir / "stdout.txt", "w")
    try:
        return subprocess.Popen([sys.executable, "-m", "hfgd_lab.experiments.stop_gradient",
                                 "--job", str(job_file)], stdout=log, stderr=subprocess.STDOUT,
                                env=env)
    finally:
        log.close()


def _collect(job: tuple, code: int) -> dict:
    work_dir = Path(job[3])
    for name in ("result.json", "error.json"):
        if (work_dir / name).is_file() and (name == "error.json" or code == 0):
            return json.loads((work_dir / name).read_text())
    tail = ""
    if (work_dir / "stdout.txt").is_file():
        tail = "\n".join((work_dir / "stdout.txt").read_text().splitlines()[-5:])
    return {"variant": job[1], "seed": job[2], "work_dir": str(work_dir),
            "error": f"the run's process ended with code {code} and no result", "traceback": tail}


def run_jobs(todo: list[tuple], jobs: int = 1, on_result=None, progress: bool = True,
             retries: int = 1, poll: float = 2.0) -> list:
    """Run job tuples (as :func:`_job` takes them) ``jobs`` at a time, each in a fresh
    process started in the given order (``jobs=1``: one after the other in this
    process); ``on_result(result)`` is called as each one finishes. A run whose process
    was killed by a signal is started again (up to ``retries`` times); any other
    failure comes back as ``{"error": ...}``. Separate processes rather than a
    multiprocessing pool: a pool waits forever for a task whose worker was killed."""
    results = []
    bar = tqdm(total=len(todo), desc="runs", disable=not progress)

    def done(r):
        results.append(r)
        bar.update()
        if on_result is not None:
            on_result(r)

    if jobs <= 1:
        for job in todo:
            done(_job(job))
        bar.close()
        return results
    queue = [(job, 0) for job in todo]
    running = []
    while queue or running:
        while queue and len(running) < jobs:
            job, tries = queue.pop(0)
            running.append((job, tries, _launch(job)))
        time.sleep(poll)
        for item in list(running):
            job, tries, proc = item
            code = proc.poll()
            if code is None:
                continue
            running.remove(item)
            if code < 0 and tries < retries:
                print(f"run {job[3]} was stopped by signal {-code}; starting it again",
                      flush=True)
                queue.insert(0, (job, tries + 1))
                continue
            done(_collect(job, code))
    bar.close()
    return results


def run_experiment(base: ExperimentConfig, out_dir, seeds=(0, 1, 2), variants=tuple(VARIANTS),
                   pretrained=None, jobs: int = 1, threads: int | None = None,
                   progress: bool = True, reuse: bool = True, **kw) -> list[dict]:
    """Every (variant, seed) run of one regime, ``jobs`` at a time in separate processes
    (each with ``threads`` torch threads); finished runs (``result.json`` present, same
    config) are reused. Raises RuntimeError naming the runs that failed."""
    out_dir = Path(out_dir)
    todo, results = [], []
    threads = threads or max(1, (os.cpu_count() or 1) // max(jobs, 1))
    for seed in seeds:
        for v in variants:
            wd = out_dir / f"{v}_seed{seed}"
            done = finished_run(wd, variant_config(base, v, seed, wd, pretrained)) \
                if reuse else None
            if done is not None:
                results.append(done)
            else:
                todo.append((base.to_dict(), v, seed, str(wd), pretrained, kw, threads))
    results += run_jobs(todo, jobs, progress=progress)
    failed = [r for r in results if "error" in r]
    if failed:
        raise RuntimeError("; ".join(f"{r['work_dir']}: {r['error']}" for r in failed))
    return sorted(results, key=lambda r: (list(VARIANTS).index(r["variant"]), r["seed"]))


# ---- plans: several regimes from one file -------------------------------------------------

@dataclass
class Regime:
    """One regime of a plan: ``overrides`` (``key=value``, as ``--set``) of the base
    config; ``question``: what it tests, in plain words; ``extra_val``: further
    validation sets (:func:`run_variant`); ``compare_to``: another regime to pair with,
    variant by variant and seed by seed (e.g. a recipe change)."""
    name: str
    title: str
    question: str
    overrides: list = field(default_factory=list)
    extra_val: dict = field(default_factory=dict)
    compare_to: str | None = None


@dataclass
class Plan:
    """Regimes x variants x seeds from one YAML file (``configs/sg/regimes.yaml``).

    ``schedule`` is the order of the work: a list of steps ``{regimes, variants, seeds}``
    (variants and seeds default to the plan's); runs already listed by an earlier step
    are not repeated. ``bundle`` ``{regime, seed}`` names the runs that become the
    bundled models."""
    path: Path
    base: ExperimentConfig
    regimes: dict
    variants: list
    seeds: list
    schedule: list
    bundle: dict | None = None

    def config(self, regime: str) -> ExperimentConfig:
        """The base config with the regime's overrides."""
        return apply_overrides(self.base, self.regimes[regime].overrides)

    def runs(self, regimes=None, variants=None, seeds=None) -> list[tuple]:
        """``(step, regime, variant, seed)`` in schedule order, each once, optionally
        restricted to the given regimes / variants / seeds."""
        out, seen = [], set()
        for i, step in enumerate(self.schedule):
            for r in step["regimes"]:
                for s in step.get("seeds", self.seeds):
                    for v in step.get("variants", self.variants):
                        key = (r, v, int(s))
                        if key in seen or (regimes and r not in regimes) or \
                                (variants and v not in variants) or (seeds and s not in seeds):
                            continue
                        seen.add(key)
                        out.append((i, *key))
        return out


def load_plan(path, overrides=()) -> Plan:
    """Read a plan file; ``overrides`` (``key=value``) change the base config of every
    regime (e.g. a tiny smoke size). Every regime's config is built and checked here, so
    a wrong key fails before any run starts, naming the regime.

    Raises :class:`ConfigError` (one line) for an unknown variant, regime or key."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"plan {path}: cannot read it ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict) or "regimes" not in data or "base" not in data:
        raise ConfigError(f"plan {path}: expected a mapping with 'base' and 'regimes'")
    base_path = (path.parent / data["base"]).resolve()
    base = apply_overrides(ExperimentConfig.from_yaml(base_path), list(overrides))
    variants = list(data.get("variants", VARIANTS))
    seeds = [int(s) for s in data.get("seeds", [0])]
    regimes = {}
    for name, r in data["regimes"].items():
        r = r or {}
        unknown = set(r) - {"title", "question", "set", "extra_val", "compare_to"}
        if unknown:
            raise ConfigError(f"plan {path}: regime {name!r} has unknown keys {sorted(unknown)}")
        regimes[name] = Regime(name=name, title=r.get("title", name),
                               question=r.get("question", ""),
                               overrides=list(r.get("set", [])),
                               extra_val=dict(r.get("extra_val", {})),
                               compare_to=r.get("compare_to"))
    schedule = data.get("schedule") or [{"regimes": list(regimes)}]
    plan = Plan(path=path, base=base, regimes=regimes, variants=variants, seeds=seeds,
                schedule=schedule, bundle=data.get("bundle"))
    bad = [v for v in variants + [v for st in schedule for v in st.get("variants", [])]
           if v not in VARIANTS]
    if bad:
        raise ConfigError(f"plan {path}: unknown variant {bad[0]!r}; known: {list(VARIANTS)}")
    for st in schedule:
        for r in st.get("regimes", []):
            if r not in regimes:
                raise ConfigError(f"plan {path}: the schedule names regime {r!r}, which is "
                                  f"not defined; defined: {list(regimes)}")
    for name, r in regimes.items():
        if r.compare_to and r.compare_to not in regimes:
            raise ConfigError(f"plan {path}: regime {name!r} compares to {r.compare_to!r}, "
                              "which is not defined")
        try:
            plan.config(name)
        except ConfigError as e:
            raise ConfigError(f"plan {path}, regime {name!r}: {e}") from None
    if plan.bundle and plan.bundle.get("regime") not in regimes:
        raise ConfigError(f"plan {path}: bundle regime {plan.bundle.get('regime')!r} is "
                          "not defined")
    return plan


def run_dir(runs_root, regime: str, variant: str, seed: int) -> Path:
    """Folder of one run of a plan: ``<runs_root>/<regime>/<variant>_seed<seed>``."""
    return Path(runs_root) / regime / f"{variant}_seed{seed}"


def plan_results(plan: Plan, runs_root, regime: str) -> list[dict]:
    """The finished runs of one regime (checked against the plan's config), sorted by
    variant and seed."""
    out = []
    cfg = plan.config(regime)
    for v in VARIANTS:
        for s in sorted({s for _, r, vv, s in plan.runs() if r == regime and vv == v}):
            wd = run_dir(runs_root, regime, v, s)
            r = finished_run(wd, variant_config(cfg, v, s, wd))
            if r is not None:
                out.append(r)
    return out


def run_plan(plan: Plan, runs_root, jobs: int = 1, threads: int = 1, regimes=None,
             variants=None, seeds=None, on_step=None, progress: bool = True,
             probe_every: int = 50) -> list[dict]:
    """Run every missing run of ``plan`` (optionally only some regimes / variants /
    seeds) in schedule order, ``jobs`` at a time; finished runs are reused.

    ``on_step(step_index, regimes)`` is called each time every run of a schedule step
    has finished (so reports and bundles can be written while later steps run).
    Returns the failures (``{"variant", "seed", "work_dir", "error"}``); the other runs
    are all in their folders."""
    wanted = plan.runs(regimes, variants, seeds)
    pending, todo = {}, []
    for step, r, v, s in wanted:
        wd = run_dir(runs_root, r, v, s)
        cfg = plan.config(r)
        if finished_run(wd, variant_config(cfg, v, s, wd)) is None:
            pending.setdefault(step, set()).add(str(wd))
            todo.append((cfg.to_dict(), v, s, str(wd), None,
                         {"extra_val": plan.regimes[r].extra_val, "probe_every": probe_every},
                         threads))
    steps = sorted({st for st, *_ in wanted})
    step_regimes = {st: sorted({r for s2, r, *_ in wanted if s2 == st}) for st in steps}
    failures = []
    reported = set()

    def report_ready():
        for st in steps:  # in order: a step is reported once all earlier ones are
            if st in reported:
                continue
            if pending.get(st):
                return
            reported.add(st)
            if on_step is not None:
                on_step(st, step_regimes[st])

    def on_result(r):
        if "error" in r:
            failures.append(r)
            print(f"run failed: {r['work_dir']}: {r['error']}\n{r.get('traceback', '')}",
                  flush=True)
        for st in pending:
            pending[st].discard(r.get("work_dir") or r["config"]["train"]["work_dir"])
        report_ready()

    report_ready()  # steps with nothing left to run
    run_jobs(todo, jobs, on_result=on_result, progress=progress)
    return failures


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


def paired_stats(diffs) -> dict:
    """Mean, std, the 95 % Student-t half-width and interval of paired differences.

    ``half = t_{0.975, n-1} * std / sqrt(n)`` (the usual paired t-interval; NaN for
    fewer than 2 values). ``{"mean_std": (mean, std), "ci95": half, "interval": (lo,
    hi), "per_seed": diffs}``."""
    diffs = [float(d) for d in diffs]
    m, s = _mean_std(diffs)
    n = len(diffs)
    half = _t975(n - 1) * s / math.sqrt(n) if n > 1 else float("nan")
    return {"mean_std": (m, s), "ci95": half, "interval": (m - half, m + half),
            "per_seed": diffs}


def stage_grad(result, stage: str, loss: str, skip_first=True) -> float:
    """Mean over probes of the gradient norm ``loss`` sends into backbone stage
    ``stage`` (``"stem"``, ``"C2"`` .. ``"C5"``)."""
    return mean_grad(result, f"backbone.{stage}", loss, skip_first)


def summarize(results: list[dict]) -> dict:
    """Per variant: mean ± std over seeds of every reported number, plus paired
    differences (same seed) for every pair in :data:`PAIRS`, with 95 % t-intervals.

    Row keys: ``val_mIoU``, ``best_val_mIoU``, ``train_mIoU``, ``gap`` (train − val),
    ``grad_up_backbone`` / ``grad_high_backbone`` (the backbone as one vector),
    ``grad_<loss>_<stage>`` per stage, ``cka_C2`` .. ``cka_C5``, ``val_mIoU_<name>`` for
    each extra validation set, ``minutes``, and ``per_seed`` (seed -> val mIoU)."""
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
               "minutes": _mean_std([r["seconds"] / 60 for r in rs]),
               "cpu_minutes": _mean_std([r.get("cpu_seconds", math.nan) / 60 for r in rs])}
        for s in STAGES:
            row[f"cka_{s}"] = _mean_std([r["cka"].get(s) for r in rs])
        for s in STAGES:
            for loss in LOSSES:
                row[f"grad_{loss}_{s}"] = _mean_std([stage_grad(r, s, loss) for r in rs])
        for name in sorted({k for r in rs for k in r.get("extra_val", {})}):
            row[f"val_mIoU_{name}"] = _mean_std([r.get("extra_val", {}).get(name) for r in rs])
        row["per_seed"] = {str(r["seed"]): r["val"]["mIoU"] for r in rs}
        summary[v] = row
    paired = {}
    seeds = {v: {r["seed"]: r for r in rs} for v, rs in by_variant.items()}
    for a, b in PAIRS:
        if a in seeds and b in seeds:
            common = sorted(set(seeds[a]) & set(seeds[b]))
            diffs = [seeds[a][s]["val"]["mIoU"] - seeds[b][s]["val"]["mIoU"] for s in common]
            paired[f"{a} - {b}"] = {**paired_stats(diffs), "seeds": common}
    order = list(VARIANTS)
    summary = {v: summary[v] for v in sorted(summary, key=order.index)}
    return {"variants": summary, "paired": paired}


def compare_regimes(results: list[dict], reference: list[dict]) -> dict:
    """Paired by variant and seed: ``results`` minus ``reference`` val mIoU (a recipe
    change on the same labelled subset), ``{variant: paired_stats + seeds}``."""
    ref = {(r["variant"], r["seed"]): r for r in reference}
    out = {}
    for v in VARIANTS:
        common = sorted(r["seed"] for r in results
                        if r["variant"] == v and (v, r["seed"]) in ref)
        if not common:
            continue
        mine = {r["seed"]: r for r in results if r["variant"] == v}
        diffs = [mine[s]["val"]["mIoU"] - ref[(v, s)]["val"]["mIoU"] for s in common]
        cka = {st: paired_stats([mine[s]["cka"].get(st, float("nan")) -
                                 ref[(v, s)]["cka"].get(st, float("nan")) for s in common])
               for st in STAGES}
        out[v] = {**paired_stats(diffs), "seeds": common,
                  "cka_diff": {st: c["mean_std"] for st, c in cka.items()}}
    return out


def compact_run(result: dict) -> dict:
    """A run's result without its full config and with backbone-only gradient probes:
    what the regime JSON in docs/results keeps per seed (a few KB)."""
    keep = {k: result[k] for k in ("variant", "seed", "seconds", "cpu_seconds", "val",
                                   "best_val", "history",
                                   "train_mIoU", "cka", "loss_curve") if k in result}
    keep["extra_val"] = result.get("extra_val", {})
    keep["grad_norms"] = [{"iter": g["iter"],
                           "norms": {m: n for m, n in g["norms"].items()
                                     if m.startswith("backbone")}}
                          for g in result.get("grad_norms", [])]
    return keep


def _fmt(ms, digits=1):
    m, s = ms
    return "n/a" if math.isnan(m) else f"{m:.{digits}f} ± {s:.{digits}f}"


def _interval(p) -> str:
    half = p.get("ci95")
    if half is None or (isinstance(half, float) and math.isnan(half)):
        return "n/a"
    m = _ms(p["mean_std"])[0]
    return f"[{m - half:+.1f}, {m + half:+.1f}]"


def markdown_table(summary: dict) -> str:
    """The results table of docs/stop_gradient.md: one row per variant (mean ± std over
    seeds), then the paired differences with their 95 % t-intervals."""
    variants = summary["variants"]
    extra = sorted({k[len("val_mIoU_"):] for row in variants.values() for k in row
                    if k.startswith("val_mIoU_")})
    head = ("| variant | val mIoU | " + "".join(f"val mIoU ({e}) | " for e in extra)
            + "train mIoU | train−val gap | CKA C2 | CKA C3 | CKA C4 | "
            "CKA C5 | ‖∇ backbone‖ from loss_up | ‖∇ backbone‖ from loss_high | min/run |")
    lines = [head, "|" + "---|" * (11 + len(extra))]
    for v, row in variants.items():
        row = {**{k: (math.nan, math.nan) for k in (
            "val_mIoU", "train_mIoU", "gap", "grad_up_backbone", "grad_high_backbone",
            "minutes", *(f"cka_{s}" for s in STAGES))}, **row}  # a card's summary has fewer
        lines.append(
            f"| {LABELS.get(v, v)} | {_fmt(row['val_mIoU'])} | "
            + "".join(f"{_fmt(row.get(f'val_mIoU_{e}', (math.nan, math.nan)))} | "
                      for e in extra)
            + f"{_fmt(row['train_mIoU'])} | "
            f"{_fmt(row['gap'])} | " + " | ".join(_fmt(row[f'cka_{s}'], 3) for s in STAGES) +
            f" | {_fmt(row['grad_up_backbone'], 3)} | {_fmt(row['grad_high_backbone'], 3)} | "
            f"{_fmt(row['minutes'])} |")
    lines.append("")
    lines.append("| paired difference (same seed) | val mIoU, mean ± std | 95 % t-interval "
                 "| per seed |")
    lines.append("|---|---|---|---|")
    for name, p in summary["paired"].items():
        a, b = name.split(" - ")
        lines.append(f"| {LABELS.get(a, a)} − {LABELS.get(b, b)} | {_fmt(p['mean_std'])} | "
                     f"{_interval(p)} | "
                     + ", ".join(f"{d:+.1f}" for d in p["per_seed"]) + " |")
    return "\n".join(lines)


def gradient_table(summary: dict) -> str:
    """Markdown: the gradient norm each loss sends into each backbone stage (mean over
    probes after the first, then mean ± std over seeds), per variant."""
    lines = ["| variant | loss | " + " | ".join(STAGES) + " |", "|---|---|" + "---|" * len(STAGES)]
    for v, row in summary["variants"].items():
        for loss in LOSSES:
            cells = [row.get(f"grad_{loss}_{s}") for s in STAGES]
            if all(c is None for c in cells):
                continue
            vals = [_ms(c)[0] if c is not None else math.nan for c in cells]
            if loss == "loss_high" and v == "semantic_fpn":
                continue  # no HFG branch
            lines.append(f"| {LABELS.get(v, v)} | {loss} | "
                         + " | ".join("0 exactly" if x == 0 else f"{x:.3g}" for x in vals)
                         + " |")
    return "\n".join(lines)


def versus_table(versus: dict, label: str, reference: str) -> str:
    """Markdown: a recipe change paired by variant and seed (:func:`compare_regimes`)."""
    lines = [f"| variant | {label} − {reference}, val mIoU | 95 % t-interval | per seed | "
             "CKA C4 change | CKA C5 change |", "|---|---|---|---|---|---|"]
    for v, p in versus.items():
        c = p.get("cka_diff", {})
        lines.append(f"| {LABELS.get(v, v)} | {_fmt(p['mean_std'])} | {_interval(p)} | "
                     + ", ".join(f"{d:+.1f}" for d in p["per_seed"]) + " | "
                     + " | ".join(f"{_ms(c[s])[0]:+.3f}" if s in c else "n/a"
                                  for s in ("C4", "C5")) + " |")
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
    part = summary.get("paired", {}).get("hfgd_partial_sg - hfgd_nosg")
    if part and len(part.get("per_seed", [])) > 1:
        out.append(f"- **partial sg (C5, F_high and tokens only) − no-sg, paired**: "
                   + verdict(part, "partial sg", "no-sg") + ".")
    for k in ("hfgd_sg", "hfgd_partial_sg", "hfgd_nosg", "semantic_fpn"):
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


def _regime_words(meta: dict, seeds) -> str:
    """A regime's settings in words (from the config stored in its meta)."""
    cfg = meta.get("config") or {}
    d, t = cfg.get("data", {}), cfg.get("train", {})
    kw, vkw = d.get("kwargs", {}), {**d.get("kwargs", {}), **d.get("val_kwargs", {})}
    text = (f"{kw.get('num', '?')} labelled scenes of {kw.get('size', '?')} px, "
            f"{t.get('iters', '?')} iterations of batch {d.get('batch_size', '?')}, "
            f"backbone lr × {t.get('backbone_lr_mult', '?')}")
    if t.get("layer_decay") is not None:
        text += f" with layer-wise decay {t['layer_decay']} per stage"
    tv, vv = kw.get("variation", 1.0), vkw.get("variation", 1.0)
    if tv != vv:
        text += (f", appearance variation {tv} in the labelled scenes and {vv} in "
                 "validation")
    bp = meta.get("backbone_pretraining") or {}
    if bp.get("source"):
        text += f", backbone pretrained on {bp['source']}"
    return (f"{text}, seeds {sorted(seeds)}; {meta.get('date', '?')}, "
            f"{meta.get('machine', '?')}")


def stored_results(folder=None) -> list[dict]:
    """The stored stop-gradient results, one dict per regime: ``source`` (file),
    ``name`` (regime key), ``title``, ``question`` (what it tests, in words), ``regime``
    (settings in words), ``summary`` (as ``summarize`` returns it), ``versus`` (a paired
    recipe comparison, or None), ``runs`` (per-run results, or None) and ``figure`` (the
    saved summary PNG, or None); in the plan's order (``meta.order``), then by file name.

    Reads ``results_dir()/sg_*.json`` (``{"meta", "summary"[, "runs", "versus"]}``);
    with none there, falls back to the summary the default bundled model's card
    carries."""
    folder = Path(folder) if folder else results_dir()
    out = []
    for f in sorted(folder.glob("sg_*.json")):
        data = json.loads(f.read_text())
        meta = data.get("meta", {})
        seeds = sorted({s for row in data["summary"].get("variants", {}).values()
                        for s in row.get("seeds", [])})
        fig = f.parent.parent / "figures" / f"{f.stem}_summary.png"
        out.append({"source": str(f), "name": meta.get("regime", f.stem.removeprefix("sg_")),
                    "title": meta.get("title", f.stem), "question": meta.get("question", ""),
                    "regime": _regime_words(meta, seeds), "order": meta.get("order", 1e9),
                    "summary": data["summary"], "versus": data.get("versus"),
                    "runs": data.get("runs"), "figure": fig if fig.is_file() else None})
    if out:
        return sorted(out, key=lambda r: (r["order"], r["source"]))
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
        out.append({"source": f"card of {zoo.DEFAULT_MODEL}", "name": "card",
                    "title": exp.get("title", "sg"), "question": "",
                    "regime": f"{n} seeds (from the bundled model's card; paired differences "
                              "are in docs/results)", "order": 0,
                    "summary": {"variants": variants, "paired": {}}, "versus": None,
                    "runs": None, "figure": None})
    return out


# ---- the regime map: which regime favours which variant, in plain words ----------------------

def verdict(pair: dict | None, a: str, b: str) -> str:
    """One plain-words line for a paired difference ``a − b`` (a :func:`paired_stats`
    dict, or its JSON): ahead beyond the seed noise (the 95 % t-interval excludes 0), or
    no measurable difference."""
    if not pair:
        return f"{a} vs {b}: not measured"
    per = pair.get("per_seed", [])
    m = _ms(pair["mean_std"])[0]
    if len(per) < 2:
        return f"{a} − {b} {m:+.1f} on one seed: no estimate of the noise"
    half = pair.get("ci95")
    if half is None:
        half = _t975(len(per) - 1) * _ms(pair["mean_std"])[1] / math.sqrt(len(per))
    lo, hi = m - half, m + half
    if lo > 0 or hi < 0:
        win, lose = (a, b) if m > 0 else (b, a)
        if m < 0:  # the interval of win − lose
            lo, hi = -hi, -lo
        every = all(d > 0 for d in per) or all(d < 0 for d in per)
        return (f"{win} ahead of {lose} by {abs(m):.1f} [{lo:+.1f}, {hi:+.1f}]"
                + (f", on every one of {len(per)} seeds" if every else
                   f", on average over {len(per)} seeds (not on every seed)"))
    return (f"{a} − {b} {m:+.1f} [{lo:+.1f}, {hi:+.1f}]: no measurable difference "
            f"over {len(per)} seeds")


def _short(pair: dict) -> str:
    """``+1.2 [+0.4, +2.0] (beyond the noise)`` for a paired difference."""
    per = pair.get("per_seed", [])
    m, sd = _ms(pair["mean_std"])
    if len(per) < 2:
        return f"{m:+.1f} (one seed)"
    half = pair.get("ci95")
    half = _t975(len(per) - 1) * sd / math.sqrt(len(per)) if half is None else float(half)
    beyond = m - half > 0 or m + half < 0
    return (f"{m:+.1f} [{m - half:+.1f}, {m + half:+.1f}] "
            f"({'beyond' if beyond else 'within'} the noise)")


def regime_map(stored=None) -> list[dict]:
    """Per stored regime: its name, title, question, seeds, val mIoU per variant (mean
    over seeds), the best variant and whether its lead is beyond noise, the key paired
    differences with verdicts, and C5 drift per variant. ``stored``: as
    :func:`stored_results` returns (default: read it)."""
    stored = stored_results() if stored is None else stored
    rows = []
    for r in stored:
        v = r["summary"].get("variants", {})
        paired = r["summary"].get("paired", {})
        means = {k: _ms(row["val_mIoU"])[0] for k, row in v.items()}
        seeds = max((len(row.get("seeds", [])) for row in v.values()), default=0)
        ranked = sorted(means, key=means.get, reverse=True)
        best = ranked[0] if ranked else None
        lead = lead_pair = None
        if len(ranked) > 1:
            a, b = ranked[0], ranked[1]
            lead_pair = f"{a} - {b}" if f"{a} - {b}" in paired else f"{b} - {a}"
            p = paired.get(f"{a} - {b}") or paired.get(f"{b} - {a}")
            if p and f"{b} - {a}" in paired and f"{a} - {b}" not in paired:
                p = {**p, "mean_std": (-_ms(p["mean_std"])[0], _ms(p["mean_std"])[1]),
                     "per_seed": [-d for d in p["per_seed"]]}
            lead = verdict(p, LABELS.get(a, a), LABELS.get(b, b)) if p else None
        rows.append({
            "name": r.get("name"), "title": r["title"], "question": r.get("question", ""),
            "seeds": seeds, "val_mIoU": means, "best": best, "best_lead": lead,
            "best_pair": lead_pair,
            "pairs": {k: paired[k] for k in paired},
            "verdicts": {k: verdict(paired.get(k), *(LABELS.get(x, x) for x in k.split(" - ")))
                         for k in paired},
            "cka_C5": {k: _ms(row["cka_C5"])[0] for k, row in v.items() if "cka_C5" in row},
            "versus": r.get("versus")})
    return rows


def regime_map_markdown(stored=None) -> str:
    """The regime map as one markdown table (val mIoU are means over seeds; differences
    are paired by seed, with 95 % t-intervals)."""
    rows = regime_map(stored)
    head = ("| regime | seeds | SemanticFPN | HFGD no-sg | HFGD sg | HFGD partial sg | "
            "sg − no-sg [95 % CI] | partial − no-sg [95 % CI] | no-sg − SemanticFPN "
            "[95 % CI] | C5 CKA FPN / no-sg / sg / partial |")
    lines = [head, "|" + "---|" * 10]
    for row in rows:
        m = row["val_mIoU"]

        def cell(k):
            p = row["pairs"].get(k)
            return "–" if not p else f"{_ms(p['mean_std'])[0]:+.1f} {_interval(p)}"
        lines.append(
            f"| {row['title']} | {row['seeds']} | "
            + " | ".join(f"{m[v]:.1f}" if v in m else "–"
                         for v in ("semantic_fpn", "hfgd_nosg", "hfgd_sg", "hfgd_partial_sg"))
            + f" | {cell('hfgd_sg - hfgd_nosg')} | {cell('hfgd_partial_sg - hfgd_nosg')} | "
            f"{cell('hfgd_nosg - semantic_fpn')} | "
            + " / ".join(f"{row['cka_C5'][v]:.3f}" if v in row["cka_C5"] else "–"
                         for v in ("semantic_fpn", "hfgd_nosg", "hfgd_sg", "hfgd_partial_sg"))
            + " |")
    return "\n".join(lines)


def across_regimes(stored=None, pair: str = "hfgd_sg - hfgd_nosg") -> dict | None:
    """Every paired seed of every stored regime for one difference ``pair`` (e.g.
    ``"hfgd_sg - hfgd_nosg"``, val mIoU points): how many fall below / above / at zero,
    their mean and range, and the exact two-sided **sign test** p-value over the
    non-zero ones (binomial, p = 1/2; each regime's runs are separate trainings). None
    when fewer than two regimes measured the pair. A sign count, not a pooled interval:
    the regimes differ in what they test, so their sizes are not averaged into one
    estimate (each regime's own t-interval is in :func:`regime_map`)."""
    stored = stored_results() if stored is None else stored
    diffs, names = [], []
    for r in stored:
        p = r["summary"].get("paired", {}).get(pair)
        if p and p.get("per_seed"):
            diffs += [float(d) for d in p["per_seed"]]
            names.append(r.get("name"))
    if len(names) < 2:
        return None
    below = sum(d < 0 for d in diffs)
    above = sum(d > 0 for d in diffs)
    n, k = below + above, min(below, above)
    p_sign = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0
    return {"pair": pair, "regimes": names, "seeds": len(diffs), "below": below,
            "above": above, "zero": len(diffs) - n, "mean": sum(diffs) / len(diffs),
            "min": min(diffs), "max": max(diffs), "sign_p": p_sign}


def _across_words(a: dict) -> str:
    x, y = (LABELS.get(v, v) for v in a["pair"].split(" - "))
    zero = f", equal on {a['zero']}" if a["zero"] else ""
    if a["sign_p"] < 0.05:
        lean = ("lower" if a["below"] > a["above"] else "higher")
        says = f"{x} is {lean} than {y} more often than chance would make it"
    else:
        says = "no consistent direction beyond chance"
    return (f"- **Across the {len(a['regimes'])} regimes** ({x} − {y}, every paired seed): "
            f"below zero on {a['below']} of {a['seeds']}, above on {a['above']}{zero}; mean "
            f"{a['mean']:+.1f}, from {a['min']:+.1f} to {a['max']:+.1f}; two-sided sign test "
            f"p = {a['sign_p']:.2g}: {says}.")


def describe_regime_map(stored=None) -> str:
    """Markdown bullets, one per regime, in plain words: what it tests, which variant
    came out best (mean over seeds) and whether that lead is beyond the seed noise,
    what the stop-gradient did to accuracy and to C5's drift; then, when two or more
    regimes measured it, one bullet on HFGD sg − HFGD no-sg over every paired seed of
    every regime (:func:`across_regimes`). Computed from the stored numbers, whichever
    way they came out."""
    stored = stored_results() if stored is None else stored
    out = []
    for row in regime_map(stored):
        m = row["val_mIoU"]
        if not m:
            continue
        txt = f"- **{row['title']}**"
        if row["question"]:
            txt += f" ({row['question'].rstrip('.')})"
        best = row["best"]
        txt += (f": best mean over {row['seeds']} seed{'s' if row['seeds'] != 1 else ''} "
                f"{LABELS.get(best, best)} {m[best]:.1f}")
        if row["best_lead"]:
            txt += f"; {row['best_lead']}"
        txt += "."
        for k in ("hfgd_sg - hfgd_nosg", "hfgd_partial_sg - hfgd_nosg",
                  "hfgd_nosg - semantic_fpn"):
            if k in row["pairs"] and k != row.get("best_pair"):  # the lead is said above
                txt += f" {row['verdicts'][k][0].upper()}{row['verdicts'][k][1:]}."
        c5 = row["cka_C5"]
        if "hfgd_sg" in c5 and "hfgd_nosg" in c5:
            d = c5["hfgd_sg"] - c5["hfgd_nosg"]
            txt += (f" C5 CKA to ImageNet: sg {c5['hfgd_sg']:.3f} vs no-sg "
                    f"{c5['hfgd_nosg']:.3f} ("
                    + ("sg keeps C5 closer" if d > 0.005 else
                       "sg lets C5 drift more" if d < -0.005 else "about the same")
                    + (f"; SemanticFPN {c5['semantic_fpn']:.3f}" if "semantic_fpn" in c5
                       else "") + ").")
        vs = row.get("versus")
        if vs and vs.get("variants"):
            ref = vs.get("reference_title", vs.get("reference", "the reference"))
            parts = [f"{LABELS.get(v, v)} {_short(p)}" for v, p in vs["variants"].items()]
            txt += (" Change against " + ref + " (same variant and seed): "
                    + "; ".join(parts) + ".")
        out.append(txt)
    a = across_regimes(stored)
    if a:
        out.append(_across_words(a))
    return "\n".join(out)


def _main(argv=None) -> int:
    """``python -m hfgd_lab.experiments.stop_gradient --job FILE``: one run of
    :func:`run_jobs` (the job tuple as JSON); exit code 1 when it failed."""
    p = argparse.ArgumentParser(description="one stop-gradient run (used by run_jobs)")
    p.add_argument("--job", required=True)
    args = p.parse_args(argv)
    job = json.loads(Path(args.job).read_text())
    return 1 if "error" in _job(tuple(job)) else 0


if __name__ == "__main__":
    sys.exit(_main())
