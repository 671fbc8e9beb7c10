"""``hfgd-lab predict CKPT IMAGES... --out DIR``: colour masks, overlays and label maps."""
from __future__ import annotations

from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def add_arguments(p):
    p.add_argument("checkpoint", help="checkpoint or bundled model name")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--opacity", type=float, default=0.5, help="overlay opacity of the mask")
    p.add_argument("--max-side", type=int, default=2048, help="downscale larger images")
    p.add_argument("--mode", choices=["whole", "slide"], default="whole")
    p.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"))
    p.add_argument("--stride", type=int, nargs=2, metavar=("H", "W"))
    p.add_argument("--scales", type=float, nargs="+", default=[1.0])
    p.add_argument("--flip", action="store_true")
    p.add_argument("--device", default="auto")


def expand_inputs(items) -> list[Path]:
    paths = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            paths += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            paths.append(p)
        else:
            raise FileNotFoundError(f"input not found: {p}")
    if not paths:
        raise FileNotFoundError(f"no images found in {', '.join(map(str, items))}")
    return paths


def run(args):
    import numpy as np
    import torch
    from PIL import Image
    from tqdm.auto import tqdm

    from ..data import ImageError, read_image
    from ..engine.inference import InferenceOptions
    from ..engine.loaded import from_pretrained
    from ..viz import colorize, overlay

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    if args.mode == "slide" and not args.crop:
        raise ValueError("--mode slide needs --crop H W")
    opts = InferenceOptions(args.mode, args.crop, args.stride, args.scales, args.flip)
    predictor = from_pretrained(args.checkpoint, device=device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for path in tqdm(expand_inputs(args.images), desc="predict"):
        try:
            img = read_image(path, max_side=None)
        except ImageError as e:
            print(f"skipped: {e}")
            failures += 1
            continue
        labels, _ = predictor.segment(img.array, opts, max_side=args.max_side)
        stem = path.stem
        dtype = np.uint8 if predictor.num_classes <= 256 else np.uint16
        Image.fromarray(labels.astype(dtype)).save(out / f"{stem}_labels.png")
        Image.fromarray(colorize(labels, predictor.palette)).save(out / f"{stem}_mask.png")
        Image.fromarray(overlay(img.array, labels, predictor.palette, args.opacity)).save(
            out / f"{stem}_overlay.png")
        for note in img.notes:
            print(f"{path.name}: {note}")
    print(f"wrote results to {out}")
    return 1 if failures else 0
