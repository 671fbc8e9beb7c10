"""The stop-gradient experiment: SemanticFPN vs HFGD no-sg vs HFGD sg, several seeds.

    python benchmarks/stop_gradient.py --config configs/zoo/finetune.yaml \
        --pretrained runs/zoo/backbone.safetensors --out runs/zoo/sg --seeds 0 1 2 --jobs 2

writes ``results.json``, ``results.md`` and figures into ``--out`` (and, with
``--docs DIR``, ``DIR/results/<out name>.json`` and ``DIR/figures/<out name>_*.png``); ``--bundle DIR`` also copies each variant's seed-0 model into the
package's bundled models. ``--set`` changes the regime (labelled images, learning
rates, iterations) for the sweeps reported in docs/stop_gradient.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUNDLE_NAMES = {"hfgd_sg": "hfgd_scenes_sg", "hfgd_nosg": "hfgd_scenes_nosg",
                "semantic_fpn": "semantic_fpn_scenes"}


def machine() -> str:
    import torch
    return (f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores, "
            f"torch {torch.__version__}, Python {platform.python_version()}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs/zoo/finetune.yaml"))
    p.add_argument("--pretrained", required=True, help="backbone weights from hfgd-lab pretrain")
    p.add_argument("--out", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=["semantic_fpn", "hfgd_nosg", "hfgd_sg"])
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (processes)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--probe-every", type=int, default=50)
    p.add_argument("--title", default=None, help="regime name for the report")
    p.add_argument("--docs", help="also write the report and figures here")
    p.add_argument("--bundle", help="copy each variant's first-seed model here (fp16)")
    p.add_argument("--subset", type=int, default=8, help="images of the small fixed val subset "
                                                          "recorded in bundled cards")
    p.add_argument("--no-reuse", action="store_true", help="rerun finished runs")
    args = p.parse_args(argv)

    from hfgd_lab.engine import ExperimentConfig
    from hfgd_lab.experiments.stop_gradient import markdown_table, run_experiment, summarize
    from hfgd_lab.utils import apply_overrides

    base = apply_overrides(ExperimentConfig.from_yaml(args.config), args.set)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results = run_experiment(base, out, seeds=args.seeds, variants=args.variants,
                             pretrained=args.pretrained, jobs=args.jobs, threads=args.threads,
                             reuse=not args.no_reuse, probe_every=args.probe_every)
    summary = summarize(results)
    meta = {"title": args.title or out.name, "command": " ".join(["python"] + sys.argv),
            "machine": machine(), "date": time.strftime("%Y-%m-%d"),
            "wall_minutes": (time.perf_counter() - t0) / 60, "jobs": args.jobs,
            "threads": args.threads, "config": base.to_dict(), "pretrained": args.pretrained}
    (out / "results.json").write_text(json.dumps({"meta": meta, "summary": summary,
                                                  "runs": results}, indent=1, default=float))
    table = markdown_table(summary)
    (out / "results.md").write_text(f"## {meta['title']}\n\n{table}\n\n"
                                    f"`{meta['command']}` — {meta['machine']}, {meta['date']}\n")
    print(table)
    from hfgd_lab.viz.experiment import save_experiment_figures
    figs = save_experiment_figures(results, out)
    if args.docs:
        docs = Path(args.docs)
        (docs / "figures").mkdir(parents=True, exist_ok=True)
        save_experiment_figures(results, docs / "figures", prefix=f"{out.name}_")
        (docs / "results").mkdir(parents=True, exist_ok=True)
        (docs / "results" / f"{out.name}.json").write_text(
            json.dumps({"meta": meta, "summary": summary}, indent=1, default=float))
    print("figures:", ", ".join(str(f) for f in figs))
    if args.bundle:
        bundle(results, out, Path(args.bundle), meta, args.subset)


def bundle(results, out: Path, dest: Path, meta: dict, subset: int):
    """Copy the first seed of each variant into the package as fp16 safetensors + card,
    with validation mIoU on the full set and on a small fixed subset (re-checked by tests)."""
    import torch

    from hfgd_lab.data import build_dataset
    from hfgd_lab.data.transforms import build_eval_transform
    from hfgd_lab.engine.checkpoint import load_checkpoint, save_checkpoint
    from hfgd_lab.engine.evaluate import evaluate

    from hfgd_lab.experiments.stop_gradient import summarize
    from hfgd_lab.models import Backbone
    from hfgd_lab.models.backbone import save_backbone_weights

    dest.mkdir(parents=True, exist_ok=True)
    # the pretrained backbone ships too (fp16), for the teaching notebook's live run
    cfg0 = results[0]["config"]["model"]
    bb = Backbone(cfg0["backbone"], weights=meta["pretrained"], **cfg0["backbone_kwargs"]).half()
    save_backbone_weights(bb, dest / "scenes_backbone.safetensors",
                          metadata={"backbone": cfg0["backbone"]})
    src_card = Path(meta["pretrained"]).with_suffix(".json")
    card = json.loads(src_card.read_text()) if src_card.is_file() else {
        "backbone": cfg0["backbone"], "note": "weights given without a pretrain card"}
    card["backbone_kwargs"] = cfg0["backbone_kwargs"]
    (dest / "scenes_backbone.json").write_text(json.dumps(card, indent=1))
    sg_summary = {v: {k: {"mean": row[k][0], "std": row[k][1]} for k in row if k != "seeds"}
                  for v, row in summarize(results)["variants"].items()}
    first = {}
    for r in results:
        first.setdefault(r["variant"], r)
    for variant, r in first.items():
        name = BUNDLE_NAMES[variant]
        model, card = load_checkpoint(out / f"{variant}_seed{r['seed']}" / "last")
        tmp = out / f"{name}.fp16"
        save_checkpoint(tmp, model, classes=card["classes"], palette=card["palette"],
                        dtype=torch.float16)
        model, _ = load_checkpoint(tmp)  # score exactly what ships
        d = card["experiment"]["data"]
        val = build_dataset(d["name"], d["root"], d["val_split"], transform=build_eval_transform(),
                            **{**d["kwargs"], **d["val_kwargs"]})
        full = evaluate(model, val, progress=False)
        small = evaluate(model, val, max_images=subset, progress=False)
        cfg = card["experiment"]
        save_checkpoint(dest / name, model, classes=card["classes"], palette=card["palette"],
                        dtype=torch.float16,
                        metrics={"val_mIoU": full["mIoU"], "val_mAcc": full["mAcc"],
                                 "val_aAcc": full["aAcc"], "val_IoU": full["IoU"],
                                 "val_images": full["num_images"],
                                 "subset_mIoU": small["mIoU"], "subset_images": subset},
                        extra={"experiment": cfg, "dataset": "scenes",
                               "trained_on": trained_on(cfg),
                               "variant": variant, "seed": r["seed"],
                               "sg_experiment": {"title": meta["title"], "seeds": len(
                                   [x for x in results if x["variant"] == variant]),
                                   "variants": sg_summary},
                               "provenance": {"command": meta["command"],
                                              "machine": meta["machine"], "date": meta["date"],
                                              "train_minutes": r["seconds"] / 60,
                                              "pretrained": meta["pretrained"]}})
        print(f"bundled {name}: val mIoU {full['mIoU']:.2f} (subset of {subset}: "
              f"{small['mIoU']:.2f})")


def trained_on(cfg: dict) -> str:
    d = cfg["data"]
    k = d["kwargs"]
    return (f"{k.get('num')} labelled built-in procedural scenes ({k.get('size')} px, seed "
            f"{k.get('seed')}), fine-tuned {cfg['train']['iters']} iterations from a backbone "
            "pretrained by `hfgd-lab pretrain` on a stream of the same generator; it knows "
            "only the 10 scene classes (sky, water, road, grass, bird, boat, car, cow, tree, "
            "building), not real photographs")


if __name__ == "__main__":
    main()
