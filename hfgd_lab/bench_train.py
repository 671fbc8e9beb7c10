"""Training-step speed: HFGD (OS8/4/2), our SemanticFPN, smp's FPN and UPerNet, one run.

``hfgd-lab bench --train`` (``benchmarks/train_speed.py`` from a checkout). Every model
uses the same timm encoder (smp through ``tu-<name>``, random weights) and the same
number of classes. One training step is what ``hfgd-lab train`` does per batch, without
the data loading:

* **forward**: ``model(x)`` in train mode. HFGD returns its stride-``os`` and
  stride-32 logits; smp's ``forward`` returns (B, K, H, W) logits (its head ends with
  the x4 bilinear resize).
* **loss**: ``model.loss(out, y)["loss"]`` for ours (both branches' cross-entropies
  against the full-resolution labels, :mod:`hfgd_lab.models.losses`);
  ``F.cross_entropy(logits, y, ignore_index=255)`` for smp, as its users train it.
* **backward**: ``loss.backward()``.
* **optimizer**: ``AdamW.step()`` and ``zero_grad(set_to_none=True)``.

So the resize to the labels is in smp's forward but in our loss: compare whole steps,
and read the split as where each model spends its time. The models' steps are
interleaved round-robin (the starting model rotates every round) and the table shows
medians over the rounds; ``x FPN`` is the ratio of the median step time to smp FPN's.

**Peak memory** of a step is measured once per model after the timed rounds (untimed):
on CUDA ``torch.cuda.max_memory_allocated()`` above the allocation before the step; on
CPU the process's peak resident set size (``VmHWM``, reset through
``/proc/self/clear_refs`` after ``malloc_trim``) above the resident size before the step.
It is the step's working memory (activations, gradients, optimizer temporaries); the
parameters and AdamW's state, allocated before, are not in it. (``tracemalloc`` cannot
see tensors: PyTorch allocates them outside Python's allocator.)

    hfgd-lab bench --train --threads 1 --repeats 10 --markdown --json speed_train.json
"""
from __future__ import annotations

import ctypes
import gc
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import HFGDConfig
from .models import build_model
from .models.hfgd import resize_logits

MODELS = ("hfgd_os8", "hfgd_os4", "hfgd_os2", "semantic_fpn", "smp_fpn", "smp_upernet")
# not in the default set: HFGD OS4 with the straightforward loss (each branch's logits
# resized to the labels, then F.cross_entropy), i.e. the loss before models/losses.py
EXTRA = ("hfgd_os4_plain_loss",)
REFERENCE = "smp_fpn"
PARTS = ("forward", "loss", "backward", "optimizer")
SIZES = ("2x256", "8x192")
SPREAD_WARN = 0.10


@dataclass
class TrainEntry:
    """One model, its loss and its optimizer."""

    name: str
    label: str
    model: nn.Module
    forward: Callable          # x -> output
    loss: Callable             # (output, y) -> scalar
    optimizer: torch.optim.Optimizer
    out_stride: int
    wall: dict = field(default_factory=dict)   # part -> [seconds], and "step"
    cpu: dict = field(default_factory=dict)    # the same, process CPU seconds
    peak_mb: float | None = None


def parse_size(text: str) -> tuple[int, int]:
    """``"BxS"`` -> (batch B, square side S); raises ValueError naming the text."""
    try:
        b, s = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--sizes {text!r}: expected BATCHxSIDE, e.g. 2x256") from None
    if b < 2 or s < 32:  # batch 1 cannot train BatchNorm (smp UPerNet's pooling module)
        raise ValueError(f"--sizes {text!r}: need batch >= 2 and side >= 32")
    return b, s


def build_train_entries(names, backbone: str, num_classes: int, device,
                        lr: float = 1e-4) -> list[TrainEntry]:
    entries = []
    for name in names:
        if name.startswith("hfgd_os") or name == "semantic_fpn":
            plain = name == "hfgd_os4_plain_loss"
            if plain:
                cfg = HFGDConfig(backbone=backbone, num_classes=num_classes, output_stride=4)
                label = "HFGD OS4, straightforward loss"
            elif name == "semantic_fpn":
                cfg = HFGDConfig(backbone=backbone, num_classes=num_classes,
                                 arch="semantic_fpn", output_stride=4)
                label = "SemanticFPN (ours, OS4)"
            else:
                os_ = int(name[len("hfgd_os"):])
                cfg = HFGDConfig(backbone=backbone, num_classes=num_classes, output_stride=os_)
                label = f"HFGD OS{os_}"
            model = build_model(cfg).to(device).train()
            loss = ((lambda out, y, m=model: straightforward_loss(m, out, y)) if plain else
                    (lambda out, y, m=model: m.loss(out, y)["loss"]))
            entries.append(TrainEntry(name, label, model, model, loss,
                                      torch.optim.AdamW(model.parameters(), lr=lr),
                                      cfg.output_stride))
        elif name in ("smp_fpn", "smp_upernet"):
            import segmentation_models_pytorch as smp

            cls = smp.FPN if name == "smp_fpn" else smp.UPerNet
            model = cls(encoder_name=f"tu-{backbone}", encoder_weights=None,
                        classes=num_classes).to(device).train()
            label = "smp FPN" if name == "smp_fpn" else "smp UPerNet"
            entries.append(TrainEntry(
                name, label, model, model,
                lambda out, y: F.cross_entropy(out, y, ignore_index=255),
                torch.optim.AdamW(model.parameters(), lr=lr), 4))
        else:
            raise ValueError(f"unknown model {name!r}; choose from {MODELS + EXTRA}")
    return entries


