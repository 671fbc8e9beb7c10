"""Backbone: any timm model as a 4-level pyramid C2..C5 at strides 4, 8, 16, 32.

Everything about the feature maps is read from what timm says, never guessed from
shapes:

- **which maps**: ``feature_info.reduction()`` gives each output's stride; C2..C5 are
  the last output at each of strides 4, 8, 16 and 32. A model whose outputs all share
  one stride (a plain ViT) gives that single map, which the model turns into a pyramid
  (:class:`SimpleFeaturePyramid`, ViTDet's). Any other set of strides fails with a
  :class:`BackboneError` naming the backbone and its strides.
- **layout**: the feature wrapper's ``output_fmt`` (``feature_info`` entries may carry
  their own); ``NHWC`` maps (Swin, SwinV2, ...) are permuted to NCHW because timm says
  they are channels-last. timm's own feature classes without the attribute
  (EfficientNet, MobileNetV3, HRNet, ...) are CNNs that return NCHW. Token sequences
  (``NLC``/``NCL``) are refused by name.
- **input size**: models that timm marks ``fixed_input_size`` are built with
  ``dynamic_img_size=True`` where they take it (ViT, DeiT, DINOv2, Swin, SwinV2, EVA);
  where they do not but their only size-bound part is a strict ``PatchEmbed`` with a
  fixed token grid (CoaT: its position encodings are convolutional), the patch
  embedding is made to follow the input's grid. A model that still cannot run at an
  input size fails in ``forward`` with a :class:`BackboneError` naming it and the size.
- **plain ViTs at a stride other than 16** (patch-14 DINOv2-style ``vit_*_patch14_*``,
  patch-8 models): the padded image (a multiple of 32 inside :class:`HFGD`) is resized
  by ``patch / 16`` before the ViT, so that its token grid *is* the stride-16 grid of
  the image: a 224-px input becomes 196 px for a patch-14 ViT, 14 x 14 tokens = 224/16.
  No feature map is resampled, the pyramid sees exact stride-16 cells, and any input
  size works (the model pads it to a multiple of 32 first, so ``H * patch / 16`` is a
  multiple of the patch). The price is that the ViT sees the image at ``patch/16``
  scale (7/8 for patch 14), a mild version of the resize DINOv2 users apply anyway.

Pretrained weights come from a local file, a packaged offline copy or timm's hub, in
that order (:mod:`.weights`); nothing is ever unpickled.
"""
from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from timm.layers import PatchEmbed
from torch import nn

from .weights import (PACKAGED, WeightsError, hub_offline, match_state_dict,
                      packaged_state_dict, read_state_dict)

__all__ = ["STRIDES", "PLAIN_STRIDE", "BackboneError", "Backbone", "SimpleFeaturePyramid",
           "feature_layouts", "load_backbone_weights", "save_backbone_weights"]

STRIDES = (4, 8, 16, 32)
PLAIN_STRIDE = 16          # the stride a plain ViT's map is brought to (ViTDet's C4)
LAYOUTS = ("NCHW", "NHWC")


