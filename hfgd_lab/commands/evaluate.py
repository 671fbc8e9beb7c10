"""``hfgd-lab eval CKPT``: metrics on a dataset split; prints a table, writes JSON."""
from __future__ import annotations

import json
from pathlib import Path


def add_arguments(p):
    p.add_argument("checkpoint", help="checkpoint (stem, .json, .safetensors or run folder) "
                                      "or a bundled model name")
    p.add_argument("--config", help="experiment YAML whose data/eval sections to use "
                                    "(default: those stored in the checkpoint)")
    p.add_argument("--data", help="dataset name (ade20k, cityscapes, folder, scenes, ...)")
    p.add_argument("--root", help="dataset root folder")
    p.add_argument("--split", help="split (default: the config's val split)")
    p.add_argument("--data-set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="dataset keyword arguments, e.g. num=64 seed=3 for scenes")
    p.add_argument("--mode", choices=["whole", "slide"], help="inference mode")
    p.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"), help="slide window")
    p.add_argument("--stride", type=int, nargs=2, metavar=("H", "W"), help="slide step")
    p.add_argument("--scales", type=float, nargs="+", help="multi-scale test, e.g. 0.75 1 1.25")
    p.add_argument("--flip", action="store_true", help="add horizontally flipped views")
    p.add_argument("--branch", choices=["up", "high"], default="up",
                   help="evaluate the upsampler (the answer) or the HFG branch")
    p.add_argument("--max-images", type=int, help="evaluate only the first N images")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--out", help="JSON output (default: <checkpoint>.eval.json)")
    p.add_argument("--no-progress", action="store_true")


def run(args):
    import torch

    from ..data import build_dataset
    from ..data.transforms import build_eval_transform
    from ..engine.evaluate import evaluate, format_results
    from ..engine.experiment import EvalConfig, ExperimentConfig
    from ..engine.inference import InferenceOptions
    from ..utils import parse_override
    from ..engine.loaded import from_pretrained

    loaded = from_pretrained(args.checkpoint)
    model, card, ckpt_stem = loaded.model, loaded.card, loaded.output_stem
    if args.config:
        exp = ExperimentConfig.from_yaml(args.config)
        data, ev = exp.data.__dict__.copy(), exp.eval.__dict__.copy()
    else:
        stored = card.get("experiment") or {}
        data, ev = dict(stored.get("data") or {}), dict(stored.get("eval") or {})
    name = args.data or data.get("name")
    if not name:
        raise ValueError("no dataset: give --data NAME (and --root) or --config")
    root = args.root if args.root is not None else (data.get("root") if not args.data else None)
    split = args.split or data.get("val_split", "val")
    kwargs = {} if args.data else {**data.get("kwargs", {}), **data.get("val_kwargs", {})}
    kwargs.update(dict(parse_override(x) for x in args.data_set))
    ev = EvalConfig(**{k: v for k, v in ev.items() if k in EvalConfig.__dataclass_fields__})
    for key, value in (("mode", args.mode), ("crop_size", args.crop), ("stride", args.stride),
                       ("scales", args.scales)):
        if value is not None:
            setattr(ev, key, list(value) if isinstance(value, (list, tuple)) else value)
    ev.flip = ev.flip or args.flip
    if args.max_images:
        ev.max_images = args.max_images
    ev.validate()

    dataset = build_dataset(name, root, split,
                            transform=build_eval_transform(*model.cfg.normalization), **kwargs)
    if len(dataset.CLASSES) != model.cfg.num_classes:
        raise ValueError(f"dataset {name!r} has {len(dataset.CLASSES)} classes but the model "
                         f"predicts {model.cfg.num_classes}")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    model.to(device)
    opts = InferenceOptions.from_eval_config(ev, branch=args.branch)
    result = evaluate(model, dataset, opts, device, max_images=ev.max_images,
                      progress=not args.no_progress)
    print(format_results(result, dataset.CLASSES))
    out = Path(args.out) if args.out else Path(f"{ckpt_stem}.eval.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"checkpoint": str(args.checkpoint), "dataset": name, "root": root, "split": split,
              "dataset_kwargs": kwargs, "inference": opts.__dict__, "classes": list(dataset.CLASSES),
              **result}
    out.write_text(json.dumps(record, indent=1, default=float))
    print(f"wrote {out}")