def straightforward_loss(model, out, target) -> torch.Tensor:
    """HFGD's loss the plain way: each branch's logits resized to the labels
    (:func:`~hfgd_lab.models.hfgd.resize_logits`), then ``F.cross_entropy`` (the same
    value and gradients as ``model.loss``, tests/test_losses.py)."""
    cfg, size = model.cfg, tuple(target.shape[-2:])

    def ce(logits, stride):
        up = resize_logits(logits, out.input_size, stride, size)
        return F.cross_entropy(up.float(), target, weight=model.class_weights,
                               ignore_index=cfg.ignore_index)
    loss = cfg.loss_up_weight * ce(out.logits, out.output_stride)
    if out.logits_high is not None:
        loss = loss + cfg.loss_high_weight * ce(out.logits_high, 32)
    return loss


# ---- one step, timed part by part --------------------------------------------------------

def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(e: TrainEntry, x, y, device, amp: bool = False, clocks=None) -> None:
    """forward + loss + backward + AdamW step; ``clocks`` (a list) gets the (wall, cpu)
    time at each of the five boundaries."""
    def mark():
        if clocks is not None:
            _sync(device)
            clocks.append((time.perf_counter(), time.process_time()))

    # bfloat16 (as hfgd-lab train where supported): no gradient scaler needed
    dtype = torch.float16 if device.type == "cuda" and not torch.cuda.is_bf16_supported() \
        else torch.bfloat16
    autocast = torch.autocast(device.type, dtype=dtype, enabled=amp)
    mark()
    with autocast:
        out = e.forward(x)
    mark()
    with autocast:
        loss = e.loss(out, y)
    mark()
    loss.backward()
    mark()
    e.optimizer.step()
    e.optimizer.zero_grad(set_to_none=True)
    mark()


def time_train(entries, x, y, device, repeats: int, warmup: int, amp: bool = False,
               progress=None) -> None:
    """Interleaved rounds: each round runs one step of every model, starting from a
    different model each round; records wall and CPU time per part and per step."""
    for e in entries:
        e.wall = {k: [] for k in (*PARTS, "step")}
        e.cpu = {k: [] for k in (*PARTS, "step")}
    for _ in range(warmup):
        for e in entries:
            train_step(e, x, y, device, amp)
    n = len(entries)
    for r in range(repeats):
        for j in range(n):
            e = entries[(r + j) % n]
            clocks = []
            train_step(e, x, y, device, amp, clocks)
            for i, part in enumerate(PARTS):
                e.wall[part].append(clocks[i + 1][0] - clocks[i][0])
                e.cpu[part].append(clocks[i + 1][1] - clocks[i][1])
            e.wall["step"].append(clocks[-1][0] - clocks[0][0])
            e.cpu["step"].append(clocks[-1][1] - clocks[0][1])
        if progress:
            progress(r + 1, repeats)


# ---- peak memory --------------------------------------------------------------------------

