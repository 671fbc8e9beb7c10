"""``hfgd-lab make-scenes --out DIR``: write procedural scenes to disk in the folder layout.

By default it writes a ``train`` split (``--num``, 200) and a ``val`` split
(``--val-num``, a quarter of ``--num``), each from its own seed stream, so that
``hfgd-lab train configs/scenes_folder.yaml`` can run on the result at once. ``--split
NAME`` writes that one split only (``--num`` scenes).

The result (``images/<split>/``, ``masks/<split>/``, ``classes.txt`` with colours, and
``scenes.json`` recording how each split was made) loads back with
``build_dataset("folder", DIR, split)`` and is identical to ``build_dataset("scenes",
split=..., seed=..., size=...)``: useful for other tools, or to look at the data.

Files it did not write are never replaced (``hfgd-lab-manifest.json`` lists its own), and
a split folder holding other files is refused: they would mix into the dataset.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._common import Manifest, _number, atomic_write, int_at_least, probe_writable_dir

DEFAULT_ROOT = "data/scenes"  # data.root of configs/scenes_folder.yaml


def _variation(text: str) -> float:
    value = _number(text, float, "a number >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value:g}: expected a number >= 0")
    return value


def add_arguments(p):
    p.add_argument("--out", required=True, help="output folder (created if needed)")
    p.add_argument("--num", type=int_at_least(1), default=200,
                   help="scenes in the train split (or in --split), default 200")
    p.add_argument("--val-num", type=int_at_least(0), default=None,
                   help="scenes in the val split (default: a quarter of --num, at least 1; "
                        "0: no val split)")
    p.add_argument("--split", default=None,
                   help="write only this split, with --num scenes (default: train and val)")
    p.add_argument("--size", type=int_at_least(32), default=192, help="side length in pixels")
    p.add_argument("--seed", type=int, default=0, help="dataset seed")
    p.add_argument("--variation", type=_variation, default=1.0,
                   help="appearance variation (1 = default, 0 = fixed looks)")
    p.add_argument("--workers", type=int_at_least(1), default=2, help="processes")
    p.add_argument("--overwrite", action="store_true",
                   help="replace scene files in --out that make-scenes did not write")


def _write(job):
    # in the worker: hfgd_lab.data imports torch (~3 s), which --help must not pay
    from PIL import Image

    from ..data.scenes import render_scene, scene_seed
    out, split, seed, size, variation, i = job
    scene = render_scene(scene_seed(seed, split, i), size, variation)
    name = f"scene_{i:06d}.png"
    for sub, array in (("images", scene.image), ("masks", scene.mask)):
        atomic_write(out / sub / split / name,
                     lambda t, a=array: Image.fromarray(a).save(t, format="PNG",
                                                                compress_level=1))
    return i


def _splits(args) -> dict[str, int]:
    if args.split is not None:
        if args.val_num is not None:
            raise ValueError(f"--val-num {args.val_num}: applies only without --split (which "
                             f"writes one split, --split {args.split} with --num scenes)")
        if not args.split or "/" in args.split or args.split.startswith("."):
            raise ValueError(f"--split {args.split!r}: expected a plain folder name such as "
                             "train or val")
        return {args.split: args.num}
    val = max(1, args.num // 4) if args.val_num is None else args.val_num
    return {"train": args.num, **({"val": val} if val else {})}


def run(args):
    splits = _splits(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out}: exists and is not a folder")
    manifest = Manifest(out, "make-scenes")
    planned = [out / "classes.txt", out / "scenes.json"]
    for split, num in splits.items():
        planned += [out / sub / split / f"scene_{i:06d}.png"
                    for sub in ("images", "masks") for i in range(num)]
    manifest.check(planned, args.overwrite)
    wanted = set(planned)
    stale = []
    for split in splits:
        for sub in ("images", "masks"):
            folder = out / sub / split
            if not folder.is_dir():
                continue
            for f in sorted(folder.iterdir()):
                if f in wanted:
                    continue
                if not manifest.owns(f) or not f.is_file():
                    raise FileExistsError(
                        f"--out {out}: {f} was not written by make-scenes and would mix into "
                        f"the {split!r} split; choose another --out folder")
                stale.append(f)  # ours, from an earlier run with more scenes

    # heavy imports only after the checks: hfgd_lab.data imports torch (~3 s, measured)
    from tqdm.auto import tqdm

    from ..data.scenes import SCENE_CLASSES, SCENE_PALETTE

    probe_writable_dir(out, "--out")
    for f in stale:
        f.unlink()
    manifest.record(planned)
    for split in splits:
        for sub in ("images", "masks"):
            (out / sub / split).mkdir(parents=True, exist_ok=True)
    classes = "".join(f"{name} {r} {g} {b}\n"
                      for name, (r, g, b) in zip(SCENE_CLASSES, SCENE_PALETTE))
    atomic_write(out / "classes.txt", lambda t: t.write_text(classes))
    info_path = out / "scenes.json"
    info = {}
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text())
        except ValueError:
            info = {}
    info = info if isinstance(info, dict) else {}

    for split, num in splits.items():
        info[split] = dict(num=num, size=args.size, seed=args.seed, variation=args.variation)
        jobs = [(out, split, args.seed, args.size, args.variation, i) for i in range(num)]
        bar = tqdm(total=num, desc=f"scenes/{split}", unit="img")
        if args.workers <= 1 or num < 8:
            for job in jobs:
                _write(job)
                bar.update()
        else:
            import multiprocessing as mp
            # fork where there is one: a spawned worker would re-import torch (seconds)
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else None)
            chunk = max(1, min(16, num // (4 * args.workers)))
            with ctx.Pool(args.workers) as pool:
                for _ in pool.imap_unordered(_write, jobs, chunksize=chunk):
                    bar.update()
        bar.close()
    text = json.dumps(info, indent=2) + "\n"
    atomic_write(info_path, lambda t: t.write_text(text))

    wrote = " + ".join(f"{num} {split}" for split, num in splits.items())
    if args.split is not None:
        print(f"wrote {args.num} scenes to {out} (split {args.split!r}); load with "
              f"build_dataset('folder', {str(out)!r}, {args.split!r})")
    else:
        print(f"wrote {wrote} scenes ({args.size} px, seed {args.seed}) to {out}")
    have = sorted(k for k in info if (out / "images" / k).is_dir())
    if "val" not in have:
        print(f"note: {out} has no 'val' split, which training validates on; write one with "
              f"hfgd-lab make-scenes --out {out} --split val --num N")
    elif "train" in have:
        root = "" if out.as_posix() == DEFAULT_ROOT else f" --set data.root={out.as_posix()}"
        print(f"next: hfgd-lab train configs/scenes_folder.yaml{root}")
