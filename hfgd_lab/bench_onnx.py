"""ONNX Runtime beside PyTorch: ``hfgd-lab bench --onnx``.

For each of our models in ``--models`` (HFGD OS8/4/2, SemanticFPN; HFGD OS4 alone when
``--models`` is not given; smp's models have no export here and are left out), built
with ``--backbone`` and ``--num-classes`` (random weights: speed does not depend on
them), the inference graph is exported to a temporary ONNX file
(:func:`hfgd_lab.engine.export.export_onnx`, checked against PyTorch), then timed beside
PyTorch in one process, on CPU, at batch 1 and ``--size`` x ``--size``:

* **PyTorch**: ``model.predict(x)`` under ``torch.inference_mode()``, ``--threads``
  torch threads;
* **ONNX Runtime**: the exported file on the CPU execution provider with ``--threads``
  intra-op threads (graph optimisations at onnxruntime's default, all).

Both return the same (1, K, H, W) logits at the input's size (the table gives the max
abs difference at this size). Runs are interleaved round-robin (the starting runtime
rotates every round); the table shows medians, the spread (IQR / median) and the ratio
of medians ONNX Runtime / PyTorch (below 1: onnxruntime is faster).

    hfgd-lab bench --onnx --threads 1 --size 512 --repeats 20 --json onnx.json
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from .bench_train import load_average, median_ms, spread
from .config import HFGDConfig
from .engine.export import OnnxSegmenter, _onnx, compare_onnx, export_onnx
from .engine.loaded import LoadedModel, card_classes
from .models import build_model

RUNTIMES = ("torch", "onnxruntime")
SPREAD_WARN = 0.10


def build_ours(name: str, backbone: str, num_classes: int) -> LoadedModel:
    """Our model ``name`` (hfgd_os8/4/2 or semantic_fpn, as :mod:`hfgd_lab.bench` builds
    them: random weights, default widths) as the LoadedModel that export_onnx takes."""
    if name == "semantic_fpn":
        cfg = HFGDConfig(backbone=backbone, num_classes=num_classes, arch="semantic_fpn",
                         output_stride=4)
        label = "SemanticFPN (ours, OS4)"
    elif name in ("hfgd_os8", "hfgd_os4", "hfgd_os2"):
        cfg = HFGDConfig(backbone=backbone, num_classes=num_classes,
                         output_stride=int(name[len("hfgd_os"):]))
        label = f"HFGD OS{cfg.output_stride}"
    else:
        raise ValueError(f"--onnx: no ONNX export for model {name!r}")
    model = build_model(cfg).eval()
    card = {"config": cfg.resolved().to_dict(),
            "trained_on": "nothing (random weights, for timing)"}
    classes, palette = card_classes(card, num_classes)
    return LoadedModel(model, card, label, name, "benchmark", classes, palette, Path(name))


def time_runtimes(items, repeats: int, warmup: int, progress=None) -> dict:
    """``items``: ``[(key, fn)]``; interleaved round-robin rounds of every fn, the first
    one rotating. Returns ``{key: {"wall": [s], "cpu": [s]}}``."""
    out = {k: {"wall": [], "cpu": []} for k, _ in items}
    for _ in range(warmup):
        for _, fn in items:
            fn()
    n = len(items)
    for r in range(repeats):
        for j in range(n):
            key, fn = items[(r + j) % n]
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            t1, c1 = time.perf_counter(), time.process_time()
            out[key]["wall"].append(t1 - t0)
            out[key]["cpu"].append(c1 - c0)
        if progress:
            progress(r + 1, repeats)
    return out


def run_onnx_benchmark(args, env: dict, log) -> dict:
    """The ``--onnx`` mode of :mod:`hfgd_lab.bench` (arguments checked there). Prints a
    table; returns what ``--json`` writes."""
    _, ort = _onnx()  # the export extra, or one message saying how to install it
    given = "--models" in getattr(args, "command", "")
    names = [m for m in (args.models if given else ["hfgd_os4"]) if not m.startswith("smp_")]
    if not names:
        raise ValueError("--onnx times our models (hfgd_os8/4/2, semantic_fpn); "
                         f"--models {' '.join(args.models)} has none of them")
    skipped = [m for m in args.models if m.startswith("smp_")] if given else []
    if skipped:
        log(f"--onnx: no ONNX export for {', '.join(skipped)}; left out")
    torch.manual_seed(args.seed)
    load_before = load_average()
    x = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(
        args.seed))
    xn = x.numpy()
    rows, items, runners = {}, [], []
    with tempfile.TemporaryDirectory(prefix="hfgd-lab-onnx-") as tmp:
        for name in names:
            loaded = build_ours(name, args.backbone, args.num_classes)
            log(f"exporting {name} to ONNX (tens of seconds to minutes)")
            path = Path(tmp) / f"{name}.onnx"
            report = export_onnx(loaded, path)
            runner = OnnxSegmenter(path, threads=args.threads)
            runners.append(runner)
            check = compare_onnx(loaded.model, path, [(args.size, args.size)])[0]
            rows[name] = {"label": loaded.name, "export_seconds": report.seconds,
                          "onnx_mb": report.bytes / 1e6,
                          "max_abs_diff": check["max_abs_diff"],
                          "label_agreement": check["label_agreement"],
                          "clear_mismatches": check["clear_mismatches"]}

            def run_torch(m=loaded.model):
                with torch.inference_mode():
                    m.predict(x)
            items += [((name, "torch"), run_torch),
                      ((name, "onnxruntime"), lambda r=runner: r.run(xn))]
        t0 = time.perf_counter()
        times = time_runtimes(items, args.repeats, args.warmup,
                              progress=lambda r, n: log(f"  round {r}/{n}  "
                                                        f"{time.perf_counter() - t0:.0f} s"))
        del runners
    for name, row in rows.items():
        for clock in ("wall", "cpu"):
            t = {rt: times[(name, rt)][clock] for rt in RUNTIMES}
            row[clock] = {rt: {"median_ms": median_ms(t[rt]), "spread": spread(t[rt])}
                          for rt in RUNTIMES}
            row[clock]["ratio"] = (statistics.median(t["onnxruntime"])
                                   / statistics.median(t["torch"]))
            row[clock]["paired_ratio"] = statistics.median(
                a / b for a, b in zip(t["onnxruntime"], t["torch"]))
    results = {"environment": {**env, "onnxruntime": ort.__version__}, "mode": "onnx",
               "settings": {k: getattr(args, k) for k in (
                   "backbone", "size", "repeats", "warmup", "threads", "num_classes", "seed",
                   "clock")} | {"models": names},
               "models": rows, "load_before": load_before, "load_after": load_average()}
    clock = args.clock
    print(f"PyTorch vs ONNX Runtime (CPU), {args.backbone}, {args.size}x{args.size}, batch 1, "
          f"K={args.num_classes}, {args.threads} thread(s), {args.repeats} interleaved rounds "
          f"(median), torch {env['torch']}, onnxruntime {ort.__version__}, {env['cpu']}")
    print(f"  both: logits (1, K, H, W) at the input's size; times: "
          f"{'wall-clock' if clock == 'wall' else 'process CPU'} ms; ONNX/PyTorch: ratio of "
          "medians (paired: median of per-round ratios)")
    print(format_table(rows, clock, markdown=getattr(args, "markdown", False)))
    noisy = [n for n, r in rows.items() if max(r[clock][rt]["spread"] for rt in RUNTIMES)
             > SPREAD_WARN]
    if noisy:
        print(f"note: IQR above {SPREAD_WARN:.0%} of the median for {', '.join(noisy)}; the "
              "machine was busy: read the ratios, which interleaving keeps fair")
    return results


def format_table(rows: dict, clock: str = "wall", markdown: bool = False) -> str:
    head = ["model", "PyTorch ms", "ONNX Runtime ms", "ONNX/PyTorch", "paired",
            "max |diff|", "labels agree", "spread", "export s"]
    lines = []
    for name, r in rows.items():
        c = r[clock]
        lines.append([r["label"], f"{c['torch']['median_ms']:.1f}",
                      f"{c['onnxruntime']['median_ms']:.1f}", f"{c['ratio']:.2f}",
                      f"{c['paired_ratio']:.2f}", f"{r['max_abs_diff']:.1e}",
                      f"{100 * r['label_agreement']:.2f}%",
                      f"{max(c[rt]['spread'] for rt in RUNTIMES):.0%}",
                      f"{r['export_seconds']:.0f}"])
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(cells) + " |" for cells in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(cells[i]) for cells in lines)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*head), *(fmt.format(*cells) for cells in lines)])

