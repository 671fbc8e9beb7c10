"""Backbone: any timm model as a 4-level pyramid C2..C5 at strides 4, 8, 16, 32.

Hierarchical models (ConvNeXt, ResNet, Swin, EfficientNet, ...) come straight from
timm's ``features_only``; plain ViTs (one stride-16 map) go through a simple feature
pyramid (ViTDet). Pretrained weights come from a local file, a packaged offline copy or
timm's hub, in that order (:mod:`.weights`); nothing is ever unpickled.
"""
from __future__ import annotations

from pathlib import Path

import timm
import torch
from safetensors.torch import save_file
from torch import nn

from .weights import (PACKAGED, WeightsError, hub_offline, match_state_dict,
                      packaged_state_dict, read_state_dict)

STRIDES = (4, 8, 16, 32)


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's pyramid: one stride-16 map to strides 4, 8, 16, 32."""

    def __init__(self, channels: int):
        super().__init__()
        c = channels
        self.to_s4 = nn.Sequential(
            nn.ConvTranspose2d(c, c // 2, 2, stride=2), nn.GroupNorm(1, c // 2), nn.GELU(),
            nn.ConvTranspose2d(c // 2, c // 4, 2, stride=2))
        self.to_s8 = nn.ConvTranspose2d(c, c // 2, 2, stride=2)
        self.to_s32 = nn.MaxPool2d(2)
        self.channels = (c // 4, c // 2, c, c)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.to_s4(x), self.to_s8(x), x, self.to_s32(x)]


def _to_nchw(x: torch.Tensor, channels: int) -> torch.Tensor:
    # Swin and a few others return NHWC from features_only.
    if x.shape[1] != channels and x.shape[-1] == channels:
        return x.permute(0, 3, 1, 2).contiguous()
    return x


class Backbone(nn.Module):
    """timm feature extractor returning ``[C2, C3, C4, C5]`` (NCHW), or, for a plain
    ViT (``self.plain``), its single stride-16 map ``[C4]``: the model then builds a
    :class:`SimpleFeaturePyramid` on the upsampler's side, so that the stop-gradient
    keeps its meaning (the pyramid is new decoder weight, not pretrained backbone).

    ``self.body`` is the timm ``features_only`` model; its ``state_dict`` is what
    ``hfgd-lab pretrain`` saves and ``backbone_weights=`` loads. ``self.weights_source``
    says where the weights came from (``"random"``, ``"file:PATH"``,
    ``"packaged:PIP PACKAGE"`` or ``"timm hub"``).

    Raises:
        WeightsError: pretrained weights cannot be found (offline with no packaged copy),
            read, or do not fit.
    """

    def __init__(self, name: str, pretrained: bool = False, weights: str | None = None,
                 **kwargs):
        super().__init__()
        self.name = name
        self.weights_source = "random"
        hub = bool(pretrained) and name not in PACKAGED
        local = (kwargs.get("pretrained_cfg_overlay") or {}).get("file")  # timm's local file
        if hub and hub_offline() and not local:
            raise WeightsError(
                f"pretrained weights for {name!r}: HF_HUB_OFFLINE is set and no offline copy "
                f"is packaged for it (offline weights: {', '.join(PACKAGED)}); give "
                "backbone_weights=PATH or go online")
        try:
            self.body = timm.create_model(name, pretrained=hub, features_only=True, **kwargs)
        except (OSError, RuntimeError, ValueError) as e:
            if not hub:
                raise
            raise WeightsError(f"cannot fetch timm's pretrained weights for {name!r} "
                               f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                               f"offline weights exist for: {', '.join(PACKAGED)}") from None
        if hub:
            self.weights_source = f"file:{local}" if local else "timm hub"
        reductions = list(self.body.feature_info.reduction())
        channels = list(self.body.feature_info.channels())
        self.plain = len(set(reductions)) == 1
        if self.plain:  # plain ViT: one resolution, build a pyramid
            if "dynamic_img_size" not in kwargs:
                try:
                    self.body = timm.create_model(name, pretrained=pretrained, features_only=True,
                                                  dynamic_img_size=True, out_indices=(-1,),
                                                  **kwargs)
                except TypeError:
                    pass
            reductions = list(self.body.feature_info.reduction())
            channels = list(self.body.feature_info.channels())
            if reductions[-1] != 16:
                raise ValueError(f"backbone {name!r}: plain model at stride {reductions[-1]}, "
                                 "the simple feature pyramid needs stride 16")
            self.take = [len(reductions) - 1]
            self.channels = (channels[-1],)
        else:
            self.take = []
            for s in STRIDES:
                idx = [i for i, r in enumerate(reductions) if r == s]
                if not idx:
                    raise ValueError(f"backbone {name!r} has no feature map at stride {s} "
                                     f"(it has {reductions}); HFGD needs strides {STRIDES}")
                self.take.append(idx[-1])
            self.channels = tuple(channels[i] for i in self.take)
        self.raw_channels = channels
        if weights:
            load_backbone_weights(self, weights)
        elif pretrained and name in PACKAGED:
            new, _ = match_state_dict(packaged_state_dict(name), self.body.state_dict(),
                                      f"backbone {name!r}", PACKAGED[name].pip)
            self.body.load_state_dict(new, strict=False)
            self.weights_source = f"packaged:{PACKAGED[name].pip}"

    def param_levels(self) -> list[tuple[str, nn.Parameter, int]]:
        """``(name, parameter, level)`` for every parameter, in order: level 0 is the stem
        (before the first feature stage), level i the i-th feature stage of timm's
        ``feature_info`` (a block between two feature outputs belongs to the later
        one). For layer-wise learning-rate decay."""
        def norm(name):
            return name.replace("_", ".").removeprefix("model.")
        named = list(self.body.named_parameters())
        modules = [norm(m) + "." for m in self.body.feature_info.module_name()]
        last = [max((i for i, (n, _) in enumerate(named) if norm(n).startswith(m)),
                    default=None) for m in modules]
        firsts = [i for i, (n, _) in enumerate(named)
                  if any(norm(n).startswith(m) for m in modules)]
        first = firsts[0] if firsts else len(named)
        bounds = [(j + 1, b) for j, b in enumerate(last) if b is not None]
        out = []
        for i, (name, p) in enumerate(named):
            level = 0 if i < first else next((lv for lv, b in bounds if i <= b), len(modules))
            out.append((f"body.{name}", p, level))
        return out

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.body(x)
        return [_to_nchw(feats[i], self.raw_channels[i]) for i in self.take]


# ---- weights ------------------------------------------------------------------------

def load_backbone_weights(backbone: Backbone, path: str | Path) -> None:
    """Load a local weights file into ``backbone.body``.

    Accepts the body's own naming (what ``hfgd-lab pretrain`` writes) or the full timm
    classification model's naming. Any missing or wrongly shaped tensor fails with a
    :class:`WeightsError` listing the missing and unexpected keys.
    """
    sd = read_state_dict(path)
    new, unexpected = match_state_dict(sd, backbone.state_dict(),
                                       f"backbone {backbone.name!r}", path)
    backbone.load_state_dict(new, strict=False)
    backbone.unused_weight_keys = unexpected  # e.g. a classification head; kept for reports
    backbone.weights_source = f"file:{path}"


def save_backbone_weights(backbone: Backbone, path: str | Path, metadata: dict | None = None):
    """Write the backbone's tensors as safetensors (what ``backbone_weights=`` loads)."""
    sd = {k: v.detach().cpu().clone().contiguous() for k, v in backbone.state_dict().items()}
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    save_file(sd, str(path), metadata=meta)
