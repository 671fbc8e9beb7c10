"""The stop-gradient regime map: every regime, variant and seed of a plan file.

    python benchmarks/stop_gradient.py --plan configs/sg/regimes.yaml --runs runs/sg \\
        --jobs 2 --threads 1 --docs docs --bundle hfgd_lab/weights

runs, in the plan's schedule order, every run that has no ``result.json`` yet (a
finished run is reused; one made with another config is an error, never silently
mixed in), each in its own process: ``<runs>/<regime>/<variant>_seed<seed>/``. Each time
a schedule step is complete it writes, per regime touched, ``<runs>/<regime>/results.md``
and, with ``--docs DIR``, ``DIR/results/sg_<regime>.json`` (meta: seeds, per-seed values,
backbone and its pretraining source and licence, recipe, command, machine, date; the
summary with paired 95 % t-intervals; compact per-seed runs) and
``DIR/figures/sg_<regime>_*.png``, plus the regime map ``DIR/figures/sg_regime_map.png``.
With ``--bundle DIR`` the plan's bundle runs (``bundle: {regime, seed}``) become the
bundled models (fp16 safetensors + card), rewritten as more seeds of that regime finish
(the card's ``sg_experiment`` is the mean over the seeds done so far).

``--only``, ``--variants`` and ``--seeds`` restrict the work; ``--set KEY=VALUE`` changes
the base config of every regime (e.g. a tiny smoke size); ``--dry-run`` lists what is
done and what would run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's hfgd_lab first (a frozen worktree runs its own)

import torch  # noqa: E402

from hfgd_lab.config import ConfigError  # noqa: E402
from hfgd_lab.data import build_dataset  # noqa: E402
from hfgd_lab.data.transforms import build_eval_transform  # noqa: E402
from hfgd_lab.engine import zoo  # noqa: E402
from hfgd_lab.engine.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from hfgd_lab.engine.evaluate import evaluate  # noqa: E402
from hfgd_lab.experiments import stop_gradient as sg  # noqa: E402
from hfgd_lab.viz.experiment import plot_regime_map, save_experiment_figures  # noqa: E402

VARIANT_TO_BUNDLE = {v: name for name, v in zoo.BUNDLED.items()}


def machine() -> str:
    """CPU model, cores, torch and Python versions, in words."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({'CUDA' if torch.cuda.is_available() else 'CPU'}), Python "
            f"{platform.python_version()}")


def recipe_words(cfg: dict) -> str:
    """The fine-tuning recipe of a config, in words (for the JSON meta and the cards)."""
    t, m, d = cfg["train"], cfg["model"], cfg["data"]
    text = (f"AdamW lr {t['lr']:g} (head), backbone lr × {t['backbone_lr_mult']:g}"
            + (f" with layer-wise decay {t['layer_decay']:g} per stage"
               if t.get("layer_decay") is not None else "")
            + f", weight decay {t['weight_decay']:g}, {t['warmup_iters']} warmup iterations "
            f"then poly decay, {t['iters']} iterations of batch {d['batch_size']}, grad clip "
            f"{t['grad_clip']}, backbone BatchNorm statistics "
            + ("frozen (norm_eval)" if m.get("norm_eval") else "updated")
            + f"; random scale {d['scale'][0]:g}–{d['scale'][1]:g}, crop "
            f"{d['crop_size'][0]}, flip, photometric distortion")
    return text


def trained_on(cfg: dict, pretraining: dict | None) -> str:
    """What a bundled model was trained on, in words."""
    k = cfg["data"]["kwargs"]
    bp = pretraining or {}
    src = bp.get("source", "its pretrained weights")
    pkg = f" (pip package {bp['package']}, {bp['license']})" if bp.get("package") else ""
    return (f"{k.get('num')} labelled built-in procedural scenes ({k.get('size')} px, seed "
            f"{k.get('seed')}), fine-tuned {cfg['train']['iters']} iterations from the "
            f"{cfg['model']['backbone']} backbone pretrained on {src}{pkg}; the segmentation "
            "head knows only the 10 scene classes (sky, water, road, grass, bird, boat, car, "
            "cow, tree, building), so on a real photograph its labels are scene labels")


