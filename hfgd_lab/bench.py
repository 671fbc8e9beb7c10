#!/usr/bin/env python
"""Model speed: HFGD (OS8/4/2), our SemanticFPN, and smp's FPN and UPerNet, one run.

Every model uses the same timm encoder (smp through ``tu-<name>``, random weights) and
the same number of classes. All timings run in eval mode under ``torch.inference_mode()``
at batch 1 on CPU, in one process, with the models' repeats interleaved round-robin
(the starting model rotates every round), and report the median over the repeats.

Two ways of ending the forward pass are timed, because the final resize of K-channel
logits to the image size is a large share of the time on CPU:

* ``full-res``: every model returns (1, K, H, W) logits. smp's own ``forward`` (its
  segmentation head ends with a bilinear x4 upsampling); HFGD's ``model.predict``
  (bilinear resize of the stride-``os`` logits to the image).
* ``native``: every model stops at its own output stride. smp's segmentation head
  without its upsampling layer (1/4 of the image); HFGD's ``model(x).logits``
  (1/os of the image).

The decoder's share is ``(t_model - t_encoder) / t_model`` where ``t_encoder`` times
the model's own encoder (``model.backbone`` for ours, ``model.encoder`` for smp) in
the same rounds; the "decoder" is everything after the encoder (for HFGD: the HFG
branch with the CAE, the upsampler, the classifier, and the final resize if any).
Parameters and GFLOPs come from ``torch.utils.flop_counter`` for every model (a
multiply-add counts as 2 FLOPs; interpolation, normalisation and element-wise ops are
not counted by it).

    hfgd-lab bench --threads 1 --repeats 30 --json speed.json
    python benchmarks/speed.py ...            (the same, from a checkout)

smp (segmentation-models-pytorch) is the ``[bench]`` extra; without it the smp rows
are refused with a message.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from .bench_onnx import run_onnx_benchmark
from .bench_train import EXTRA as TRAIN_EXTRA
from .bench_train import median_ms, parse_size, run_train_benchmark, spread
from .config import HFGDConfig
from .models import build_model

MODELS = ("hfgd_os8", "hfgd_os4", "hfgd_os2", "semantic_fpn", "smp_fpn", "smp_upernet")
REFERENCE = "smp_fpn"
VARIANTS = ("full", "native")
SPREAD_WARN = 0.10  # IQR / median above which a timing is flagged as noisy


@dataclass
class Entry:
    """One model and the callables that are timed."""

    name: str
    label: str
    model: nn.Module
    encoder: nn.Module
    encode: Callable  # x -> features
    run: dict  # variant -> (x -> logits)
    out_stride: int
    times: dict = field(default_factory=dict)  # "encoder" / variant -> [wall seconds]
    cpu_times: dict = field(default_factory=dict)  # the same, process CPU seconds


# ---- models ----------------------------------------------------------------------------

def build_entries(names, backbone: str, num_classes: int) -> list[Entry]:
    entries = []
    for name in names:
        if name.startswith("hfgd_os") or name == "semantic_fpn":
            if name == "semantic_fpn":
                cfg = HFGDConfig(backbone=backbone, num_classes=num_classes,
                                 arch="semantic_fpn", output_stride=4)
                label = "SemanticFPN (ours, OS4)"
            else:
                os_ = int(name[len("hfgd_os"):])
                cfg = HFGDConfig(backbone=backbone, num_classes=num_classes, output_stride=os_)
                label = f"HFGD OS{os_}"
            model = build_model(cfg).eval()
            entries.append(Entry(
                name, label, model, model.backbone, model.backbone,
                {"full": model.predict, "native": lambda x, m=model: m(x).logits},
                cfg.output_stride))
        elif name in ("smp_fpn", "smp_upernet"):
            import segmentation_models_pytorch as smp

            cls = smp.FPN if name == "smp_fpn" else smp.UPerNet
            model = cls(encoder_name=f"tu-{backbone}", encoder_weights=None,
                        classes=num_classes).eval()
            head = [m for m in model.segmentation_head
                    if not isinstance(m, (nn.Upsample, nn.UpsamplingBilinear2d))]
            if len(head) == len(model.segmentation_head):
                raise RuntimeError(f"{name}: no upsampling layer found in its segmentation head")
            head = nn.Sequential(*head)

            def native(x, m=model, head=head):
                return head(m.decoder(m.encoder(x)))

            label = "smp FPN" if name == "smp_fpn" else "smp UPerNet"
            entries.append(Entry(name, label, model, model.encoder, model.encoder,
                                 {"full": model, "native": native}, 4))
        else:
            raise ValueError(f"unknown model {name!r}; choose from {MODELS}")
    return entries


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_flops(fn: Callable, x: torch.Tensor) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        fn(x)
    return counter.get_total_flops() / 1e9


# ---- timing ----------------------------------------------------------------------------

def time_entries(entries, x, repeats: int, warmup: int, variants, progress=None) -> None:
    """Interleaved timing: each round runs every (model, part) once, starting from a
    different item each round, so slow phases of a shared machine hit all alike.

    Records wall-clock time (``e.times``) and the process's CPU time (``e.cpu_times``);
    with one thread the latter leaves out the time the process waited for a core."""
    items = []
    for e in entries:
        items.append((e, "encoder", e.encode))
        for v in variants:
            items.append((e, v, e.run[v]))
        e.times = {k: [] for k in ("encoder", *variants)}
        e.cpu_times = {k: [] for k in ("encoder", *variants)}
    for _ in range(warmup):
        for _, _, fn in items:
            fn(x)
    n = len(items)
    for r in range(repeats):
        for j in range(n):
            e, part, fn = items[(r + j) % n]
            c0, t0 = time.process_time(), time.perf_counter()
            fn(x)
            t1, c1 = time.perf_counter(), time.process_time()
            e.times[part].append(t1 - t0)
            e.cpu_times[part].append(c1 - c0)
        if progress:
            progress(r + 1, repeats)


# ---- report ----------------------------------------------------------------------------

def _timing(e: Entry, ref: Entry | None, variants, clock: str) -> dict:
    get = (lambda en: en.times) if clock == "wall" else (lambda en: en.cpu_times)
    enc = get(e)["encoder"]
    out = {"encoder_ms": median_ms(enc), "encoder_spread": spread(enc),
           "encoder_times_ms": [1000 * t for t in enc]}
    for v in variants:
        ts = get(e)[v]
        ms = median_ms(ts)
        # decoder time: median over rounds of (model - encoder), paired by round
        dec = 1000 * statistics.median(a - b for a, b in zip(ts, enc))
        c = {"ms": ms, "spread": spread(ts), "decoder_ms": dec, "decoder_share": dec / ms}
        if ref is not None:
            rts = get(ref)[v]
            c["ratio"] = ms / median_ms(rts)  # ratio of medians (the table's)
            c["ratio_paired"] = statistics.median(a / b for a, b in zip(ts, rts))
        c["times_ms"] = [1000 * t for t in ts]
        out[v] = c
    return out


def summarise(entries, variants, flops: dict) -> dict:
    ref = next((e for e in entries if e.name == REFERENCE), None)
    rows = {}
    for e in entries:
        row = {"label": e.label, "output_stride": e.out_stride,
               "params_m": count_params(e.model) / 1e6,
               "encoder_params_m": count_params(e.encoder) / 1e6,
               "gflops": flops[e.name]["total"], "encoder_gflops": flops[e.name]["encoder"]}
        row["decoder_params_m"] = row["params_m"] - row["encoder_params_m"]
        row["decoder_gflops"] = row["gflops"] - row["encoder_gflops"]
        row["wall"] = _timing(e, ref, variants, "wall")
        row["cpu"] = _timing(e, ref, variants, "cpu")
        rows[e.name] = row
    return rows


def worst_spread(row: dict, variants, clock: str) -> float:
    t = row[clock]
    return max([t["encoder_spread"]] + [t[v]["spread"] for v in variants])


VARIANT_TITLES = {
    "full": "full-res: every model returns 1/1 logits (final bilinear resize included)",
    "native": "native: every model stops at its own output stride (no final resize)",
}


def format_table(rows: dict, variants, clock: str = "wall", markdown: bool = False) -> str:
    heads = ["model", "out", "params (M)", "GFLOPs", "dec GFLOPs"]
    for v in variants:
        heads += [f"{v} ms", f"{v} x FPN", f"{v} dec share"]
    heads += ["enc ms", "max spread"]
    body = []
    for r in rows.values():
        t = r[clock]
        line = [r["label"], f"1/{r['output_stride']}", f"{r['params_m']:.2f}",
                f"{r['gflops']:.2f}", f"{r['decoder_gflops']:.2f}"]
        for v in variants:
            c = t[v]
            line += [f"{c['ms']:.1f}", f"{c['ratio']:.2f}" if "ratio" in c else "-",
                     f"{100 * c['decoder_share']:.0f}%"]
        worst = worst_spread(r, variants, clock)
        line += [f"{t['encoder_ms']:.1f}",
                 f"{100 * worst:.0f}%" + (" !" if worst > SPREAD_WARN else "")]
        body.append(line)
    if markdown:
        out = ["| " + " | ".join(heads) + " |", "|" + "|".join("---" for _ in heads) + "|"]
        out += ["| " + " | ".join(b) + " |" for b in body]
        return "\n".join(out)
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(heads)]

    def fmt(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt(heads), fmt(["-" * w for w in widths])] + [fmt(b) for b in body])


def environment(args) -> dict:
    import timm

    try:
        import segmentation_models_pytorch as smp
        smp_version = smp.__version__
    except ImportError:  # pragma: no cover - smp is needed for the smp rows only
        smp_version = None
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "cpu": cpu, "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "timm": timm.__version__, "smp": smp_version,
            "command": args.command}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", default="convnext_atto", help="timm model name (all models)")
    p.add_argument("--size", type=int, default=512, help="square input size in pixels")
    p.add_argument("--repeats", type=int, default=20, help="timed rounds (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--num-classes", type=int, default=150, help="classes K (150: ADE20K-like)")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS + TRAIN_EXTRA,
                   metavar="MODEL", help=f"subset of {', '.join(MODELS)} (--train also: "
                                         f"{', '.join(TRAIN_EXTRA)})")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS,
                   help="full (logits resized to the image) and/or native (own stride)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="what the table shows: wall-clock latency, or process CPU time "
                        "(with --threads 1 it leaves out waiting for a busy core); the "
                        "JSON holds both")
    p.add_argument("--seed", type=int, default=0)
    t = p.add_argument_group("training step (--train; hfgd_lab/bench_train.py)")
    t.add_argument("--train", action="store_true",
                   help="time the training step (forward + loss + backward + AdamW, split "
                        "into the four) and its peak memory instead of inference")
    t.add_argument("--sizes", nargs="+", default=["2x256", "8x192"], metavar="BxS",
                   help="--train: batch x square side, one table each")
    t.add_argument("--device", default="cpu", help="--train: cpu or cuda[:N]")
    t.add_argument("--amp", action="store_true",
                   help="--train: autocast (bfloat16; float16 where bf16 is unsupported)")
    t.add_argument("--channels-last", action="store_true",
                   help="--train: models and input in channels-last memory")
    p.add_argument("--onnx", action="store_true",
                   help="time our models' exported ONNX graphs (onnxruntime, CPU) beside "
                        "PyTorch instead (the export extra; hfgd_lab/bench_onnx.py)")
    p.add_argument("--markdown", action="store_true", help="print the table as markdown")
    p.add_argument("--json", metavar="OUT", help="write all timings and counts as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")


def check_args(args, argv=None):
    if args.repeats < 1 or args.threads < 1 or args.size < 32 or args.warmup < 0:
        raise ValueError("need --repeats >= 1, --threads >= 1, --warmup >= 0, --size >= 32")
    if not getattr(args, "train", False) and set(args.models) & set(TRAIN_EXTRA):
        raise ValueError(f"--models {' '.join(sorted(set(args.models) & set(TRAIN_EXTRA)))}: "
                         "only with --train")
    if getattr(args, "train", False):
        for size in args.sizes:
            parse_size(size)
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--device {args.device}: CUDA is not available here")
        if args.device != "cpu" and not args.device.startswith("cuda"):
            raise ValueError(f"--device {args.device!r}: expected cpu or cuda[:N]")
    if any(m.startswith("smp_") for m in args.models):
        try:
            import segmentation_models_pytorch  # noqa: F401
        except ImportError:
            raise ValueError("the smp rows need segmentation-models-pytorch: "
                             "pip install 'hfgd-lab[bench]' (or choose --models without smp_*)")
    # as typed: "hfgd-lab bench ..." or "speed.py ..." (argv None), else as called; set
    # after the checks, since the CLI names args.command in an error message
    args.command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]] if argv is None
                            else ["hfgd-lab bench", *argv])
    return args


def parse_args(argv=None):
    class Fmt(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=Fmt)
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return check_args(args, argv)
    except ValueError as e:
        p.error(str(e))


def main(argv=None) -> dict:
    """Run the benchmark; returns what ``--json`` writes."""
    return run_benchmark(parse_args(argv))


def run_benchmark(args) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:  # callers in the same process (tests) keep their setting
        torch.set_num_threads(threads)


def _run(args) -> dict:
    torch.manual_seed(args.seed)
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr,
                                                                 flush=True))
    env = environment(args)
    if getattr(args, "train", False):
        results = run_train_benchmark(args, env, log)
        _write_json(args, results, log)
        return results
    if getattr(args, "onnx", False):
        results = run_onnx_benchmark(args, env, log)
        _write_json(args, results, log)
        return results
    log(f"building {', '.join(args.models)} with {args.backbone}, K={args.num_classes}")
    entries = build_entries(args.models, args.backbone, args.num_classes)
    enc_params = {e.name: count_params(e.encoder) for e in entries}
    if len(set(enc_params.values())) > 1:
        log(f"warning: encoders differ in size: {enc_params}")
    x = torch.randn(1, 3, args.size, args.size)
    with torch.inference_mode():
        flops = {e.name: {"total": count_flops(e.run["full"], x),
                          "encoder": count_flops(e.encode, x)} for e in entries}
        for e in entries:  # every model must agree on what it returns
            for v in args.variants:
                out = e.run[v](x)
                stride = 1 if v == "full" else e.out_stride
                want = (1, args.num_classes, -(-args.size // stride), -(-args.size // stride))
                if tuple(out.shape) != want:
                    raise RuntimeError(f"{e.name} ({v}) returned {tuple(out.shape)}, "
                                       f"expected {want}")
        t0 = time.perf_counter()
        time_entries(entries, x, args.repeats, args.warmup, args.variants,
                     progress=(lambda r, n: log(f"  round {r}/{n}  "
                                                f"{time.perf_counter() - t0:.0f} s")))
    rows = summarise(entries, args.variants, flops)
    results = {"environment": env, "settings": {
        k: getattr(args, k) for k in ("backbone", "size", "repeats", "warmup", "threads",
                                       "num_classes", "models", "variants", "clock", "seed")},
        "reference": REFERENCE, "models": rows}
    print(f"{args.backbone}, {args.size}x{args.size}, batch 1, K={args.num_classes}, "
          f"{args.threads} thread(s), {args.repeats} interleaved repeats (median), "
          f"torch {env['torch']}, timm {env['timm']}, smp {env['smp']}, {env['cpu']}")
    for v in args.variants:
        print(f"  {v}: {VARIANT_TITLES[v]}")
    print(f"  times: {'wall-clock' if args.clock == 'wall' else 'process CPU'} ms; "
          "x FPN: ratio of medians against smp FPN; dec share: (model - encoder) / model; "
          "max spread: largest IQR/median of the row's timings")
    print(format_table(rows, args.variants, args.clock, markdown=args.markdown))
    if REFERENCE in rows:
        other = "cpu" if args.clock == "wall" else "wall"
        print(f"x FPN by {other} time: " + "; ".join(
            f"{r['label']} " + "/".join(f"{r[other][v]['ratio']:.2f}" for v in args.variants)
            for n, r in rows.items() if n != REFERENCE) + f"  ({'/'.join(args.variants)})")
    noisy = [n for n, r in rows.items() if worst_spread(r, args.variants, args.clock)
             > SPREAD_WARN]
    if noisy:
        print(f"note: IQR above {SPREAD_WARN:.0%} of the median for {', '.join(noisy)}; "
              "the machine was busy, consider rerunning with more repeats")
    _write_json(args, results, log)
    return results


def _write_json(args, results: dict, log) -> None:
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
        log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
