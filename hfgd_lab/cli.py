"""``hfgd-lab`` command line: one subcommand per job, each with ``--help``.

Start-up stays fast: this module imports argparse only, and only the chosen
subcommand's module is imported to parse its arguments (``add_arguments`` there imports
nothing heavy either); torch, timm and the rest load inside that command's ``run()``.
Measured on a 2-core machine: ``hfgd-lab --help`` ~0.1 s this way, ~4.5 s when every
command module (and torch) was imported first. ``tests/test_cli_startup.py`` guards it.

Errors: a bad argument or a bad input ends with one line on stderr,
``hfgd-lab COMMAND: error: ...`` naming the input, the value and what is expected, and
exit code 2 -- never a traceback. A partial failure (``predict`` skipped an unreadable
image) exits 1.
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

# name -> (module with add_arguments(parser) and run(args), one-line help)
COMMANDS = {
    "train": ("hfgd_lab.commands.train", "train a model from an experiment config"),
    "eval": ("hfgd_lab.commands.evaluate", "evaluate a checkpoint: mIoU, mAcc, aAcc, per class"),
    "predict": ("hfgd_lab.commands.predict",
                "segment images: label maps, colour masks, overlays, legend, class areas"),
    "make-scenes": ("hfgd_lab.commands.make_scenes",
                    "write built-in scenes to disk (train and val splits)"),
    "backbones": ("hfgd_lab.commands.backbones",
                  "list the backbones whose pretrained weights install offline"),
    "pretrain": ("hfgd_lab.commands.pretrain", "pretrain a backbone on the built-in scenes"),
    "bench": ("hfgd_lab.commands.bench", "model latency, params and GFLOPs vs smp FPN/UPerNet"),
    "profile": ("hfgd_lab.commands.profile", "parameters and GFLOPs of a model config"),
    "app": ("hfgd_lab.commands.app", "serve the Gradio app: upload an image and see inside HFGD"),
    "convert": ("hfgd_lab.commands.convert", "turn a checkpoint into a Hub-style model folder"),
    "export": ("hfgd_lab.commands.export", "export a model's inference graph to ONNX"),
}

# what every command reports as a bad input: a one-line message and exit code 2 (OSError:
# missing, existing or unwritable files, a full disk; FloatingPointError: training
# diverged, with a message saying what to lower)
_INPUT_ERRORS = (ValueError, OSError, RuntimeError, FloatingPointError)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``PROG: error: MESSAGE (see PROG --help)``."""

    def error(self, message):  # noqa: D102 (argparse's hook)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _command_of(argv: list[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is not an option)."""
    for word in argv:
        if not word.startswith("-"):
            return word
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``hfgd-lab`` parser. ``only``: import and add the arguments of that command
    alone (what :func:`main` does, so that a command never imports the others; ``""``:
    none); ``None``: every command's arguments (documentation, tests)."""
    parser = Parser(
        prog="hfgd-lab",
        description="HFGD semantic segmentation: train, evaluate, predict, and look inside.",
        epilog="From scenes to a trained model: hfgd-lab make-scenes --out data/scenes; "
               "hfgd-lab train configs/scenes_folder.yaml; hfgd-lab eval "
               "runs/scenes_folder/best; hfgd-lab predict runs/scenes_folder/best "
               "data/scenes/images/val --out outputs/predictions")
    from . import __version__  # hfgd_lab/__init__.py is lazy (PEP 562): no torch here
    parser.add_argument("--version", action="version", version=f"hfgd-lab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=module)
        if only is None or only == name:
            importlib.import_module(module).add_arguments(p)
    return parser


def _one_line(e: BaseException) -> str:
    """The message of ``e`` on one line. A DataLoader worker's error carries the
    worker's traceback in its text: keep its last line (the original message)."""
    text = str(e).strip() or type(e).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and any("Traceback" in line for line in lines):
        last = lines[-1]  # "package.module.SomeError: the message"
        name, sep, message = last.partition(": ")
        if sep and re.fullmatch(r"[\w.]+(Error|Exception)", name):
            return message
        return last
    return " ".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_of(argv)
    # no (known) command: the top-level help or error needs no command's arguments
    parser = build_parser(only=command if command in COMMANDS else "")
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        if e.code in (0, None):  # --help, --version: argparse's own exit
            raise
        return int(e.code) if isinstance(e.code, int) else 2  # its one-line error is out
    args._argv = argv  # for provenance records
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    try:
        return importlib.import_module(args._module).run(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except _INPUT_ERRORS as e:
        # Bad input: a clear one-line message, not a stack trace.
        print(f"hfgd-lab {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