class Reporter:
    """Writes a regime's report, docs JSON and figures, the regime map, and bundles."""

    def __init__(self, plan, args):
        self.plan, self.args = plan, args
        self.runs = Path(args.runs)
        self.bundled_seeds = None

    def regime(self, name: str):
        plan, args = self.plan, self.args
        reg = plan.regimes[name]
        results = sg.plan_results(plan, self.runs, name)
        if not results:
            return
        summary = sg.summarize(results)
        cfg = plan.config(name).to_dict()
        pretraining = next((r.get("backbone_pretraining") for r in results
                            if r.get("backbone_pretraining")), None)
        meta = {"regime": name, "title": reg.title, "question": reg.question,
                "order": list(plan.regimes).index(name), "overrides": reg.overrides,
                "extra_val": reg.extra_val,
                "seeds": sorted({r["seed"] for r in results}),
                "variants": [v for v in sg.VARIANTS if any(r["variant"] == v for r in results)],
                "runs": len(results), "backbone_pretraining": pretraining,
                "recipe": recipe_words(cfg),
                "command": args.command, "plan": str(plan.path),
                "machine": machine(), "date": time.strftime("%Y-%m-%d"),
                "jobs": args.jobs, "threads": args.threads,
                "run_minutes_total": sum(r["seconds"] for r in results) / 60,
                "run_cpu_minutes_total": sum(r.get("cpu_seconds", 0) for r in results) / 60,
                "config": cfg}
        data = {"meta": meta, "summary": summary}
        text = f"## {reg.title}\n\n{reg.question}\n\n{sg.markdown_table(summary)}\n\n" \
               f"{sg.gradient_table(summary)}\n"
        if reg.compare_to:
            ref = sg.plan_results(plan, self.runs, reg.compare_to)
            versus = sg.compare_regimes(results, ref)
            if versus:
                data["versus"] = {"reference": reg.compare_to,
                                  "reference_title": plan.regimes[reg.compare_to].title,
                                  "variants": versus}
                text += "\n" + sg.versus_table(versus, "this recipe",
                                               plan.regimes[reg.compare_to].title) + "\n"
        data["runs"] = [sg.compact_run(r) for r in results]
        text += f"\n`{meta['command']}` — {meta['machine']}, {meta['date']}\n"
        (self.runs / name).mkdir(parents=True, exist_ok=True)
        (self.runs / name / "results.md").write_text(text)
        print(text, flush=True)
        if args.docs:
            docs = Path(args.docs)
            (docs / "results").mkdir(parents=True, exist_ok=True)
            (docs / "results" / f"sg_{name}.json").write_text(
                json.dumps(data, indent=1, default=float))
            save_experiment_figures(results, docs / "figures", prefix=f"sg_{name}_",
                                    summary=summary)

    def regime_map(self):
        if not self.args.docs:
            return
        docs = Path(self.args.docs)
        stored = [r for r in sg.stored_results(docs / "results") if r["name"] in self.plan.regimes]
        if stored:
            plot_regime_map(stored).savefig(docs / "figures" / "sg_regime_map.png", dpi=110)
            print(sg.regime_map_markdown(stored), "\n", sg.describe_regime_map(stored),
                  sep="\n", flush=True)

    def on_step(self, step, regimes):
        print(f"schedule step {step} complete: {', '.join(regimes)}", flush=True)
        for name in regimes:
            self.regime(name)
        self.regime_map()
        self.maybe_bundle()

    def maybe_bundle(self):
        b = self.plan.bundle
        if not (self.args.bundle and b):
            return
        results = sg.plan_results(self.plan, self.runs, b["regime"])
        first = {r["variant"]: r for r in results if r["seed"] == int(b.get("seed", 0))}
        if not all(v in first for v in zoo.BUNDLED.values()):
            return
        seeds = {v: sorted(r["seed"] for r in results if r["variant"] == v)
                 for v in zoo.BUNDLED.values()}
        if seeds == self.bundled_seeds:
            return
        bundle(self.plan, results, first, Path(self.args.bundle), self.args.subset,
               self.args.jobs, self.args.command, runs_root=self.runs)
        self.bundled_seeds = seeds


