"""Backbone pretraining on an endless stream of built-in scenes (our stand-in for ImageNet).

HFGD's claim is about *pretrained* high-level features, and nothing can be downloaded
here, so the project makes its own. The pretext tasks differ from the fine-tune task
(dense labels of the scene classes on a few images):

* ``presence``: which scene classes occur in the image, from pooled C5 -- image-level
  labels on a large stream, like ImageNet's; it asks C5 for context (a ring-textured
  blob is a boat only on water) without any dense class label;
* ``texture``: dense material segmentation from every level -- generic low-level
  features; the four context classes share one material, so it teaches no context.

The result is a ``backbone_weights`` file (safetensors) plus a JSON card with the
settings, the loss curve and the time taken.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..data.scenes import SCENE_CLASSES, TEXTURES, render_scene, scene_seed
from ..config import backbone_normalization
from ..data.preprocess import normalize_array
from ..models.backbone import Backbone, save_backbone_weights
from .train import seed_everything

OBJECTIVES = ("presence", "texture")


@dataclass
class PretrainConfig:
    backbone: str = "convnext_atto"
    backbone_kwargs: dict = field(default_factory=dict)
    objectives: list = field(default_factory=lambda: ["presence", "texture"])
    size: int = 192
    batch_size: int = 16
    iters: int = 1000
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_iters: int = 50
    variation: float = 1.0
    seed: int = 0
    num_workers: int = 1
    min_area: float = 0.002      # a class is "present" above this share of pixels

    def validate(self):
        bad = [o for o in self.objectives if o not in OBJECTIVES]
        if bad or not self.objectives:
            raise ValueError(f"pretrain objectives {self.objectives}: choose from {OBJECTIVES}")
        if self.iters < 1 or self.batch_size < 1 or self.size < 32:
            raise ValueError("pretrain: iters and batch_size must be >= 1, size >= 32")


class SceneStream(Dataset):
    """Scene ``i`` of the pretraining stream (split ``"pretrain"``, never used for
    fine-tuning or validation): image, texture map, class-presence vector."""

    def __init__(self, num: int, size: int, seed: int, variation: float, min_area: float,
                 mean, std):
        self.num, self.size, self.seed = num, size, seed
        self.variation, self.min_area = variation, min_area
        self.mean, self.std = mean, std   # the backbone's normalisation

    def __len__(self):
        return self.num

    def __getitem__(self, i):
        scene = render_scene(scene_seed(self.seed, "pretrain", i), self.size, self.variation)
        image, texture, mask = scene.image, scene.texture, scene.mask
        if i % 2:  # deterministic flip half of the time
            image, texture, mask = image[:, ::-1], texture[:, ::-1], mask[:, ::-1]
        x = normalize_array(np.ascontiguousarray(image), self.mean, self.std)
        area = np.bincount(mask.ravel(), minlength=len(SCENE_CLASSES)) / mask.size
        return {"image": torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))),
                "texture": torch.from_numpy(np.ascontiguousarray(texture)).long(),
                "presence": torch.from_numpy((area > self.min_area).astype(np.float32))}


class PretrainNet(nn.Module):
    """Backbone plus the pretext heads (thrown away after pretraining)."""

    def __init__(self, cfg: PretrainConfig):
        super().__init__()
        self.backbone = Backbone(cfg.backbone, **cfg.backbone_kwargs)
        ch = self.backbone.channels
        if self.backbone.plain:
            raise ValueError("pretrain supports hierarchical backbones (ConvNeXt, ResNet, ...)")
        self.texture_heads = nn.ModuleList(nn.Conv2d(c, len(TEXTURES), 1) for c in ch)
        self.presence_head = nn.Linear(2 * ch[3], len(SCENE_CLASSES))
        self.objectives = cfg.objectives

    def forward(self, x, batch):
        feats = self.backbone(x)
        losses = {}
        if "texture" in self.objectives:
            # scored at stride 4 (labels subsampled): 16x cheaper than full resolution
            target = batch["texture"][:, 2::4, 2::4]
            size = target.shape[-2:]
            losses["texture"] = sum(
                F.cross_entropy(F.interpolate(head(f), size=size, mode="bilinear",
                                              align_corners=False), target)
                for head, f in zip(self.texture_heads, feats)) / len(feats)
        if "presence" in self.objectives:
            c5 = feats[3]
            pooled = torch.cat([c5.mean((2, 3)), c5.amax((2, 3))], 1)
            logits = self.presence_head(pooled)
            losses["presence"] = F.binary_cross_entropy_with_logits(logits, batch["presence"])
            losses["presence_acc"] = ((logits > 0).float() == batch["presence"]).float().mean()
        losses["loss"] = sum(v for k, v in losses.items() if k in OBJECTIVES)
        return losses


def pretrain(cfg: PretrainConfig, out: str | Path, progress: bool = True) -> dict:
    """Pretrain and write ``out`` (.safetensors) and ``out`` with .json (the card)."""
    cfg.validate()
    out = Path(out)
    if out.suffix != ".safetensors":
        out = out.with_suffix(".safetensors")
    out.parent.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    net = PretrainNet(cfg)
    decay = [p for p in net.parameters() if p.ndim > 1]
    other = [p for p in net.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=cfg.lr)
    mean, std = backbone_normalization(cfg.backbone)
    stream = SceneStream(cfg.iters * cfg.batch_size, cfg.size, cfg.seed, cfg.variation,
                         cfg.min_area, mean, std)
    loader = DataLoader(stream, batch_size=cfg.batch_size, shuffle=False,
                        num_workers=cfg.num_workers, drop_last=True,
                        persistent_workers=cfg.num_workers > 0)
    curve, window = [], []
    start = time.perf_counter()
    bar = tqdm(loader, total=cfg.iters, desc="pretrain", disable=not progress, dynamic_ncols=True)
    net.train()
    for it, batch in enumerate(bar):
        warm = min(1.0, (it + 1) / max(1, cfg.warmup_iters))
        lr = cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * it / cfg.iters))
        for g in opt.param_groups:
            g["lr"] = lr
        losses = net(batch["image"], batch)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        window.append({k: v.item() for k, v in losses.items()})
        if (it + 1) % 25 == 0 or it + 1 == cfg.iters:
            rec = {"iter": it + 1, **{k: float(np.mean([w[k] for w in window])) for k in window[0]}}
            rec["img_per_s"] = (it + 1) * cfg.batch_size / (time.perf_counter() - start)
            curve.append(rec)
            window = []
            bar.set_postfix(loss=f"{rec['loss']:.3f}", img_s=f"{rec['img_per_s']:.1f}")
    seconds = time.perf_counter() - start
    card = {"kind": "hfgd-lab backbone weights", "config": asdict(cfg), "seconds": seconds,
            "image_mean": mean, "image_std": std,
            "images_seen": cfg.iters * cfg.batch_size, "curve": curve,
            "torch": torch.__version__, "threads": torch.get_num_threads()}
    save_backbone_weights(net.backbone, out, metadata={"backbone": cfg.backbone})
    out.with_suffix(".json").write_text(json.dumps(card, indent=1))
    return card
