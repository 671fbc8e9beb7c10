"""CAE, the context augmentation encoder: transformer blocks on the stride-32 map.

Global self-attention is cheap at stride 32 (a 512 px image is 256 tokens), so the
high-level features get whole-image context before anything is upsampled. The
positional encoding is computed for the map at hand, so any input size works.
Attention maps are materialised only when asked for; otherwise the fused
``scaled_dot_product_attention`` kernel runs.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sine_position_encoding(h: int, w: int, dim: int, device=None, dtype=None) -> torch.Tensor:
    """2D sinusoidal encoding (DETR style) on normalised coordinates: (h*w, dim)."""
    quarter = dim // 4
    freqs = torch.exp(torch.arange(quarter, device=device, dtype=torch.float32)
                      * (-math.log(10000.0) / max(quarter, 1)))
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h * 2 * math.pi
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w * 2 * math.pi
    ey = ys[:, None] * freqs[None] * 10  # (h, q)
    ex = xs[:, None] * freqs[None] * 10  # (w, q)
    ey = torch.cat([ey.sin(), ey.cos()], 1)[:, None, :].expand(h, w, 2 * quarter)
    ex = torch.cat([ex.sin(), ex.cos()], 1)[None, :, :].expand(h, w, 2 * quarter)
    return torch.cat([ey, ex], -1).reshape(h * w, dim).to(dtype or torch.float32)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = None
        if return_attention:
            attn = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(-1)
            out = F.dropout(attn, self.dropout, self.training) @ v
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(b, n, d)), attn


class Block(nn.Module):
    """Pre-norm transformer block: x + MHSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x, return_attention: bool = False):
        y, attn = self.attn(self.norm1(x), return_attention)
        x = x + y
        return x + self.mlp(self.norm2(x)), attn


class CAE(nn.Module):
    """Context augmentation encoder on a (B, D, h, w) map; depth 0 is the identity
    followed by a LayerNorm, so the HFG branch still works without context."""

    def __init__(self, dim: int, depth: int = 2, heads: int = 8, mlp_ratio: float = 4.0,
                 dropout: float = 0.0, pos_encoding: str = "sine"):
        super().__init__()
        self.pos_encoding = pos_encoding
        self.pos_conv = (nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
                         if pos_encoding == "conv" and depth > 0 else None)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        b, d, h, w = x.shape
        attentions = []
        if self.blocks:
            if self.pos_conv is not None:
                x = x + self.pos_conv(x)
            tokens = x.flatten(2).transpose(1, 2)  # (B, N, D)
            if self.pos_encoding == "sine":
                tokens = tokens + sine_position_encoding(h, w, d, x.device, tokens.dtype)
            for blk in self.blocks:
                tokens, attn = blk(tokens, return_attention)
                if return_attention:
                    attentions.append(attn)
        else:
            tokens = x.flatten(2).transpose(1, 2)
        tokens = self.norm(tokens)
        return tokens.transpose(1, 2).reshape(b, d, h, w), attentions