def _rss_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def peak_step_memory(e: TrainEntry, x, y, device, amp: bool = False) -> float | None:
    """MB a step needs above what is allocated before it (None where not measurable)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        train_step(e, x, y, device, amp)
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2 ** 20
    _malloc_trim()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    except OSError:
        return None
    before = _rss_kb("VmRSS")
    train_step(e, x, y, device, amp)
    peak = _rss_kb("VmHWM")
    if before is None or peak is None:
        return None
    return (peak - before) / 1024


# ---- report -------------------------------------------------------------------------------

def median_ms(ts) -> float:
    return 1000 * statistics.median(ts)


def spread(ts) -> float:
    """Interquartile range relative to the median (0 for fewer than 4 samples)."""
    if len(ts) < 4:
        return 0.0
    q = statistics.quantiles(ts, n=4)
    return (q[2] - q[0]) / statistics.median(ts)


def summarise(entries) -> dict:
    ref = next((e for e in entries if e.name == REFERENCE), None)
    rows = {}
    for e in entries:
        row = {"label": e.label, "output_stride": e.out_stride,
               "params_m": sum(p.numel() for p in e.model.parameters()) / 1e6,
               "peak_mb": e.peak_mb}
        for clock in ("wall", "cpu"):
            t = getattr(e, clock)
            c = {f"{p}_ms": median_ms(t[p]) for p in (*PARTS, "step")}
            c["spread"] = spread(t["step"])
            c["step_times_ms"] = [1000 * v for v in t["step"]]
            if ref is not None:
                rt = getattr(ref, clock)["step"]
                c["ratio"] = c["step_ms"] / median_ms(rt)
                c["ratio_paired"] = statistics.median(a / b for a, b in zip(t["step"], rt))
            row[clock] = c
        rows[e.name] = row
    return rows


def format_table(rows: dict, clock: str = "wall", markdown: bool = False) -> str:
    heads = ["model", "out", "params (M)", "step ms", "x FPN", "x FPN paired",
             *[f"{p} ms" for p in PARTS], "peak MB", "spread"]
    body = []
    for r in rows.values():
        c = r[clock]
        body.append([r["label"], f"1/{r['output_stride']}", f"{r['params_m']:.2f}",
                     f"{c['step_ms']:.0f}", f"{c['ratio']:.2f}" if "ratio" in c else "-",
                     f"{c['ratio_paired']:.2f}" if "ratio_paired" in c else "-",
                     *[f"{c[p + '_ms']:.0f}" for p in PARTS],
                     f"{r['peak_mb']:.0f}" if r["peak_mb"] is not None else "-",
                     f"{100 * c['spread']:.0f}%" + (" !" if c["spread"] > SPREAD_WARN else "")])
    if markdown:
        out = ["| " + " | ".join(heads) + " |", "|" + "|".join("---" for _ in heads) + "|"]
        return "\n".join(out + ["| " + " | ".join(b) + " |" for b in body])
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(heads)]

    def fmt(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt(heads), fmt(["-" * w for w in widths])] + [fmt(b) for b in body])


def load_average() -> list | None:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def run_train_benchmark(args, env: dict, log) -> dict:
    """The ``--train`` mode of :mod:`hfgd_lab.bench` (arguments checked there)."""
    device = torch.device(args.device)
    results = {"environment": env, "mode": "train", "device": str(device),
               "settings": {k: getattr(args, k) for k in (
                   "backbone", "sizes", "repeats", "warmup", "threads", "num_classes",
                   "models", "clock", "seed", "amp", "channels_last", "device")},
               "reference": REFERENCE, "load_before": load_average(), "sizes": {}}
    print(f"training step (forward + loss + backward + AdamW), {args.backbone}, "
          f"K={args.num_classes}, {args.threads} thread(s), {device}, "
          f"{'AMP, ' if args.amp else ''}{'channels-last, ' if args.channels_last else ''}"
          f"{args.repeats} interleaved rounds (median), torch {env['torch']}, "
          f"timm {env['timm']}, smp {env['smp']}, {env['cpu']}")
    for size in args.sizes:
        b, s = parse_size(size)
        torch.manual_seed(args.seed)
        log(f"{size}: building {', '.join(args.models)}")
        entries = build_train_entries(args.models, args.backbone, args.num_classes, device)
        g = torch.Generator().manual_seed(args.seed)
        x = torch.randn(b, 3, s, s, generator=g).to(device)
        y = torch.randint(0, args.num_classes, (b, s, s), generator=g).to(device)
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
            for e in entries:
                e.model.to(memory_format=torch.channels_last)
        t0 = time.perf_counter()
        time_train(entries, x, y, device, args.repeats, args.warmup, args.amp,
                   progress=lambda r, n: log(f"  {size} round {r}/{n}  "
                                             f"{time.perf_counter() - t0:.0f} s"))
        for e in entries:
            e.peak_mb = peak_step_memory(e, x, y, device, args.amp)
        rows = summarise(entries)
        results["sizes"][size] = {"batch": b, "side": s, "models": rows}
        print(f"\nbatch {b} x {s}x{s}: {'wall-clock' if args.clock == 'wall' else 'process CPU'}"
              " ms, medians; x FPN: ratio of median step times against smp FPN (paired: "
              "median of per-round ratios); peak MB: a step's memory above the state before it")
        print(format_table(rows, args.clock, markdown=args.markdown))
        noisy = [n for n, r in rows.items() if r[args.clock]["spread"] > SPREAD_WARN]
        if noisy:
            print(f"note: IQR above {SPREAD_WARN:.0%} of the median for {', '.join(noisy)}; "
                  "the machine was busy, read the ratios")
        del entries
        gc.collect()
    results["load_after"] = load_average()
    print(f"load average (1/5/15 min) before {results['load_before']}, "
          f"after {results['load_after']}", file=sys.stdout)
    return results
