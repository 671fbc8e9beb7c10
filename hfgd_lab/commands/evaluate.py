"""``hfgd-lab eval CKPT``: metrics on a dataset split; prints a table, writes JSON.

The dataset defaults to the one the checkpoint was trained on (its card stores the
experiment), on its validation split. Every option, the dataset and the JSON output
location are checked before the first image is evaluated; an existing file that eval did
not write is never replaced (``--overwrite`` to do so).
"""
from __future__ import annotations

import json
from pathlib import Path

from ._common import (add_inference_arguments, atomic_write, check_inference_arguments,
                      positive_int, probe_writable_dir)

TOOL = "hfgd-lab eval"


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
    add_inference_arguments(p)
    p.add_argument("--branch", choices=["up", "high"], default="up",
                   help="evaluate the upsampler (the answer) or the HFG branch")
    p.add_argument("--max-images", type=positive_int, help="evaluate only the first N images")
    p.add_argument("--out", help="JSON output (default: <checkpoint>.eval.json)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out file that eval did not write")
    p.add_argument("--no-progress", action="store_true")


def check_out(out: Path, overwrite: bool) -> None:
    """The JSON output can be written, and replaces nothing but an earlier eval result
    (or anything, with ``--overwrite``): checked before the evaluation starts."""
    if out.is_dir():
        raise IsADirectoryError(f"--out {out}: is a folder; give a file name such as "
                                f"{out / 'eval.json'}")
    if out.exists() and not overwrite:
        try:
            ours = json.loads(out.read_text()).get("tool") == TOOL
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise FileExistsError(f"--out {out}: exists and was not written by {TOOL}; choose "
                                  "another file, or pass --overwrite to replace it")
    probe_writable_dir(out.parent, "--out", out)


def run(args):
    mode = check_inference_arguments(args, default_mode=None)
    if args.root and not args.data:
        raise ValueError(f"--root {args.root}: give the dataset with it (--data NAME)")
    if args.out:
        check_out(Path(args.out), args.overwrite)

    # heavy imports only now that the arguments are known to be good: the engine imports
    # torch and timm (~3-5 s, measured), which --help and argument errors must not pay
    from ..data.transforms import build_eval_transform
    from ..engine.evaluate import evaluate, format_results
    from ..engine.experiment import EvalConfig, ExperimentConfig
    from ..engine.inference import InferenceOptions
    from ..engine.loaded import from_pretrained
    from ..utils import parse_override
    from ._checks import check_dataset_kwargs, check_dataset_name, open_split
    from ._common import resolve_device

    device = resolve_device(args.device)
    extra = dict(parse_override(x) for x in args.data_set)
    loaded = from_pretrained(args.checkpoint)
    model, card = loaded.model, loaded.card
    if args.branch == "high" and not loaded.has_high:
        raise ValueError(f"--branch high: {loaded.name} is a SemanticFPN baseline with no HFG "
                         "branch (use --branch up)")
    if args.config:
        exp = ExperimentConfig.from_yaml(args.config)
        data, ev = exp.data.__dict__.copy(), exp.eval.__dict__.copy()
        source = args.config
    else:
        stored = card.get("experiment") or {}
        data, ev = dict(stored.get("data") or {}), dict(stored.get("eval") or {})
        source = "the checkpoint's card"
    name = args.data or data.get("name")
    if not name:
        raise ValueError(f"no dataset: {source} names none; give --data NAME (and --root DIR) "
                         "or --config")
    check_dataset_name(name, "--data" if args.data else "data.name")
    root = args.root if args.data else data.get("root")
    split = args.split or data.get("val_split", "val")
    kwargs = {} if args.data else {**data.get("kwargs", {}), **data.get("val_kwargs", {})}
    if not args.data:
        check_dataset_kwargs(name, kwargs, f"data.kwargs (from {source})", "")
    check_dataset_kwargs(name, extra, "--data-set", "")
    kwargs.update(extra)
    ev = EvalConfig(**{k: v for k, v in ev.items() if k in EvalConfig.__dataclass_fields__})
    if mode is not None:
        ev.mode = mode
    for key, value in (("crop_size", args.crop), ("stride", args.stride),
                       ("scales", args.scales)):
        if value is not None:
            setattr(ev, key, list(value))
    ev.flip = ev.flip or args.flip
    if args.max_images:
        ev.max_images = args.max_images
    ev.validate()

    dataset = open_split(name, root, split, kwargs, "--split" if args.split else "split",
                         transform=build_eval_transform(*model.cfg.normalization))
    if len(dataset.CLASSES) != model.cfg.num_classes:
        raise ValueError(f"dataset {name!r} has {len(dataset.CLASSES)} classes but the model "
                         f"predicts {model.cfg.num_classes}")
    out = Path(args.out) if args.out else Path(f"{loaded.output_stem}.eval.json")
    if not args.out:
        check_out(out, args.overwrite)
    model.to(device)
    opts = InferenceOptions.from_eval_config(ev, branch=args.branch)
    result = evaluate(model, dataset, opts, device, max_images=ev.max_images,
                      progress=not args.no_progress)
    print(format_results(result, dataset.CLASSES))
    record = {"tool": TOOL, "checkpoint": str(args.checkpoint), "dataset": name, "root": root,
              "split": split, "dataset_kwargs": kwargs, "inference": opts.__dict__,
              "classes": list(dataset.CLASSES), **result}
    text = json.dumps(record, indent=1, default=float)
    atomic_write(out, lambda t: t.write_text(text))
    print(f"wrote {out}")
