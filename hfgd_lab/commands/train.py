"""``hfgd-lab train CONFIG.yaml``: train from an experiment config (DDP under torchrun)."""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("config", help="experiment YAML (sections model, data, train, eval)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override fields, e.g. train.iters=2000 model.output_stride=8")
    p.add_argument("--work-dir", help="output folder (default: train.work_dir)")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="PATH",
                   help="continue exactly; alone: the last checkpoint in the work dir")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args):
    from ..engine.experiment import ExperimentConfig
    from ..engine.train import train
    from ..utils import apply_overrides

    cfg = ExperimentConfig.from_yaml(args.config)
    sets = list(args.set) + ([f"train.work_dir={args.work_dir}"] if args.work_dir else [])
    cfg = apply_overrides(cfg, sets)
    result = train(cfg, resume=args.resume, progress=not args.no_progress)
    best = result["best"]
    if best:
        print(f"best mIoU {best['mIoU']:.2f} at iteration {best['iteration']}; "
              f"checkpoints in {result['work_dir']}")
