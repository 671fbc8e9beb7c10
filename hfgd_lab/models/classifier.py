"""Classification of pixel features by class tokens: logits = <feature, E_k>.

One function serves both branches; the upsampler calls it with detached tokens
when the token stop-gradient is on.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def classify(feat: torch.Tensor, tokens: torch.Tensor, mode: str = "dot",
             logit_scale: torch.Tensor | None = None) -> torch.Tensor:
    """(B, D, h, w) features x (K, D) tokens -> (B, K, h, w) logits.

    ``mode="cosine"`` normalises both and multiplies by ``exp(logit_scale)``.
    """
    if mode == "cosine":
        feat = F.normalize(feat, dim=1)
        tokens = F.normalize(tokens, dim=1)
        scale = logit_scale.exp() if logit_scale is not None else 1.0
        return torch.einsum("bdhw,kd->bkhw", feat, tokens) * scale
    return torch.einsum("bdhw,kd->bkhw", feat, tokens)
