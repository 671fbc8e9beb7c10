"""The HFGD model, wired in one place: backbone -> HFG branch -> guided upsampler.

    image -> backbone -> C2..C5
    HFG branch:  C5 (+C4) -> projection -> CAE -> F_high -> classify(F_high, E)
    upsampler:   sg(C2..C5), sg(F_high) -> F_up -> classify(F_up, sg(E))

The HFG branch is the only path that trains the backbone and the class tokens
when every stop-gradient is on. ``arch="semantic_fpn"`` drops the HFG branch and
trains everything from the upsampler loss: the baseline in the same code path.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import LEVELS, HFGDConfig
from .backbone import Backbone, SimpleFeaturePyramid
from .cae import CAE
from .classifier import classify
from .losses import upsampled_cross_entropy
from .upsampler import PyramidUpsampler


@dataclass
class HFGDOutput:
    """What one forward pass returns. Spatial maps are cropped to the input's extent
    (``ceil(H / stride)``); ``attentions`` are over the padded stride-32 grid
    ``grid_high`` (row-major tokens)."""

    logits: torch.Tensor                       # (B, K, H/os, W/os) the model's answer
    logits_high: Optional[torch.Tensor]        # (B, K, H/32, W/32) HFG branch
    feat_high: Optional[torch.Tensor]          # (B, D, H/32, W/32) F_high
    feat_up: Optional[torch.Tensor]            # (B, D, H/os, W/os) F_up (None if folded)
    attentions: Optional[list] = None          # [(B, heads, N, N)] per CAE layer
    features: Optional[list] = None            # backbone [C2, C3, C4, C5] (padded)
    input_size: tuple = (0, 0)                 # (H, W) of the unpadded input
    output_stride: int = 4
    grid_high: tuple = (0, 0)                  # padded stride-32 grid (h, w)


def resize_logits(logits: torch.Tensor, input_size, stride: int,
                  size: tuple | None = None) -> torch.Tensor:
    """Upsample stride-``stride`` logits to the input's pixels.

    A cropped map of ``ceil(H/s)`` cells covers ``ceil(H/s)*s >= H`` pixels, so it is
    resized to that extent and cropped, keeping cells aligned with the pixels they
    came from. ``size`` (if different from the input size) resizes directly.
    """
    h, w = input_size
    if size is not None and tuple(size) != (h, w):
        return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
    full = (logits.shape[-2] * stride, logits.shape[-1] * stride)
    if full == (h, w):
        return F.interpolate(logits, size=full, mode="bilinear", align_corners=False)
    out = F.interpolate(logits, size=full, mode="bilinear", align_corners=False)
    return out[..., :h, :w]


class HFGD(nn.Module):
    """HFGD (or the SemanticFPN baseline) from an :class:`HFGDConfig`."""

    def __init__(self, cfg: HFGDConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = Backbone(cfg.backbone, pretrained=cfg.pretrained,
                                 weights=cfg.backbone_weights, **cfg.backbone_kwargs)
        self.neck = None
        if self.backbone.plain:  # plain ViT: a simple feature pyramid on the decoder side
            self.neck = SimpleFeaturePyramid(self.backbone.channels[0])
        ch = self.neck.channels if self.neck is not None else self.backbone.channels
        d = cfg.embed_dim
        self.is_hfgd = cfg.arch == "hfgd"
        if self.is_hfgd:
            cin = ch[3] + (ch[2] if cfg.hfg_input == "c4c5" else 0)
            self.high_proj = nn.Conv2d(cin, d, 1)
            self.cae = CAE(d, cfg.cae_depth, cfg.cae_heads, cfg.cae_mlp_ratio,
                           cfg.cae_dropout, cfg.pos_encoding)
        else:
            self.high_proj = None
            self.cae = None
        self.upsampler = PyramidUpsampler(ch, d, cfg.decoder_channels, cfg.output_stride,
                                          guided=self.is_hfgd, stem_channels=cfg.stem_channels,
                                          dropout=cfg.dropout, refine_channels=cfg.refine_channels)
        self.class_tokens = nn.Parameter(torch.randn(cfg.num_classes, d) * 0.02)
        self.logit_scale = (nn.Parameter(torch.tensor(math.log(10.0)))
                            if cfg.classifier == "cosine" else None)
        w = cfg.class_weights
        self.register_buffer("class_weights",
                             torch.tensor(w, dtype=torch.float32) if w is not None else None,
                             persistent=False)
        self._sg_levels = {LEVELS.index(lv) for lv in cfg.sg_levels}

    def train(self, mode: bool = True) -> "HFGD":
        """Train/eval mode; with ``cfg.norm_eval`` the backbone's BatchNorm layers stay in
        eval mode (running statistics frozen, affine weights still trained), as
        mmsegmentation's ``norm_eval`` does for pretrained BN backbones at small batch."""
        super().train(mode)
        if mode and self.cfg.norm_eval:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    # ------------------------------------------------------------------------------
    def _pad(self, images: torch.Tensor) -> torch.Tensor:
        m = self.cfg.pad_multiple
        h, w = images.shape[-2:]
        ph, pw = (-h) % m, (-w) % m
        # exporting (ONNX): always pad, so the graph holds no branch on the input's size
        return F.pad(images, (0, pw, 0, ph)) if torch.compiler.is_exporting() or ph or pw \
            else images

    def forward(self, images: torch.Tensor, return_attention: bool = False,
                return_features: bool = False, return_feat_up: bool = True) -> HFGDOutput:
        """One pass through both branches.

        ``return_feat_up=False`` (dot classifier only) folds the upsampler's final 1x1
        projection into the classifier, ``<Wx + b, E> = <x, W^T E> + <b, E>``: the same
        logits without materialising the D-wide F_up at output stride (``feat_up`` is
        then None); ``predict`` uses it.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        cfg = self.cfg
        h, w = images.shape[-2:]
        x = self._pad(images)
        feats = self.backbone(x)
        if self.neck is not None:
            # Plain ViT: the neck is decoder weight, fed a detached C4 under sg, and it
            # must still learn from loss_up; the HFG branch keeps C4/C5's gradient path.
            c4 = feats[-1]
            up_in = self.neck(c4.detach() if cfg.sg_backbone_on else c4)
            feats = [up_in[0], up_in[1], c4, F.max_pool2d(c4, 2)]
        elif cfg.sg_backbone_on:
            stop = self._sg_levels
            up_in = [f.detach() if i in stop else f for i, f in enumerate(feats)]
        else:
            up_in = feats

        feat_high = logits_high = None
        attentions = []
        if self.is_hfgd:
            high_in = feats[3]
            if cfg.hfg_input == "c4c5":
                high_in = torch.cat([F.adaptive_avg_pool2d(feats[2], feats[3].shape[-2:]),
                                     high_in], 1)
            feat_high, attentions = self.cae(self.high_proj(high_in), return_attention)
            logits_high = classify(feat_high, self.class_tokens, cfg.classifier, self.logit_scale)

        guide = None
        if feat_high is not None:
            guide = feat_high.detach() if cfg.sg_high_on else feat_high
        tokens, scale = self.class_tokens, self.logit_scale
        if cfg.sg_tokens_on:
            tokens = tokens.detach()
            scale = scale.detach() if scale is not None else None
        if return_feat_up or cfg.classifier != "dot":
            feat_up = self.upsampler(up_in, guide, image=x)
            logits = classify(feat_up, tokens, cfg.classifier, scale)
        else:
            proj = self.upsampler.proj
            weight = tokens @ proj.weight.flatten(1)              # (K, C)
            logits = F.conv2d(self.upsampler.decode(up_in, guide, image=x),
                              weight[:, :, None, None], tokens @ proj.bias)
            feat_up = None

        os_, hh, ww = cfg.output_stride, math.ceil(h / 32), math.ceil(w / 32)
        crop_up = (..., slice(0, math.ceil(h / os_)), slice(0, math.ceil(w / os_)))
        crop_hi = (..., slice(0, hh), slice(0, ww))
        return HFGDOutput(
            logits=logits[crop_up],
            logits_high=logits_high[crop_hi] if logits_high is not None else None,
            feat_high=feat_high[crop_hi] if feat_high is not None else None,
            feat_up=feat_up[crop_up] if feat_up is not None else None,
            attentions=attentions if return_attention else None,
            features=feats if return_features else None,
            input_size=(h, w), output_stride=os_,
            grid_high=tuple(feats[3].shape[-2:]))

    # ------------------------------------------------------------------------------
    def loss(self, out: HFGDOutput, target: torch.Tensor) -> dict:
        """Cross-entropy of both branches at the target's resolution.

        Each branch's logits are resized bilinearly to the target (as
        :func:`resize_logits`) inside :func:`~.losses.upsampled_cross_entropy`, which
        gives ``F.cross_entropy`` of the resized logits without materialising them.
        ``target``: (B, H, W) or (B, 1, H, W) integer labels.

        Returns ``{"loss", "loss_high", "loss_up"}`` (0-dim float32 tensors); pixels
        labelled ``cfg.ignore_index`` count for neither. Raises ``ValueError`` for a label
        outside ``[0, K)`` that is not ``ignore_index``.
        """
        cfg = self.cfg
        if target.dim() == 4 and target.shape[1] == 1:
            target = target[:, 0]
        size = tuple(target.shape[-2:])

        def ce(logits, stride):
            # = F.cross_entropy(resize_logits(logits, input_size, stride, size).float(), ...)
            # without materialising the resized logits (losses.py; tests/test_losses.py)
            full = size
            if size == tuple(out.input_size):  # resize_logits: the grid's extent, cropped
                full = (logits.shape[-2] * stride, logits.shape[-1] * stride)
            return upsampled_cross_entropy(logits, target, full, self.class_weights,
                                           cfg.ignore_index)

        loss_up = ce(out.logits, out.output_stride)
        if out.logits_high is not None:
            loss_high = ce(out.logits_high, 32)
        else:
            loss_high = loss_up.new_zeros(())
        loss = cfg.loss_high_weight * loss_high + cfg.loss_up_weight * loss_up
        return {"loss": loss, "loss_high": loss_high, "loss_up": loss_up}

    @torch.no_grad()
    def predict(self, images: torch.Tensor, branch: str = "up") -> torch.Tensor:
        """Full-resolution logits (B, K, H, W) from the upsampler (or ``branch="high"``)."""
        out = self(images, return_feat_up=False)
        if branch == "high":
            if out.logits_high is None:
                raise ValueError("this model has no HFG branch (arch='semantic_fpn')")
            return resize_logits(out.logits_high, out.input_size, 32)
        return resize_logits(out.logits, out.input_size, out.output_stride)

    def param_groups(self) -> dict:
        """Parameters split as {'backbone': [...], 'head': [...]} for per-group lr."""
        bb = [p for p in self.backbone.parameters() if p.requires_grad]
        ids = {id(p) for p in bb}
        return {"backbone": bb,
                "head": [p for p in self.parameters() if p.requires_grad and id(p) not in ids]}


def build_model(cfg: HFGDConfig | dict | None = None, **overrides) -> HFGD:
    """Build an HFGD model from a config, a dict, or keyword arguments."""
    if cfg is None:
        cfg = HFGDConfig(**overrides)
    elif isinstance(cfg, dict):
        cfg = HFGDConfig.from_dict({**cfg, **overrides})
    elif overrides:
        cfg = cfg.replace(**overrides)
    return HFGD(cfg)
