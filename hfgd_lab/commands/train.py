"""``hfgd-lab train CONFIG.yaml``: train from an experiment config (DDP under torchrun).

Before the first iteration the whole run is checked, so that a wrong combination fails
in seconds with one line naming the config key: every field (typed, by
:class:`~hfgd_lab.engine.experiment.ExperimentConfig`), the dataset's keyword arguments
against the dataset chosen (``data.kwargs.num`` means nothing to a ``folder`` dataset),
both splits (they are opened), and the work folder (a folder that already holds a run is
continued only with ``--resume``, never overwritten).
"""
from __future__ import annotations

import os
from pathlib import Path


def add_arguments(p):
    p.add_argument("config", help="experiment YAML (sections model, data, train, eval), e.g. "
                                  "configs/scenes_quick.yaml")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override fields, e.g. train.iters=2000 model.output_stride=8 "
                        "data.root=scenes")
    p.add_argument("--work-dir", help="output folder (default: the config's train.work_dir)")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="PATH",
                   help="continue exactly; alone: the last checkpoint in the work dir")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (each validation still prints its line)")
    p.add_argument("--quiet", action="store_true",
                   help="print only the final line (no bars, no validation lines)")


def run(args):
    # heavy imports inside run(): the engine imports torch and timm (~3-5 s, measured),
    # which `hfgd-lab --help` and argument errors must not pay
    from ..engine.experiment import ExperimentConfig
    from ..engine.train import train
    from ..utils import apply_overrides
    from ._checks import check_experiment_data, check_work_dir

    cfg = ExperimentConfig.from_yaml(args.config)
    sets = list(args.set) + ([f"train.work_dir={args.work_dir}"] if args.work_dir else [])
    cfg = apply_overrides(cfg, sets)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 owns the work folder
        check_work_dir(Path(cfg.train.work_dir), args.resume)
    check_experiment_data(cfg)
    progress = not (args.no_progress or args.quiet)
    result = train(cfg, resume=args.resume, progress=progress, verbose=not args.quiet,
                   config_path=args.config)
    best = result["best"]
    if best:
        print(f"best mIoU {best['mIoU']:.2f} at iteration {best['iteration']}; "
              f"checkpoints in {result['work_dir']} (evaluate: hfgd-lab eval "
              f"{Path(result['work_dir']).as_posix()}/best)")
