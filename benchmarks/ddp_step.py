#!/usr/bin/env python
"""A DDP training step of HFGD across processes: timed, and checked against one process.

    torchrun --standalone --nproc_per_node 2 benchmarks/ddp_step.py --device cuda --amp \\
        --json ddp_step.json

Each rank builds the same model (same seed), wraps it in ``DistributedDataParallel`` and
trains on its own batch (forward, ``model.loss``, backward with DDP's gradient
all-reduce, AdamW), optionally under autocast (bfloat16). Checks, written to ``--json``
by rank 0 and failing the run (exit 1) when they do not hold:

* **gradient**: the first step's all-reduced gradient equals the gradient of the same
  model, in one process without DDP, on all ranks' batches together (the mean of
  per-rank means is the mean over the union: same number of labelled pixels per rank);
  in float32 (autocast off for this check), relative error below 1e-4;
* **weights**: after the timed steps every rank holds the same parameters (max |diff|
  against rank 0's, broadcast).

Backends: NCCL when there is one GPU per rank, gloo otherwise (CPU, or several ranks on
one GPU, which NCCL refuses). Dropout is off so that the check is deterministic.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402

from hfgd_lab import HFGDConfig, build_model  # noqa: E402


def batch_of(rank: int, b: int, s: int, k: int, device):
    g = torch.Generator().manual_seed(1000 + rank)
    x = torch.randn(b, 3, s, s, generator=g)
    y = torch.randint(0, k, (b, s, s), generator=g)
    return x.to(device), y.to(device)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda or cpu")
    p.add_argument("--backbone", default="convnext_atto")
    p.add_argument("--num-classes", type=int, default=150)
    p.add_argument("--batch", type=int, default=8, help="images per rank")
    p.add_argument("--size", type=int, default=192)
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--amp", action="store_true", help="autocast (bfloat16) for the timed steps")
    p.add_argument("--json", metavar="OUT")
    args = p.parse_args(argv)

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print(f"ddp_step: --device {args.device}: CUDA is not available", file=sys.stderr)
        return 2
    gpus = torch.cuda.device_count() if cuda else 0
    backend = "nccl" if cuda and gpus >= world else "gloo"
    device = torch.device("cuda", local % gpus) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group(backend)

    cfg = HFGDConfig(backbone=args.backbone, num_classes=args.num_classes, dropout=0.0)
    torch.manual_seed(0)
    model = build_model(cfg).to(device).train()
    torch.manual_seed(0)
    single = build_model(cfg).to(device).train()   # the reference, no DDP
    single.load_state_dict(model.state_dict())
    net = DDP(model, device_ids=[device.index] if cuda else None)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    # ---- gradient check (float32) ----------------------------------------------------
    x, y = batch_of(rank, args.batch, args.size, args.num_classes, device)
    model.loss(net(x), y)["loss"].backward()
    parts = [batch_of(r, args.batch, args.size, args.num_classes, device) for r in range(world)]
    xs, ys = torch.cat([a for a, _ in parts]), torch.cat([b for _, b in parts])
    single.loss(single(xs), ys)["loss"].backward()
    num = den = 0.0
    for (n, a), (_, b) in zip(model.named_parameters(), single.named_parameters()):
        if a.grad is None and b.grad is None:
            continue
        ga = a.grad if a.grad is not None else torch.zeros_like(a)
        gb = b.grad if b.grad is not None else torch.zeros_like(b)
        num += float((ga.double() - gb.double()).pow(2).sum())
        den += float(gb.double().pow(2).sum())
    grad_rel = (num / max(den, 1e-30)) ** 0.5
    opt.zero_grad(set_to_none=True)
    del single

    # ---- timed steps --------------------------------------------------------------------
    dtype = torch.bfloat16 if not cuda or torch.cuda.is_bf16_supported() else torch.float16
    times = []
    for i in range(args.warmup + args.steps):
        if cuda:
            torch.cuda.synchronize(device)
        dist.barrier()
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=args.amp):
            out = net(x)
            loss = model.loss(out, y)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)

    # ---- the ranks hold the same weights --------------------------------------------------
    flat = torch.cat([p.detach().float().flatten() for p in model.parameters()])
    ref = flat.clone()
    dist.broadcast(ref, 0)
    diff = (flat - ref).abs().max()
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    step_ms = torch.tensor(1000 * statistics.median(times), device=device)
    gathered = [torch.zeros_like(step_ms) for _ in range(world)]
    dist.all_gather(gathered, step_ms)

    ok = grad_rel < 1e-4 and float(diff) == 0.0
    if rank == 0:
        res = {"world_size": world, "backend": backend, "device": str(device),
               "gpus": gpus, "backbone": args.backbone, "num_classes": args.num_classes,
               "batch_per_rank": args.batch, "size": args.size, "amp": args.amp,
               "torch": torch.__version__,
               "step_ms_per_rank": [float(t) for t in gathered],
               "images_per_s": world * args.batch / (max(float(t) for t in gathered) / 1000),
               "grad_rel_error_vs_one_process": grad_rel,
               "max_weight_diff_between_ranks": float(diff), "ok": ok}
        print(f"DDP {world} ranks ({backend}, {device}{', AMP' if args.amp else ''}): "
              f"step {', '.join(f'{float(t):.1f}' for t in gathered)} ms per rank, "
              f"{res['images_per_s']:.1f} img/s; gradient vs one process: rel. error "
              f"{grad_rel:.2e}; weights equal across ranks: {float(diff) == 0.0}")
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(res, indent=2))
    dist.destroy_process_group()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
