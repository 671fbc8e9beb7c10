"""The pyramid upsampler: SemanticFPN laterals + top-down fusion, guided by F_high.

Follows Kirillov et al.'s Semantic FPN head as segmentation_models.pytorch builds it
(1x1 laterals, nearest x2 top-down adds, per level Conv3x3-GN-ReLU-x2 blocks to the
output stride, summed), with two HFGD changes: F_high is added to the top of the
pyramid, and the summed map is projected to D so that the shared class tokens can
classify it. Output stride 2 adds a light stride-2 stem on the image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups of at least 4 channels (smp: 32 groups of 128),
    so a 1x1 map (a small image at stride 32) still has several values per group."""
    groups = 32
    while groups > 1 and (channels % groups or channels // groups < 4):
        groups //= 2
    return nn.GroupNorm(groups, channels)


def conv_gn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                         group_norm(cout), nn.ReLU(inplace=True))


class LevelHead(nn.Module):
    """Conv3x3-GN-ReLU blocks, each followed by x2 upsampling, ``ups`` times (one
    block without upsampling when ``ups == 0``)."""

    def __init__(self, cin: int, cout: int, ups: int):
        super().__init__()
        self.ups = ups
        self.blocks = nn.ModuleList(conv_gn_relu(cin if i == 0 else cout, cout)
                                    for i in range(max(ups, 1)))

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
            if self.ups:
                x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return x


class PyramidUpsampler(nn.Module):
    """C2..C5 (+ optional F_high) -> F_up at output stride 8, 4 or 2, width ``dim``.

    Args:
        in_channels: channels of C2, C3, C4, C5.
        dim: pyramid width and output width D (the class-token space).
        head_channels: width of the per-level blocks (smp's ``segmentation_channels``).
        output_stride: 8, 4 or 2.
        guided: add F_high (width ``dim``) to the top of the pyramid.
        stem_channels: width of the image stem used at output stride 2.
        refine_channels: width of the half-resolution refinement at output stride 2.
        dropout: dropout on the summed map before the projection.
    """

    def __init__(self, in_channels, dim: int, head_channels: int = 128, output_stride: int = 4,
                 guided: bool = True, stem_channels: int = 32, dropout: float = 0.0,
                 refine_channels: int = 64):
        super().__init__()
        self.output_stride = output_stride
        # pyramid levels used: stride 4..32 for OS4/OS2, 8..32 for OS8
        self.first_level = 1 if output_stride == 8 else 0
        base = max(output_stride, 4)
        used = list(range(self.first_level, 4))
        self.laterals = nn.ModuleList(nn.Conv2d(in_channels[i], dim, 1) for i in used)
        self.guide = nn.Conv2d(dim, dim, 1) if guided else None
        strides = [4, 8, 16, 32]
        self.heads = nn.ModuleList(
            LevelHead(dim, head_channels, (strides[i] // base).bit_length() - 1) for i in used)
        out_channels = head_channels
        if output_stride == 2:
            # Half resolution is 4x the pixels of stride 4: narrow the map before it
            # (1x1) and refine there with the stem's edges; a full-width 3x3 at 1/2 would
            # cost more than the whole rest of the decoder.
            out_channels = refine_channels
            self.stem = nn.Sequential(conv_gn_relu(3, stem_channels, stride=2),
                                      conv_gn_relu(stem_channels, stem_channels))
            self.narrow = nn.Conv2d(head_channels, refine_channels, 1)
            self.refine = conv_gn_relu(refine_channels + stem_channels, refine_channels)
        else:
            self.stem = None
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.proj = nn.Conv2d(out_channels, dim, 1)

    def forward(self, feats, feat_high: torch.Tensor | None = None,
                image: torch.Tensor | None = None) -> torch.Tensor:
        """F_up (B, dim, H/os, W/os)."""
        return self.proj(self.decode(feats, feat_high, image))

    def decode(self, feats, feat_high: torch.Tensor | None = None,
               image: torch.Tensor | None = None) -> torch.Tensor:
        """Everything before the final 1x1 projection (dropout included), so that the
        projection can be folded into a linear classifier at inference."""
        feats = feats[self.first_level:]
        lat = [conv(f) for conv, f in zip(self.laterals, feats)]
        if self.guide is not None and feat_high is not None:
            lat[-1] = lat[-1] + self.guide(feat_high)
        # top-down pathway
        for i in range(len(lat) - 1, 0, -1):
            lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[-2:],
                                                    mode="nearest")
        out = None
        for head, p in zip(self.heads, lat):
            y = head(p)
            out = y if out is None else out + y
        if self.stem is not None:
            if image is None:
                raise ValueError("output stride 2 needs the image for its stem")
            s = self.stem(image)
            out = F.interpolate(self.narrow(out), size=s.shape[-2:], mode="bilinear",
                                align_corners=False)
            out = self.refine(torch.cat([out, s], 1))
        return self.dropout(out)
