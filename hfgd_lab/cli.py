"""``hfgd-lab`` command line: one subcommand per job, each with ``--help``.

Subcommands import their module lazily so that ``hfgd-lab --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module with add_arguments(parser) and run(args), one-line help)
COMMANDS = {
    "train": ("hfgd_lab.commands.train", "train a model from an experiment config"),
    "eval": ("hfgd_lab.commands.evaluate", "evaluate a checkpoint: mIoU, mAcc, aAcc, per class"),
    "predict": ("hfgd_lab.commands.predict", "segment images: colour masks and overlays"),
    "pretrain": ("hfgd_lab.commands.pretrain", "pretrain a backbone on the built-in scenes"),
    "bench": ("hfgd_lab.commands.bench", "model latency, params and GFLOPs vs smp FPN/UPerNet"),
    "profile": ("hfgd_lab.commands.profile", "parameters and GFLOPs of a model config"),
    "make-scenes": ("hfgd_lab.commands.make_scenes", "write procedural scenes to disk"),
    "app": ("hfgd_lab.commands.app", "serve the Gradio app: upload an image and see inside HFGD"),
    "convert": ("hfgd_lab.commands.convert", "turn a checkpoint into a Hub-style model folder"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hfgd-lab",
        description="HFGD semantic segmentation: train, evaluate, predict, and look inside.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"hfgd-lab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args._argv = list(sys.argv[1:] if argv is None else argv)  # for provenance records
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    try:
        return importlib.import_module(args._module).run(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        # Bad input: a clear one-line message, not a stack trace.
        print(f"hfgd-lab {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
