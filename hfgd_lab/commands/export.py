"""``hfgd-lab export CKPT --onnx model.onnx``: the model's inference graph as ONNX.

CKPT is anything ``hfgd_lab.from_pretrained`` takes (a bundled name, a two-file
checkpoint, a run folder, a model folder, a Hub repo id). The graph takes a normalised
image batch (B, 3, H, W) of any size and returns logits at the input's size (and, with
``--labels``, their argmax); the file's metadata holds the classes, palette, mean/std,
output stride and the source card (``hfgd_lab.engine.export``). After writing, the file is
run by onnxruntime at three sizes against PyTorch and the differences printed; a graph
that does not match is not written. An existing file that hfgd-lab did not write is
never replaced (``--overwrite`` to do so); everything is checked before the export.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ._common import int_at_least, positive_int, probe_writable_dir

OPSET = 18  # hfgd_lab.engine.export.OPSET (not imported here: it loads torch)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint: bundled name, two-file stem / .json / "
                                      ".safetensors, run folder, model folder or Hub repo id")
    p.add_argument("--onnx", required=True, metavar="FILE.onnx", help="ONNX file to write")
    p.add_argument("--labels", action="store_true",
                   help="add a 'labels' output: the argmax (B, H, W) int64")
    p.add_argument("--opset", type=int_at_least(OPSET), default=OPSET,
                   help="ONNX opset (the exporter writes 18 and above)")
    p.add_argument("--example-size", type=positive_int, nargs=2, default=[97, 131],
                   metavar=("H", "W"), help="size of the example traced (height and width "
                                            "stay dynamic)")
    p.add_argument("--no-check", action="store_true",
                   help="skip the onnxruntime-vs-PyTorch check after writing")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing FILE.onnx that hfgd-lab did not write")


def check_out(path: Path, overwrite: bool) -> None:
    """FILE.onnx ends in .onnx, is not a folder, can be written, and replaces nothing but
    an earlier hfgd-lab export (or anything, with ``--overwrite``). Raises ValueError /
    OSError naming ``--onnx``."""
    if path.suffix.lower() != ".onnx":
        raise ValueError(f"--onnx {path}: expected a file name ending in .onnx")
    if path.is_dir():
        raise IsADirectoryError(f"--onnx {path}: is a folder; give a file such as "
                                f"{path / 'model.onnx'}")
    if path.exists() and not overwrite:
        from ..engine.export import is_hfgd_onnx  # loads onnx (and torch) only here
        if not is_hfgd_onnx(path):
            raise FileExistsError(f"--onnx {path}: exists and was not written by hfgd-lab "
                                  "export; choose another file, or pass --overwrite")
    probe_writable_dir(path.parent, "--onnx", path)


def run(args) -> int:
    out = Path(args.onnx).expanduser()
    try:  # the export extra: onnx, onnxruntime, onnxscript
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise RuntimeError(f"hfgd-lab export needs the 'export' extra ({e.name} is missing): "
                           "pip install 'hfgd-lab[export]'") from None
    check_out(out, args.overwrite)
    # torch and the engine load here, not at import: `hfgd-lab --help` stays fast
    from ..engine.export import export_onnx
    from ..engine.loaded import from_pretrained

    loaded = from_pretrained(args.checkpoint)
    print(f"exporting {loaded.name} ({loaded.description()}, {loaded.num_classes} classes, "
          f"backbone {loaded.cfg.backbone}) to {out} ...", flush=True)
    report = export_onnx(loaded, out, labels=args.labels, opset=args.opset,
                         example_size=args.example_size, verify=not args.no_check)
    outputs = "logits" + (" and labels" if args.labels else "")
    print(f"wrote {out} ({report.bytes / 1e6:.1f} MB, opset {args.opset}, exported in "
          f"{report.seconds:.0f} s): image (B, 3, H, W) -> {outputs} at the input's size")
    for c in report.checks:
        print(f"  onnxruntime vs PyTorch at {c['size'][0]}x{c['size'][1]}: max abs logit "
              f"difference {c['max_abs_diff']:.1e}, labels agree on "
              f"{100 * c['label_agreement']:.2f}% of pixels")
    mean, std = loaded.normalization
    print(f"input: RGB, (pixel / 255 - mean) / std with mean {[round(v, 4) for v in mean]}, "
          f"std {[round(v, 4) for v in std]} (stored in the file's metadata)")
    return 0
