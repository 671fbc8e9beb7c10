"""The work of ``hfgd-lab predict`` (see :mod:`.predict`), once its options, inputs and
outputs are checked: load the model, segment each image at its own size, write the
labels, colour mask and overlay, the legend and the per-class summary.

Imported by :func:`.predict.run` only (it loads torch and the model code).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..analysis.scores import class_areas
from ..data import ImageError, read_image, resize_labels
from ..engine.inference import InferenceOptions
from ..engine.loaded import from_pretrained
from ..viz import colorize, overlay
from ..viz.legend import legend_image
from ._common import Manifest, atomic_write, probe_writable_dir, resolve_device


# ---- what the model knows, in words ------------------------------------------------------

def trained_on(loaded) -> str:
    """What the card says the model was trained on, in a few words."""
    if loaded.trained_on:
        return loaded.trained_on.rstrip(".")
    card = loaded.card
    data = ((card.get("experiment") or {}).get("data") or {})
    name = data.get("name") or card.get("dataset")
    if not name:
        return "unknown (its card does not say)"
    where = f" at {data['root']}" if data.get("root") else ""
    split = f", split {data['train_split']!r}" if data.get("train_split") else ""
    return f"dataset {name!r}{where}{split}"


def model_notes(loaded) -> list[str]:
    names = list(loaded.classes)
    shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
    lines = [f"model {loaded.name}: {loaded.num_classes} classes ({shown}); trained on "
             f"{trained_on(loaded)}"]
    if loaded.card.get("stand_in"):
        lines.append("warning: this model is a random-weight stand-in (tests, development): "
                     "its predictions mean nothing")
    if loaded.is_scenes_model:
        lines.append("note: this model knows only the classes of the built-in procedural "
                     "scenes; on photographs or other real images its labels are not "
                     "meaningful (every pixel still gets one of its classes)")
    return lines


# ---- the run -----------------------------------------------------------------------------

def model_input(path, full, max_side):
    """The pixels the model runs on for the image file ``path`` (``full``: its
    full-size :class:`LoadedImage`): ``full`` itself when it fits ``max_side``, else the
    file read again by :func:`read_image` with that cap, the very call the app makes, so
    that predict and the app feed the network the same tensor (a second decode of a large
    image, in exchange for one downscaling rule)."""
    h, w = full.array.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return full
    return read_image(path, max_side=max_side)


def _png(array):
    return lambda tmp: Image.fromarray(array).save(tmp, format="PNG")


def _summary_rows(record: dict) -> list[list]:
    return [[record["input_name"], record.get("model", ""), c["index"], c["class"], c["pixels"],
             c["area_pct"], c["mean_confidence_pct"]] for c in record["classes"]]


def _write_summary(out: Path, manifest: Manifest, model_name: str, classes, records: dict):
    """summary.json and summary.csv: this run's records merged into those a previous run
    wrote here (same image name: replaced, as its files were; others kept, whatever model
    made them: each record names its model)."""
    path = out / "summary.json"
    images, models = {}, {}
    if path.is_file() and manifest.owns(path):
        try:
            data = json.loads(path.read_text())
            if isinstance(data.get("images"), dict) and isinstance(data.get("models"), dict):
                images, models = data["images"], data["models"]
        except (OSError, ValueError, AttributeError):
            pass
    images = {**images, **records}
    models = {**models, model_name: list(classes)}
    doc = {"tool": "hfgd-lab predict", "models": models, "images": dict(sorted(images.items()))}
    text = json.dumps(doc, indent=1) + "\n"
    atomic_write(path, lambda t: t.write_text(text))
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["image", "model", "class_index", "class", "pixels", "area_pct",
                     "mean_confidence_pct"])
    for key in doc["images"]:
        writer.writerows(_summary_rows(doc["images"][key]))
    atomic_write(out / "summary.csv", lambda t: t.write_text(buf.getvalue()))


def predict_all(args, mode, out: Path, jobs, manifest: Manifest) -> int:
    """Segment every planned ``(path, rel, outputs)`` of ``jobs`` into ``out``; returns
    the exit code (1 when an input was skipped as unreadable)."""
    device = resolve_device(args.device)
    opts = InferenceOptions(mode, list(args.crop) if args.crop else None,
                            list(args.stride) if args.stride else None, list(args.scales),
                            args.flip)
    created = not out.exists()
    probe_writable_dir(out, "--out")
    try:
        loaded = from_pretrained(args.checkpoint, device=device)
    except BaseException:
        if created and not any(out.iterdir()):
            out.rmdir()  # nothing of ours is left behind by a failed start
        raise
    for line in model_notes(loaded):
        print(line)
    k, palette = loaded.num_classes, loaded.palette
    label_dtype = np.uint8 if k <= 256 else np.uint16

    manifest.record([out / "legend.png"])
    atomic_write(out / "legend.png",
                 _png(legend_image(loaded.classes, palette,
                                   title=f"{loaded.name}: {k} classes")))

    records, failures, low = {}, 0, 0
    bar = tqdm(jobs, desc="predict", unit="img", disable=args.no_progress)
    for path, rel, outs in bar:
        try:
            img = read_image(path, max_side=None)
        except ImageError as e:
            bar.write(f"skipped: {e}")
            failures += 1
            continue
        h, w = img.array.shape[:2]
        small = model_input(path, img, args.max_side)
        labels, conf = loaded.segment(small.array, opts)
        if labels.shape != (h, w):  # one label per input pixel (nearest)
            labels, conf = resize_labels(labels, (h, w)), resize_labels(conf, (h, w))
        areas = _class_areas(labels, conf, k, args.low_confidence)
        warnings = []
        if areas["mean"] < args.low_confidence:
            low += 1
            warnings.append(
                f"low confidence (mean {areas['mean']:.2f}, {100 * areas['low_share']:.0f}% of "
                f"pixels below {args.low_confidence:g}): the image may show things outside "
                f"this model's {k} classes")
        manifest.record(outs.values())
        out_dir = outs["labels"].parent
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(outs["labels"], _png(labels.astype(label_dtype)))
        atomic_write(outs["mask"], _png(colorize(labels, palette)))
        atomic_write(outs["overlay"], _png(overlay(img.array, labels, palette, args.opacity)))
        ih, iw = small.array.shape[:2]  # what the model ran on
        key = rel.as_posix()
        records[key] = {
            "input": str(path), "input_name": key, "model": loaded.name, "size": [w, h],
            "inference_size": [iw, ih],
            "outputs": {kind: manifest.rel(p) for kind, p in outs.items()},
            "mean_confidence": round(areas["mean"], 4),
            "low_confidence_pct": round(100 * areas["low_share"], 2),
            "classes": [{"index": c, "class": loaded.classes[c],
                         "pixels": int(areas["pixels"][c]),
                         "area_pct": round(100 * float(areas["share"][c]), 2),
                         "mean_confidence_pct": round(100 * float(areas["conf"][c]), 1)}
                        for c in areas["present"]],
            "notes": list(img.notes), "warnings": warnings}
        top = ", ".join(f"{loaded.classes[c]} {100 * areas['share'][c]:.1f}%"
                        for c in areas["present"][:5])
        more = len(areas["present"]) - 5
        bar.write(f"{key} ({w}x{h}): {top}" + (f", +{more} more" if more > 0 else "")
                  + f"; mean confidence {areas['mean']:.2f}")
        for note in img.notes:
            bar.write(f"  {key}: {note}")
        for warning in warnings:
            bar.write(f"  warning: {key}: {warning}")
    bar.close()
    manifest.record([out / "summary.json", out / "summary.csv"])
    _write_summary(out, manifest, loaded.name, loaded.classes, records)
    done = len(records)
    print(f"wrote {done} result(s) to {out} (labels, mask and overlay per image; legend.png, "
          f"summary.json, summary.csv)"
          + (f"; {low} with low confidence" if low else "")
          + (f"; {failures} of {len(jobs)} input(s) skipped" if failures else ""))
    return 1 if failures else 0


def _class_areas(labels, conf, k: int, threshold: float) -> dict:
    """Per-class pixels, share of the image (:func:`hfgd_lab.analysis.scores.class_areas`)
    and mean confidence (in [0, 1]); the mean confidence over all pixels and the share of
    pixels below ``threshold``."""
    lab = labels.ravel()
    c = conf.ravel().astype(np.float64)
    pixels = np.bincount(lab, minlength=k)[:k]
    sums = np.bincount(lab, weights=c, minlength=k)[:k]
    present = [int(i) for i in np.argsort(-pixels, kind="stable") if pixels[i] > 0]
    return {"pixels": pixels, "share": class_areas(labels, k),
            "conf": np.where(pixels > 0, sums / np.maximum(pixels, 1), 0.0),
            "mean": float(c.mean()), "low_share": float((c < threshold).mean()),
            "present": present}
