"""Stop-gradient probes: which loss reaches which module, and how far features drift.

``gradient_norms`` measures, with ``torch.autograd.grad``, the gradient of each loss
(``loss_high``, ``loss_up``) in each module group separately; with every stop-gradient
on, ``loss_up`` leaves exactly zero in the backbone, the CAE and the class tokens.
``linear_cka`` (Kornblith et al. 2019) compares two feature sets; ``backbone_cka``
applies it stage by stage to two models' backbones on the same images (e.g. a
fine-tuned model against its pretrained state).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["module_groups", "GradientNorms", "gradient_norms", "linear_cka",
           "stage_features", "backbone_cka", "LEVELS"]

LEVELS = ("C2", "C3", "C4", "C5")


# ---- module groups ------------------------------------------------------------------

def _backbone_groups(backbone) -> "OrderedDict[str, list]":
    """Backbone parameters split into stem and stages C2..C5 (a plain ViT: one group)."""
    groups: OrderedDict = OrderedDict()
    params = list(backbone.body.named_parameters())
    if getattr(backbone, "plain", False):
        groups["backbone"] = [p for _, p in params]
        return groups
    names = backbone.body.feature_info.module_name()
    levels = {}
    for lvl, i in zip(LEVELS, backbone.take):
        levels[names[i]] = lvl
        levels[names[i].replace(".", "_")] = lvl
    tags = []
    for n, _ in params:
        tag = None
        for prefix, lvl in levels.items():
            if n == prefix or n.startswith(prefix + "."):
                tag = lvl
                break
        tags.append(tag)
    # untagged parameters belong to the stage they feed (the next tagged one); before
    # the first stage they are the stem, after the last they belong to it
    out = list(tags)
    nxt = None
    for i in range(len(tags) - 1, -1, -1):
        if tags[i] is not None:
            nxt = tags[i]
        elif nxt is not None:
            out[i] = nxt
    first = next((i for i, t in enumerate(tags) if t is not None), len(tags))
    last = None
    for i, t in enumerate(out):
        if i < first:
            out[i] = "stem"
        elif t is None:
            out[i] = last
        last = out[i]
    for key in ("stem",) + LEVELS:
        ps = [p for (_, p), t in zip(params, out) if t == key]
        if ps:
            groups[f"backbone.{key}"] = ps
    return groups


def module_groups(model, detail: bool = False) -> "OrderedDict[str, list]":
    """Named groups of an HFGD model's parameters, in data-flow order.

    ``backbone.stem``, ``backbone.C2`` .. ``backbone.C5``, then every other top-level
    part (``neck``, ``high_proj``, ``cae``, ``upsampler``) and the parameters
    ``class_tokens`` (and ``logit_scale`` for a cosine classifier). ``detail=True``
    splits the CAE into its blocks and the upsampler into its children.
    """
    groups = _backbone_groups(model.backbone)
    seen = {id(p) for ps in groups.values() for p in ps}
    for name, child in model.named_children():
        if name == "backbone":
            continue
        subs = [(name, child)]
        if detail and name in ("cae", "upsampler"):
            subs = []
            for cn, cc in child.named_children():
                if name == "cae" and cn == "blocks":
                    subs += [(f"cae.block{i}", b) for i, b in enumerate(cc)]
                else:
                    subs.append((f"{name}.{cn}", cc))
        for sn, sm in subs:
            ps = [p for p in sm.parameters() if id(p) not in seen]
            if ps:
                groups[sn] = ps
                seen.update(id(p) for p in ps)
    for name, p in model.named_parameters(recurse=False):
        if id(p) not in seen:
            groups[name] = [p]
            seen.add(id(p))
    rest = [p for p in model.parameters() if id(p) not in seen]
    if rest:
        groups["other"] = rest
    return groups


# ---- gradient norms -----------------------------------------------------------------

@dataclass
class GradientNorms:
    """L2 norm of each loss's gradient in each module group.

    Attributes:
        modules: group names (rows); losses: loss names (columns).
        norms: (len(modules), len(losses)) float64; exactly 0.0 where no gradient
            reaches a group (``None`` from autograd or all zeros).
        num_params: parameters per group.
        loss_values: value of each loss on the batch.
    """

    modules: list
    losses: list
    norms: np.ndarray
    num_params: list
    loss_values: dict

    def get(self, module: str, loss: str) -> float:
        return float(self.norms[self.modules.index(module), self.losses.index(loss)])

    def as_dict(self) -> dict:
        """``{module: {loss: norm}}``."""
        return {m: {l: float(self.norms[i, j]) for j, l in enumerate(self.losses)}
                for i, m in enumerate(self.modules)}

    def rows(self) -> list:
        """Tidy rows ``{"module", "loss", "grad_norm", "num_params"}`` (for a table)."""
        return [{"module": m, "loss": l, "grad_norm": float(self.norms[i, j]),
                 "num_params": self.num_params[i]}
                for i, m in enumerate(self.modules) for j, l in enumerate(self.losses)]


def gradient_norms(model, images: torch.Tensor, target: torch.Tensor,
                   losses: Sequence[str] = ("loss_high", "loss_up"),
                   groups: Optional[dict] = None, detail: bool = False,
                   train: Optional[bool] = None) -> GradientNorms:
    """Gradient norm reaching each module group from each loss separately, on one batch.

    One forward pass; ``torch.autograd.grad(loss, params, retain_graph=True,
    allow_unused=True)`` per loss, so no ``.grad`` is touched and nothing is stepped.

    Args:
        model: an HFGD model; images: (B, 3, H, W) normalised; target: (B, H, W) labels.
        losses: keys of ``model.loss(...)`` to probe.
        groups: ``{name: [params]}``, default :func:`module_groups` (``detail`` as there).
        train: put the model in train (True) or eval (False) mode for the probe and
            restore it after; None leaves the mode as it is (dropout and batch-norm
            statistics then behave as in that mode).
    """
    groups = groups if groups is not None else module_groups(model, detail)
    was_training = model.training
    if train is not None:
        model.train(train)
    try:
        dev = next(model.parameters()).device
        out = model(images.to(dev))
        values = model.loss(out, target.to(dev))
        names = list(groups)
        flat = [p for n in names for p in groups[n]]
        sizes = [len(groups[n]) for n in names]
        norms = np.zeros((len(names), len(losses)))
        for j, key in enumerate(losses):
            loss = values[key]
            if not loss.requires_grad:  # e.g. loss_high of the SemanticFPN baseline
                continue
            grads = torch.autograd.grad(loss, flat, retain_graph=True, allow_unused=True)
            k = 0
            for i, s in enumerate(sizes):
                sq = sum(float(g.detach().double().pow(2).sum()) for g in grads[k:k + s]
                         if g is not None)
                norms[i, j] = math.sqrt(sq)
                k += s
    finally:
        model.train(was_training)
    return GradientNorms(modules=names, losses=list(losses), norms=norms,
                         num_params=[sum(p.numel() for p in groups[n]) for n in names],
                         loss_values={k: float(v.detach()) for k, v in values.items()})


# ---- linear CKA ---------------------------------------------------------------------

def linear_cka(x, y) -> float:
    """Linear CKA (Kornblith et al. 2019) between two feature sets on the same samples.

    ``CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred
    ``Xc`` (n, d1), ``Yc`` (n, d2); computed in float64, through the (n, n) Gram
    matrices when n is smaller than the widths. 1 for identical features, invariant to
    orthogonal transforms and isotropic scaling; 0 when either set is constant.
    """
    def prep(a):
        a = a.detach().cpu().double().numpy() if isinstance(a, torch.Tensor) else \
            np.asarray(a, dtype=np.float64)
        a = a.reshape(len(a), -1)
        return a - a.mean(0, keepdims=True)

    x, y = prep(x), prep(y)
    if len(x) != len(y):
        raise ValueError(f"CKA needs the same samples: {len(x)} vs {len(y)} rows")
    if len(x) < min(x.shape[1], y.shape[1]):
        kx, ky = x @ x.T, y @ y.T
        num = (kx * ky).sum()
        den = np.linalg.norm(kx) * np.linalg.norm(ky)
    else:
        num = np.linalg.norm(y.T @ x) ** 2
        den = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(num / den) if den > 0 else 0.0


def _backbone_of(model):
    if hasattr(model, "body") and hasattr(model, "take"):
        return model, 32
    bb = model.backbone
    return bb, getattr(getattr(model, "cfg", None), "pad_multiple", 32)


def stage_features(model, images: torch.Tensor, max_samples: Optional[int] = 4096,
                   random_state: int = 0) -> "OrderedDict[str, np.ndarray]":
    """Backbone features per stage as pixel rows: ``{stage: (n, C)}``.

    ``model`` is an HFGD model or its ``Backbone``. The images are padded like the
    model pads them, features are cropped to the cells that touch the images, every
    pixel of every image is a sample, and at most ``max_samples`` rows per stage are
    kept (the same rows for any model, given the same images and ``random_state``).
    """
    backbone, multiple = _backbone_of(model)
    h, w = images.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            dev = next(backbone.parameters()).device
            x = F.pad(images, (0, pw, 0, ph)) if ph or pw else images
            feats = backbone(x.to(dev))
    finally:
        backbone.train(was_training)
    names = LEVELS if len(feats) == 4 else ("C4",) if len(feats) == 1 else \
        tuple(f"S{i}" for i in range(len(feats)))
    out = OrderedDict()
    for i, (name, f) in enumerate(zip(names, feats)):
        stride = round(x.shape[-1] / f.shape[-1])
        f = f[..., :math.ceil(h / stride), :math.ceil(w / stride)]
        rows = f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]).double().cpu().numpy()
        if max_samples and len(rows) > max_samples:
            rng = np.random.default_rng(random_state + i)
            rows = rows[np.sort(rng.choice(len(rows), max_samples, replace=False))]
        out[name] = rows
    return out


def backbone_cka(model_a, model_b, images: torch.Tensor, max_samples: Optional[int] = 4096,
                 random_state: int = 0) -> "OrderedDict[str, float]":
    """Linear CKA per backbone stage between two models (or backbones) on the same
    images: ``{"C2": .., "C3": .., "C4": .., "C5": ..}``. With a model and its pretrained
    backbone this measures the drift fine-tuning caused (1.0: no change up to rotation
    and scale)."""
    fa = stage_features(model_a, images, max_samples, random_state)
    fb = stage_features(model_b, images, max_samples, random_state)
    if list(fa) != list(fb):
        raise ValueError(f"the backbones have different stages: {list(fa)} vs {list(fb)}")
    return OrderedDict((k, linear_cka(fa[k], fb[k])) for k in fa)
