"""Backbone: any timm model as a 4-level pyramid C2..C5 at strides 4, 8, 16, 32.

Hierarchical models (ConvNeXt, ResNet, Swin, EfficientNet, ...) come straight from
timm's ``features_only``; plain ViTs (one stride-16 map) go through a simple feature
pyramid (ViTDet). Local weights load without unpickling: safetensors, or torch files
through ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import re
from pathlib import Path

import timm
import torch
from torch import nn

STRIDES = (4, 8, 16, 32)


class WeightsError(RuntimeError):
    """A weights file cannot be read or does not fit the backbone."""


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
    ``hfgd-lab pretrain`` saves and ``backbone_weights=`` loads.
    """

    def __init__(self, name: str, pretrained: bool = False, weights: str | None = None,
                 **kwargs):
        super().__init__()
        self.name = name
        self.body = timm.create_model(name, pretrained=pretrained, features_only=True, **kwargs)
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

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.body(x)
        return [_to_nchw(feats[i], self.raw_channels[i]) for i in self.take]


# ---- weights ------------------------------------------------------------------------

def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from a safetensors or torch file, never unpickling objects."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"backbone weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, pickled objects, wrong format
        raise WeightsError(f"cannot read weights from {path}: {type(e).__name__}: {e}") from None
    for key in ("state_dict", "model", "module"):  # common checkpoint wrappers
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{path} does not hold a flat name -> tensor state dict")
    return sd


def _norm(key: str) -> str:
    # features_only renames 'stages.0.x' to 'stages_0.x' and getter wrappers add
    # 'model.'; comparing with '_' and '.' unified maps either naming onto the body.
    key = re.sub(r"^(module|model|body|backbone)\.", "", key)
    return key.replace("_", ".")


def load_backbone_weights(backbone: Backbone, path: str | Path) -> None:
    """Load a local weights file into ``backbone.body``.

    Accepts the body's own naming (what ``hfgd-lab pretrain`` writes) or the full timm
    classification model's naming. Any missing or wrongly shaped tensor fails with a
    message listing the missing and unexpected keys.
    """
    sd = read_state_dict(path)
    target = backbone.state_dict()
    by_norm = {}
    for k, v in sd.items():
        by_norm.setdefault(_norm(k), (k, v))
    new, used, missing, bad_shape = {}, set(), [], []
    for k, v in target.items():
        hit = sd.get(k)
        src = k
        if hit is None:
            kk = k[len("body."):] if k.startswith("body.") else k
            src, hit = by_norm.get(_norm(kk), (None, None))
        if hit is None:
            missing.append(k)
        elif hit.shape != v.shape:
            bad_shape.append(f"{k}: file {tuple(hit.shape)} vs model {tuple(v.shape)}")
        else:
            new[k] = hit
            used.add(src)
    unexpected = [k for k in sd if k not in used]
    if missing or bad_shape:
        def show(xs):
            return ", ".join(xs[:12]) + (f", ... ({len(xs)} in all)" if len(xs) > 12 else "") \
                if xs else "none"
        raise WeightsError(
            f"backbone weights {path} do not fit backbone {backbone.name!r}: "
            f"missing keys: {show(missing)}; unexpected keys: {show(unexpected)}"
            + (f"; shape mismatches: {show(bad_shape)}" if bad_shape else ""))
    backbone.load_state_dict(new, strict=False)
    backbone.unused_weight_keys = unexpected  # e.g. a classification head; kept for reports


def save_backbone_weights(backbone: Backbone, path: str | Path, metadata: dict | None = None):
    """Write the backbone's tensors as safetensors (what ``backbone_weights=`` loads)."""
    from safetensors.torch import save_file
    sd = {k: v.detach().contiguous().cpu() for k, v in backbone.state_dict().items()}
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    save_file(sd, str(path), metadata=meta)
