"""Parameter and FLOP counts per part of the model, via torch.utils.flop_counter."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

PARTS = ("backbone", "neck", "high_proj", "cae", "upsampler")


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def profile_model(model: nn.Module, input_size=(1, 3, 512, 512)) -> dict:
    """Parameters and GFLOPs of one forward pass, in total and per part.

    FLOPs count a multiply-add as 2, as ``torch.utils.flop_counter`` does. Returns
    ``{"params": int, "gflops": float, "parts": {name: {"params", "gflops"}}}``.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = torch.zeros(input_size, device=device)
    counter = FlopCounterMode(display=False, depth=None)
    with counter:
        model(x)
    model.train(was_training)
    per_module = counter.get_flop_counts()
    root = type(model).__name__
    total = sum(per_module.get(root, {}).values())
    parts = {}
    for name in PARTS:
        sub = getattr(model, name, None)
        if sub is None:
            continue
        flops = sum(per_module.get(f"{root}.{name}", {}).values())
        parts[name] = {"params": count_parameters(sub), "gflops": flops / 1e9}
    head_params = count_parameters(model) - sum(p["params"] for p in parts.values())
    parts["classifier"] = {"params": head_params,
                           "gflops": (total - sum(p["gflops"] * 1e9 for p in parts.values())) / 1e9}
    return {"params": count_parameters(model), "gflops": total / 1e9, "parts": parts,
            "input_size": list(input_size)}


def format_profile(profile: dict) -> str:
    lines = [f"input {tuple(profile['input_size'])}: {profile['params'] / 1e6:.2f} M params, "
             f"{profile['gflops']:.2f} GFLOPs"]
    for name, p in profile["parts"].items():
        lines.append(f"  {name:<10} {p['params'] / 1e6:8.3f} M  {p['gflops']:8.3f} GFLOPs")
    return "\n".join(lines)