class BackboneError(ValueError):
    """A timm model cannot serve as an HFGD backbone (its strides, its output layout, or
    an input size it cannot take); the message names the backbone."""


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's pyramid: one stride-16 map (B, C, h, w) to maps at strides 4, 8, 16, 32
    with C/4, C/2, C, C channels (transposed convolutions up, max-pool down; Li et al.,
    "Exploring Plain Vision Transformer Backbones for Object Detection", 2022)."""

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


def feature_layouts(body: nn.Module) -> list[str]:
    """The memory layout of each output of a timm ``features_only`` model, as timm
    declares it: a ``feature_info`` entry's ``output_fmt`` if it has one, else the
    wrapper's ``output_fmt`` (``FeatureListNet``, ``FeatureGetterNet``, ...), else
    ``"NCHW"`` (timm's own CNN feature classes, which have no such attribute).
    Returns strings such as ``"NCHW"``, ``"NHWC"``, ``"NLC"``."""
    default = getattr(body, "output_fmt", None) or "NCHW"
    out = []
    for info in body.feature_info.info:
        fmt = info.get("output_fmt", default) or default
        out.append(str(getattr(fmt, "value", fmt)))
    return out


def _follow_input_grid(module: PatchEmbed, args):
    # forward pre-hook: a strict PatchEmbed's token grid (read by e.g. CoaT's blocks)
    # becomes the grid of the input at hand
    h, w = args[0].shape[-2:]
    ph, pw = module.patch_size
    module.img_size = (h, w)
    module.grid_size = (h // ph, w // pw)
    module.num_patches = module.grid_size[0] * module.grid_size[1]


def _create(name: str, hub: bool, kwargs: dict) -> tuple[nn.Module, list[str]]:
    """``timm.create_model(name, features_only=True)`` that takes any input size where
    the model allows it; returns the model and notes on what was changed."""
    notes = []
    cfg = timm.get_pretrained_cfg(name)
    fixed = bool(getattr(cfg, "fixed_input_size", False))
    dynamic = fixed and "dynamic_img_size" not in kwargs

    def create(**extra):
        return timm.create_model(name, pretrained=hub, features_only=True, **extra, **kwargs)

    try:
        body = create(dynamic_img_size=True) if dynamic else create()
        if dynamic:
            notes.append("dynamic_img_size")
    except TypeError as e:
        if not dynamic:
            raise BackboneError(f"backbone {name!r}: timm.create_model refused its keyword "
                                f"arguments {sorted(kwargs)}: {e}") from None
        try:
            body = create()
        except TypeError as e2:
            raise BackboneError(f"backbone {name!r}: timm.create_model refused its keyword "
                                f"arguments {sorted(kwargs)}: {e2}") from None
    if fixed and "dynamic_img_size" not in notes:
        strict = [m for m in body.modules()
                  if isinstance(m, PatchEmbed) and m.strict_img_size and m.img_size]
        for m in strict:
            m.strict_img_size = False
            m.register_forward_pre_hook(_follow_input_grid)
        if strict:
            notes.append("patch grid follows the input")
    return body, notes


class Backbone(nn.Module):
    """timm feature extractor returning ``[C2, C3, C4, C5]`` (NCHW, strides 4..32), or,
    for a plain ViT (``self.plain``), its single map at stride 16 ``[C4]``: the model
    then builds a :class:`SimpleFeaturePyramid` on the upsampler's side, so that the
    stop-gradient keeps its meaning (the pyramid is new decoder weight, not pretrained
    backbone). See the module docstring for how timm's ``feature_info`` and
    ``output_fmt`` decide the maps, and how stride-14 ViTs reach stride 16.

    Inputs: normalised images (B, 3, H, W) with H, W multiples of 32 (``HFGD`` pads),
    or of 16 for a plain ViT.

    Attributes:
        body: the timm ``features_only`` model; its ``state_dict`` is what
            ``hfgd-lab pretrain`` saves and ``backbone_weights=`` loads.
        take: indices of C2..C5 (plain: of the one map) among ``body``'s outputs.
        channels: channels of the returned maps. layouts: timm's layout of each output.
        plain_stride: a plain model's stride (16, 14, 8, ...), else None.
        weights_source: ``"random"``, ``"file:PATH"``, ``"packaged:PIP PACKAGE"`` or
            ``"timm hub"``. size_notes: how the model was made to take any input size.

    Raises:
        WeightsError: pretrained weights cannot be found (offline with no packaged copy),
            read, or do not fit.
        BackboneError: timm's strides cannot give C2..C5, an output is not a 2-D map
            (NCHW / NHWC), or timm refuses ``kwargs``.
    """

    def __init__(self, name: str, pretrained: bool = False, weights: str | None = None,
                 **kwargs):
        super().__init__()
        self.name = name
        self.weights_source = "random"
        hub = bool(pretrained) and name not in PACKAGED
        if hub and hub_offline():
            raise WeightsError(
                f"pretrained weights for {name!r}: HF_HUB_OFFLINE is set and no offline copy "
                f"is packaged for it (offline weights: {', '.join(PACKAGED)}); give "
                "backbone_weights=PATH or go online")
        try:
            self.body, self.size_notes = _create(name, hub, kwargs)
            reductions = list(self.body.feature_info.reduction())
            self.plain = len(set(reductions)) == 1
            if self.plain and "out_indices" not in kwargs and len(reductions) > 1:
                # plain ViT: only its last block's map is used
                self.body, self.size_notes = _create(name, hub, {**kwargs, "out_indices": (-1,)})
        except (OSError, RuntimeError, ValueError) as e:
            if not hub or isinstance(e, BackboneError):
                raise
            raise WeightsError(f"cannot fetch timm's pretrained weights for {name!r} "
                               f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                               f"offline weights exist for: {', '.join(PACKAGED)}") from None
        if hub:
            self.weights_source = "timm hub"
        self.fixed_input_size = bool(getattr(timm.get_pretrained_cfg(name),
                                             "fixed_input_size", False))
        reductions = list(self.body.feature_info.reduction())
        channels = list(self.body.feature_info.channels())
        self.layouts = feature_layouts(self.body)
        if self.plain:
            self.take = [len(reductions) - 1]
            self.plain_stride = int(reductions[-1])
        else:
            self.plain_stride = None
            self.take = []
            for s in STRIDES:
                idx = [i for i, r in enumerate(reductions) if r == s]
                if not idx:
                    raise BackboneError(
                        f"backbone {name!r}: timm's feature_info gives strides {reductions}, "
                        f"with no map at stride {s}; HFGD needs one map at each of strides "
                        f"{STRIDES} (C2..C5), or a plain ViT with a single stride")
                self.take.append(idx[-1])
        bad = [(i, self.layouts[i]) for i in self.take if self.layouts[i] not in LAYOUTS]
        if bad:
            raise BackboneError(f"backbone {name!r}: timm gives its feature map(s) {bad} "
                                f"in layout {bad[0][1]!r}; HFGD needs 2-D maps ({LAYOUTS})")
        self.nhwc = [self.layouts[i] == "NHWC" for i in self.take]
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
        """Images (B, 3, H, W) -> ``[C2, C3, C4, C5]`` (B, C_i, H/s, W/s), or ``[C4]``
        at stride 16 for a plain model. Raises :class:`BackboneError` when the timm model
        cannot take this input size."""
        h, w = x.shape[-2:]
        if self.plain_stride is not None and self.plain_stride != PLAIN_STRIDE:
            # the token grid of a patch-p ViT on the image resized by p/16 is the image's
            # stride-16 grid (see the module docstring)
            size = (-(-h // PLAIN_STRIDE) * self.plain_stride,
                    -(-w // PLAIN_STRIDE) * self.plain_stride)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        try:
            feats = self.body(x)
        except torch.OutOfMemoryError:
            raise
        except (AssertionError, RuntimeError) as e:  # timm's size checks, shape clashes
            first = (str(e).strip().splitlines() or [""])[0][:200] or "a size check failed"
            raise BackboneError(
                f"backbone {self.name!r} failed at input size {tuple(x.shape[-2:])} "
                f"({type(e).__name__}: {first}); timm marks it fixed_input_size="
                f"{self.fixed_input_size}. If it takes only some sizes: feed the size it was "
                "built for (backbone_kwargs img_size), or pad inputs to a multiple of its "
                "window grid (HFGDConfig.pad_multiple)") from None
        out = [feats[i].permute(0, 3, 1, 2).contiguous() if nhwc else feats[i]
               for i, nhwc in zip(self.take, self.nhwc)]
        if not torch.compiler.is_compiling():  # (export traces shapes symbolically)
            self._check_sizes(out, h, w)
        return out

    def _check_sizes(self, feats: list[torch.Tensor], h: int, w: int) -> None:
        # timm's nominal strides must be the maps' real ones: ceil(H / s) x ceil(W / s)
        strides = (PLAIN_STRIDE,) if self.plain else STRIDES
        for lvl, (f, s, c) in enumerate(zip(feats, strides, self.channels)):
            want = (c, -(-h // s), -(-w // s))
            if tuple(f.shape[1:]) != want:
                raise BackboneError(
                    f"backbone {self.name!r}: its map at stride {s} (timm's feature_info) is "
                    f"{tuple(f.shape[1:])} (C, H, W) for input size {(h, w)}, expected "
                    f"{want}; this model rounds its grid differently: pad inputs to a "
                    "larger multiple (HFGDConfig.pad_multiple, e.g. 64)")
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
