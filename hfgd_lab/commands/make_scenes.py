"""``hfgd-lab make-scenes``: write procedural scenes to disk in the folder layout.

The result (``images/<split>/``, ``masks/<split>/``, ``classes.txt`` with colours, and
``scenes.json`` recording how it was made) loads back with
``build_dataset("folder", OUT, split)`` and is identical to ``build_dataset("scenes",
split=..., seed=..., size=...)``: useful for other tools, or to look at the data.
"""
from __future__ import annotations

import json
from pathlib import Path


def add_arguments(p):
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--num", type=int, required=True, help="number of scenes")
    p.add_argument("--size", type=int, default=192, help="side length in pixels")
    p.add_argument("--seed", type=int, default=0, help="dataset seed")
    p.add_argument("--split", default="train", help="split name (its own seed stream)")
    p.add_argument("--variation", type=float, default=1.0,
                   help="appearance variation (1 = default, 0 = fixed looks)")
    p.add_argument("--workers", type=int, default=2, help="processes")


def _write(job):
    from PIL import Image

    from ..data.scenes import render_scene, scene_seed
    out, split, seed, size, variation, i = job
    scene = render_scene(scene_seed(seed, split, i), size, variation)
    name = f"scene_{i:06d}.png"
    Image.fromarray(scene.image).save(out / "images" / split / name, compress_level=1)
    Image.fromarray(scene.mask).save(out / "masks" / split / name, compress_level=1)
    return i


def run(args):
    from tqdm.auto import tqdm

    from ..data.scenes import SCENE_CLASSES, SCENE_PALETTE

    if args.num < 1:
        raise ValueError(f"--num {args.num}: must be >= 1")
    if args.size < 32:
        raise ValueError(f"--size {args.size}: scenes need at least 32 pixels a side")
    out = Path(args.out)
    for sub in ("images", "masks"):
        (out / sub / args.split).mkdir(parents=True, exist_ok=True)
    (out / "classes.txt").write_text("".join(
        f"{name} {r} {g} {b}\n" for name, (r, g, b) in zip(SCENE_CLASSES, SCENE_PALETTE)))
    info_path = out / "scenes.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    info[args.split] = dict(num=args.num, size=args.size, seed=args.seed,
                            variation=args.variation)
    info_path.write_text(json.dumps(info, indent=2) + "\n")

    jobs = [(out, args.split, args.seed, args.size, args.variation, i)
            for i in range(args.num)]
    bar = tqdm(total=args.num, desc=f"scenes/{args.split}", unit="img")
    if args.workers <= 1:
        for job in jobs:
            _write(job)
            bar.update()
    else:
        import multiprocessing as mp
        # fork where there is one: a spawned worker would re-import torch (seconds)
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else None)
        chunk = max(1, min(16, args.num // (4 * args.workers)))
        with ctx.Pool(args.workers) as pool:
            for _ in pool.imap_unordered(_write, jobs, chunksize=chunk):
                bar.update()
    bar.close()
    print(f"wrote {args.num} scenes to {out} (split {args.split!r}); load with "
          f"build_dataset('folder', {str(out)!r}, {args.split!r})")