def bundle(plan, results: list[dict], first: dict, dest: Path, subset: int,
           jobs: int = 1, command: str = "", runs_root="runs/sg") -> None:
    """Each bundled variant's run (``first``) into ``dest`` as fp16 safetensors + card,
    with validation mIoU on the full set and on its first ``subset`` images (the shipped
    fp16 weights are what is scored; tests/test_zoo.py recomputes the subset figure),
    the backbone's pretraining source, the provenance and the stop-gradient summary of
    the regime (mean over the seeds finished so far; this file is one of them). Each run is
    read from its folder under ``runs_root`` (not the work_dir its config recorded, so that
    runs moved or copied to another folder still bundle)."""
    dest.mkdir(parents=True, exist_ok=True)
    b = plan.bundle
    reg = plan.regimes[b["regime"]]
    summary = sg.summarize(results)
    n_seeds = {v: len(row["seeds"]) for v, row in summary["variants"].items()}
    sg_summary = {v: {k: {"mean": row[k][0], "std": row[k][1]} for k in row
                      if isinstance(row[k], (tuple, list)) and len(row[k]) == 2
                      and k != "seeds"}
                  for v, row in summary["variants"].items()}
    for variant, r in first.items():
        name = VARIANT_TO_BUNDLE.get(variant)
        if name is None:
            continue
        work = sg.run_dir(runs_root, b["regime"], variant, r["seed"])
        model, card = load_checkpoint(work / "last")
        tmp = work.parent / f"{name}.fp16"
        save_checkpoint(tmp, model, classes=card["classes"], palette=card["palette"],
                        dtype=torch.float16)
        model, _ = load_checkpoint(tmp)  # score exactly what ships
        cfg = card["experiment"]
        d = cfg["data"]
        val = build_dataset(d["name"], d["root"], d["val_split"],
                            transform=build_eval_transform(*model.cfg.normalization),
                            **{**d["kwargs"], **d["val_kwargs"]})
        full = evaluate(model, val, progress=False)
        small = evaluate(model, val, max_images=subset, progress=False)
        save_checkpoint(
            dest / name, model, classes=card["classes"], palette=card["palette"],
            dtype=torch.float16,
            metrics={"val_mIoU": full["mIoU"], "val_mAcc": full["mAcc"],
                     "val_aAcc": full["aAcc"], "val_IoU": full["IoU"],
                     "val_images": full["num_images"], "subset_mIoU": small["mIoU"],
                     "subset_images": subset},
            extra={"experiment": cfg, "dataset": "scenes",
                   "trained_on": trained_on(cfg, card.get("backbone_pretraining")),
                   "backbone_pretraining": card.get("backbone_pretraining"),
                   "recipe": recipe_words(cfg),
                   "variant": variant, "seed": r["seed"],
                   "sg_experiment": {
                       "title": reg.title, "regime": b["regime"],
                       "seeds": max(n_seeds.values()), "seeds_per_variant": n_seeds,
                       "note": ("mean ± std over the seeds of this regime (paired "
                                "differences: docs/results/sg_" + b["regime"] + ".json); "
                                f"this file is seed {r['seed']}, whose own validation "
                                "mIoU is metrics.val_mIoU"),
                       "variants": sg_summary},
                   "provenance": {"command": command,
                                  "machine": machine(), "date": time.strftime("%Y-%m-%d"),
                                  "train_minutes": r["seconds"] / 60,
                                  "train_cpu_minutes": r.get("cpu_seconds", 0) / 60,
                                  "threads": r.get("threads"),
                                  "jobs": jobs,
                                  "note": f"{jobs} run(s) side by side on the machine, "
                                          f"{r.get('threads')} torch thread(s) each"}})
        for p in tmp.parent.glob(f"{tmp.name}.*"):
            p.unlink()
        print(f"bundled {name}: val mIoU {full['mIoU']:.2f} (subset of {subset}: "
              f"{small['mIoU']:.2f})", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--plan", default=str(ROOT / "configs/sg/regimes.yaml"))
    p.add_argument("--runs", default="runs/sg", help="run folders go here")
    p.add_argument("--only", nargs="+", metavar="REGIME", help="only these regimes")
    p.add_argument("--variants", nargs="+", help="only these variants")
    p.add_argument("--seeds", type=int, nargs="+", help="only these seeds")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="change the base config of every regime")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (processes)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--probe-every", type=int, default=50)
    p.add_argument("--docs", help="write docs/results/sg_<regime>.json and figures here")
    p.add_argument("--bundle", help="write the bundled models here (fp16 + card)")
    p.add_argument("--subset", type=int, default=8, help="images of the small fixed val subset "
                                                          "recorded in bundled cards")
    p.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    args = p.parse_args(argv)
    # the command as typed, for the JSON meta and the cards
    args.command = "python benchmarks/stop_gradient.py " + shlex.join(
        sys.argv[1:] if argv is None else argv)
    if args.jobs < 1 or args.threads < 1:
        p.error(f"--jobs {args.jobs} --threads {args.threads}: both must be >= 1")
    try:
        plan = sg.load_plan(args.plan, args.set)
        if args.only:
            unknown = [r for r in args.only if r not in plan.regimes]
            if unknown:
                raise ConfigError(f"--only {unknown[0]}: no such regime in {args.plan}; "
                                  f"regimes: {list(plan.regimes)}")
        wanted = plan.runs(args.only, args.variants, args.seeds)
        if not wanted:
            raise ConfigError("nothing to run: --only/--variants/--seeds select no run of "
                              f"{args.plan}")
        done = {w for w in wanted
                if sg.finished_run(sg.run_dir(args.runs, *w[1:]),
                                   sg.variant_config(plan.config(w[1]), w[2], w[3],
                                                     sg.run_dir(args.runs, *w[1:])))}
    except ConfigError as e:
        p.exit(2, f"stop_gradient.py: error: {e}\n")
    print(f"hfgd_lab from {sg.__file__}; {len(wanted)} runs in the plan selection, "
          f"{len(done)} finished, {len(wanted) - len(done)} to run", flush=True)
    if args.dry_run:
        for w in wanted:
            print(f"step {w[0]}: {w[1]}/{w[2]}_seed{w[3]}"
                  + ("  (finished)" if w in done else ""))
        return 0
    rep = Reporter(plan, args)
    t0 = time.perf_counter()
    failures = sg.run_plan(plan, args.runs, jobs=args.jobs, threads=args.threads,
                           regimes=args.only, variants=args.variants, seeds=args.seeds,
                           on_step=rep.on_step, progress=True, probe_every=args.probe_every)
    print(f"done in {(time.perf_counter() - t0) / 60:.1f} min; {len(failures)} failed runs",
          flush=True)
    for f in failures:
        print(f"FAILED {f['work_dir']}: {f['error']}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
