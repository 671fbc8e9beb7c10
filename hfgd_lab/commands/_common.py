"""What the commands share: option types that check values while parsing, output checks
made before any work, and the manifest of the files a command wrote.

Argparse and the standard library only (no torch): the option types run while the
arguments are parsed, so a bad value fails in well under a second, before any model or
dataset is touched. Every error names the option, the value and what is expected.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import tempfile
from pathlib import Path

# ---- option types: argparse calls them with the text, ArgumentTypeError -> exit 2 ------


def _number(text: str, kind, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return value


def int_at_least(low: int):
    """Option type: an integer >= ``low``."""
    def parse(text: str) -> int:
        value = _number(text, int, f"an integer >= {low}")
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is too small: expected an integer "
                                             f">= {low}")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


positive_int = int_at_least(1)


def positive_float(text: str) -> float:
    """Option type: a finite number > 0."""
    value = _number(text, float, "a positive number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value:g}: expected a number > 0")
    return value


def unit_float(text: str) -> float:
    """Option type: a number in [0, 1]."""
    value = _number(text, float, "a number in [0, 1]")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value:g}: expected a number in [0, 1]")
    return value


_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def device_name(text: str) -> str:
    """Option type: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    if not _DEVICE.match(text):
        raise argparse.ArgumentTypeError(f"{text!r}: expected auto, cpu, cuda, cuda:N or mps")
    return text


def resolve_device(name: str):
    """The torch device for a checked ``--device`` value; a device this machine does not
    have fails (ValueError naming it) before any work."""
    import torch  # callers are inside run(), where torch is loaded anyway
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available on this machine "
                             "(use --device cpu or auto)")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} "
                             "CUDA device(s)")
    if name == "mps" and not (getattr(torch.backends, "mps", None)
                              and torch.backends.mps.is_available()):
        raise ValueError("--device mps: MPS is not available on this machine "
                         "(use --device cpu or auto)")
    return torch.device(name)


def add_inference_arguments(p: argparse.ArgumentParser, scales_default=None) -> None:
    """``--mode --crop --stride --scales --flip --device``, shared by eval and predict."""
    p.add_argument("--mode", choices=["whole", "slide"],
                   help="whole-image or sliding-window inference (default: whole; --crop "
                        "alone means slide)")
    p.add_argument("--crop", type=positive_int, nargs=2, metavar=("H", "W"),
                   help="sliding window size in pixels")
    p.add_argument("--stride", type=positive_int, nargs=2, metavar=("H", "W"),
                   help="sliding window step (default: 2/3 of the window; at most the "
                        "window, or pixels would be left out)")
    p.add_argument("--scales", type=positive_float, nargs="+", default=scales_default,
                   metavar="S", help="multi-scale test, e.g. 0.75 1 1.25")
    p.add_argument("--flip", action="store_true", help="add horizontally flipped views")
    p.add_argument("--device", type=device_name, default="auto",
                   help="auto (cuda when available), cpu, cuda, cuda:N or mps")


def check_inference_arguments(args, default_mode: str | None = "whole") -> str | None:
    """Check the combination of ``--mode/--crop/--stride`` and return the mode.

    ``--crop`` without ``--mode`` means slide; ``--mode slide`` needs a window (``--crop``,
    unless ``default_mode`` is None: the config may hold one); ``--crop``/``--stride``
    with ``--mode whole`` and a stride larger than the window are refused."""
    mode = args.mode
    if mode is None and args.crop:
        mode = "slide"
    if mode == "whole" and (args.crop or args.stride):
        opt = "--crop" if args.crop else "--stride"
        raise ValueError(f"{opt} {' '.join(map(str, args.crop or args.stride))}: applies only "
                         "to sliding-window inference (--mode slide)")
    if args.stride and not args.crop and default_mode is not None:
        raise ValueError(f"--stride {' '.join(map(str, args.stride))}: needs --crop H W "
                         "(the sliding window)")
    if mode == "slide" and not args.crop and default_mode is not None:
        raise ValueError("--mode slide: needs --crop H W (the sliding window)")
    if args.crop and args.stride and any(s > c for s, c in zip(args.stride, args.crop)):
        raise ValueError(f"--stride {args.stride[0]} {args.stride[1]}: larger than the window "
                         f"--crop {args.crop[0]} {args.crop[1]}; pixels between windows would "
                         "get no prediction")
    return mode or default_mode


# ---- output locations, checked before the work starts ----------------------------------

def probe_writable_dir(folder: Path, option: str, value=None) -> None:
    """Create ``folder`` (and parents) if needed and prove it takes a file, or fail
    naming the option and its ``value`` (default: the folder itself)."""
    folder = Path(folder)
    shown = folder if value is None else value
    for path in (folder, *folder.parents):
        if path.exists():
            if not path.is_dir():
                raise NotADirectoryError(f"{option} {shown}: {path} is a file, not a folder")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".hfgd-lab-probe-", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise PermissionError(f"{option} {shown}: cannot write in {folder} "
                              f"({e.strerror or e})") from None


def atomic_write(path: Path, write) -> None:
    """``write(tmp_path)`` then rename onto ``path``: a reader (or a kill) never sees a
    half-written file. The temporary name keeps the suffix (image writers read it)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                               dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Manifest:
    """The files a command wrote into an output folder (``hfgd-lab-manifest.json``).

    A command may replace a file listed here (it wrote it); any other existing file is
    the user's and is never overwritten unless they pass ``--overwrite``. Entries are
    recorded *before* each file is written, and the manifest is saved atomically, so a
    killed run leaves no file of ours unlisted."""

    NAME = "hfgd-lab-manifest.json"

    def __init__(self, folder: Path, tool: str):
        self.folder, self.tool = Path(folder), tool
        self.path = self.folder / self.NAME
        self.files: dict[str, str] = {}  # relative path -> tool that wrote it
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
                files = data["files"]
                if data.get("format") != "hfgd-lab-manifest" or not isinstance(files, dict):
                    raise ValueError
            except (OSError, ValueError, KeyError, TypeError):
                raise FileExistsError(f"{self.path}: exists but is not a manifest written by "
                                      "hfgd-lab; choose another output folder") from None
            self.files = {str(k): str(v) for k, v in files.items()}

    def rel(self, path: Path) -> str:
        return Path(path).relative_to(self.folder).as_posix()

    def owns(self, path: Path) -> bool:
        return self.rel(path) in self.files

    def check(self, planned, overwrite: bool, option: str = "--out") -> None:
        """Fail before any work if a planned output is a folder, or an existing file
        this tool did not write (unless ``overwrite``)."""
        foreign = []
        for path in planned:
            path = Path(path)
            if path.is_dir():
                raise IsADirectoryError(f"{option} {self.folder}: {path} is a folder; "
                                        "an output file would replace it")
            if path.exists() and not self.owns(path):
                foreign.append(path)
        if foreign and not overwrite:
            more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
            raise FileExistsError(
                f"{option} {self.folder}: {foreign[0]}{more} exists and was not written by "
                f"hfgd-lab; choose another {option} folder, or pass --overwrite to replace it")

    def record(self, paths) -> None:
        """Add ``paths`` and save the manifest (call before writing them)."""
        for path in paths:
            self.files[self.rel(path)] = self.tool
        text = json.dumps({"format": "hfgd-lab-manifest", "files": dict(sorted(
            self.files.items()))}, indent=1) + "\n"
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, lambda t: t.write_text(text))
