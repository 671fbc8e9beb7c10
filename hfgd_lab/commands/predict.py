"""``hfgd-lab predict CKPT IMAGES... --out DIR``: label maps, colour masks, overlays, a
legend, and a per-class area summary.

Every output is at the *input's* size: the image is downscaled to ``--max-side`` only for
the forward pass, and the labels come back at one label per input pixel (nearest).
Output names keep the input's path relative to the folder given (or its file name) and
its extension, so ``x.png``, ``x.jpg`` and ``sub/x.png`` never share an output:

    DIR/sub/x.png.labels.png    class index per pixel (uint8; uint16 above 256 classes)
    DIR/sub/x.png.mask.png      class colours
    DIR/sub/x.png.overlay.png   colours over the image (``--opacity``)
    DIR/legend.png              every class with its colour
    DIR/summary.json, .csv      per image and class: pixels, area %, mean confidence %
    DIR/hfgd-lab-manifest.json  the files predict wrote here

A file in ``DIR`` that predict did not write (not in its manifest) is never replaced
unless ``--overwrite``; every option, input and output location is checked before the
first image is processed.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ._common import (Manifest, add_inference_arguments, check_inference_arguments,
                      int_at_least, unit_float)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
KINDS = ("labels", "mask", "overlay")
SUMMARY = ("legend.png", "summary.json", "summary.csv")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint (stem, .json, .safetensors, run folder) or "
                                      "bundled model name")
    p.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    p.add_argument("--out", required=True, help="output folder (created if needed)")
    p.add_argument("--opacity", type=unit_float, default=0.5,
                   help="opacity of the colours in the overlay, 0..1 (default 0.5)")
    p.add_argument("--max-side", type=int_at_least(32), default=2048,
                   help="run the model on a copy downscaled to this longest side (outputs "
                        "stay at the input's size; default 2048)")
    add_inference_arguments(p, scales_default=[1.0])
    p.add_argument("--low-confidence", type=unit_float, default=0.5, metavar="P",
                   help="warn when the mean confidence of an image is below P (default 0.5)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing files in --out that predict did not write")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


# ---- planning: inputs and outputs, before any work ---------------------------------------

def _predict_outputs(folder: Path) -> set[Path]:
    """Files that predict wrote anywhere under ``folder`` (by their folders' manifests):
    earlier results are never read back as inputs."""
    owned = set()
    for path in [folder / Manifest.NAME, *folder.rglob(Manifest.NAME)]:
        if not path.is_file():
            continue
        try:
            files = Manifest(path.parent, "predict").files
        except FileExistsError:  # not our manifest: nothing to skip
            continue
        owned |= {(path.parent / rel).resolve() for rel, tool in files.items()
                  if tool == "predict"}
    return owned


def expand_inputs(items, out: Path | None = None) -> list[tuple[Path, Path]]:
    """``[(image path, relative name)]``: files as given (name = file name), folders
    searched recursively (name = path inside the folder). Earlier predict results (by the
    manifests in those folders and in ``out``) and hidden files are left out; the same
    file given twice counts once.

    Raises FileNotFoundError naming a missing input, or when no image is found."""
    found, seen = [], set()
    skip = _predict_outputs(out) if out is not None and out.is_dir() else set()

    def add(path: Path, rel: Path):
        real = path.resolve()
        if real not in seen and real not in skip:
            seen.add(real)
            found.append((path, rel))

    for item in items:
        p = Path(item)
        if p.is_dir():
            skip |= _predict_outputs(p)
            for q in sorted(p.rglob("*")):
                rel = q.relative_to(p)
                if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES and \
                        not any(part.startswith(".") for part in rel.parts):
                    add(q, rel)
        elif p.is_file():
            add(p, Path(p.name))
        else:
            raise FileNotFoundError(f"input {p}: no such file or folder")
    if not found:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in "
                                f"{', '.join(map(str, items))}")
    return found


def output_paths(out: Path, rel: Path) -> dict[str, Path]:
    """Where the outputs of the input named ``rel`` go: ``{kind: path}``."""
    return {kind: out / rel.parent / f"{rel.name}.{kind}.png" for kind in KINDS}


def plan(inputs, out: Path) -> list[tuple[Path, Path, dict]]:
    """``[(path, rel, outputs)]``; two inputs that would write the same file fail."""
    planned, owner = [], {}
    for path, rel in inputs:
        outs = output_paths(out, rel)
        first = outs["labels"]
        if first in owner:
            raise ValueError(f"inputs {owner[first]} and {path} would both write "
                             f"{first}; give them in separate runs or inside one folder")
        owner[first] = path
        planned.append((path, rel, outs))
    return planned


def run(args):
    mode = check_inference_arguments(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out}: exists and is not a folder (predict writes "
                              "several files per image into a folder)")
    jobs = plan(expand_inputs(args.images, out), out)
    manifest = Manifest(out, "predict")
    manifest.check([p for _, _, outs in jobs for p in outs.values()]
                   + [out / name for name in SUMMARY], args.overwrite)
    # the work imports torch, timm and the model code (~3-5 s, measured): only now that
    # the arguments are known to be good, never for --help or an argument error
    from ._predict_work import predict_all
    return predict_all(args, mode, out, jobs, manifest)
