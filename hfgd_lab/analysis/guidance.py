"""HFG guidance vs the upsampler: F_high and F_up in one colour space, their per-pixel
agreement, and where the upsampler changed the high-level decision (and whether that
was right)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .grid import cells_to_image, resize_between_strides

__all__ = ["PCAColors", "SharedPCA", "pca_colors", "shared_pca", "FeatureAgreement",
           "feature_agreement", "DecisionChanges", "compare_predictions", "decision_changes",
           "UNCHANGED", "FIXED", "BROKE", "BOTH_WRONG", "IGNORED", "OUTCOME_NAMES"]

# codes of DecisionChanges.outcome
UNCHANGED, FIXED, BROKE, BOTH_WRONG, IGNORED = 0, 1, 2, 3, 255
OUTCOME_NAMES = {UNCHANGED: "unchanged", FIXED: "fixed", BROKE: "broke",
                 BOTH_WRONG: "changed, both wrong", IGNORED: "ignored"}


# ---- one PCA basis for several feature maps -----------------------------------------

@dataclass
class PCAColors:
    """A PCA basis fitted on several feature maps together, and their RGB pictures.

    Attributes:
        rgb: one (h_i, w_i, 3) float32 array in [0, 1] per input map.
        components: (3, D) principal axes; ``mean``: (D,).
        explained_variance_ratio: (3,).
        lo, hi: (3,) the projection range mapped onto [0, 1] (shared by all maps).
    """

    rgb: list
    components: np.ndarray
    mean: np.ndarray
    explained_variance_ratio: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    def colorize(self, feat) -> np.ndarray:
        """(D, h, w) features -> (h, w, 3) colours in this basis (same scaling)."""
        f = _as_rows(feat)
        p = (f - self.mean) @ self.components.T
        rgb = np.clip((p - self.lo) / np.maximum(self.hi - self.lo, 1e-12), 0, 1)
        return rgb.reshape(*np.shape(feat)[1:], -1).astype(np.float32)


def _as_rows(feat) -> np.ndarray:
    f = feat.detach().float().cpu().numpy() if isinstance(feat, torch.Tensor) else np.asarray(feat)
    return f.reshape(f.shape[0], -1).T.astype(np.float64)


def pca_colors(feature_maps: Sequence, weights: Optional[Sequence[float]] = None,
               n_components: int = 3, max_samples: int = 20000, random_state: int = 0,
               quantiles=(0.01, 0.99)) -> PCAColors:
    """Fit ONE sklearn PCA on several (D, h, w) maps and colour each with it.

    Args:
        feature_maps: (D, h_i, w_i) tensors or arrays with the same D.
        weights: relative weight of one cell of each map in the fit (e.g. the image
            area it covers, ``stride ** 2``); applied by repeating rows. None: equal.
        n_components: 3 gives RGB (fewer are padded with zeros).
        max_samples: cap on fitted rows (a deterministic subsample beyond it).
        random_state: seed of that subsample and of the PCA solver.
        quantiles: projection quantiles (over the fitted rows) mapped to 0 and 1.

    Identical feature vectors get identical colours, in any map.
    """
    from sklearn.decomposition import PCA

    rows = [_as_rows(f) for f in feature_maps]
    dims = {r.shape[1] for r in rows}
    if len(dims) != 1:
        raise ValueError(f"feature maps must share D, got {sorted(dims)}")
    if weights is None:
        weights = [1.0] * len(rows)
    wmin = min(weights)
    reps = [max(1, int(round(w / wmin))) for w in weights]
    index = np.concatenate([np.repeat(np.stack([np.full(len(r), i), np.arange(len(r))], 1),
                                      k, 0) for i, (r, k) in enumerate(zip(rows, reps))])
    rng = np.random.default_rng(random_state)
    if len(index) > max_samples:
        index = index[np.sort(rng.choice(len(index), max_samples, replace=False))]
    fit = np.concatenate([np.take(rows[i], index[index[:, 0] == i, 1], 0)
                          for i in range(len(rows))])
    nc = min(n_components, fit.shape[0], fit.shape[1])
    pca = PCA(n_components=nc, random_state=random_state).fit(fit)
    comps = np.zeros((n_components, fit.shape[1]))
    comps[:nc] = pca.components_
    evr = np.zeros(n_components)
    evr[:nc] = pca.explained_variance_ratio_
    proj = (fit - pca.mean_) @ comps.T
    lo = np.quantile(proj, quantiles[0], axis=0)
    hi = np.quantile(proj, quantiles[1], axis=0)
    out = PCAColors(rgb=[], components=comps, mean=pca.mean_, explained_variance_ratio=evr,
                    lo=lo, hi=hi)
    out.rgb = [out.colorize(f) for f in feature_maps]
    return out


@dataclass
class SharedPCA:
    """F_high and F_up in one colour space.

    Attributes:
        high, up: (h, w, 3) float32 in [0, 1] on each branch's own grid.
        high_image, up_image: the same at image size (each cell painted over its pixels).
        basis: the fitted :class:`PCAColors` (``basis.colorize(feat)`` for other maps).
    """

    high: np.ndarray
    up: np.ndarray
    high_image: np.ndarray
    up_image: np.ndarray
    basis: PCAColors

    @property
    def explained_variance_ratio(self) -> np.ndarray:
        return self.basis.explained_variance_ratio


def shared_pca(analysis, weighting: str = "area", max_samples: int = 20000,
               random_state: int = 0) -> SharedPCA:
    """F_high and F_up projected with one PCA basis fitted on both (3 components -> RGB).

    ``weighting="area"`` weights each cell by the image area it covers, so both branches
    count equally however fine F_up's grid is; ``"cells"`` counts every feature once.
    """
    analysis.require_high("the shared PCA")
    os_ = analysis.output_stride
    if weighting == "area":
        weights = [32.0 ** 2, float(os_) ** 2]
    elif weighting == "cells":
        weights = None
    else:
        raise ValueError(f"weighting must be 'area' or 'cells', got {weighting!r}")
    basis = pca_colors([analysis.feat_high, analysis.feat_up], weights,
                       max_samples=max_samples, random_state=random_state)
    high, up = basis.rgb
    size = analysis.input_size

    def img(rgb, stride):
        return cells_to_image(np.moveaxis(rgb, -1, 0), stride, size, "nearest").transpose(1, 2, 0)

    return SharedPCA(high=high, up=up, high_image=img(high, 32), up_image=img(up, os_),
                     basis=basis)


# ---- per-pixel agreement ------------------------------------------------------------

@dataclass
class FeatureAgreement:
    """How far F_up follows F_high.

    Attributes:
        cosine: (h, w) cosine between F_up and F_high upsampled (bilinear, aligned) to
            F_up's grid.
        cosine_image: (H, W) the same at image size.
        argmax_agree: (H, W) bool, ``pred_high == pred``.
        mean_cosine: mean of ``cosine``; agree_fraction: mean of ``argmax_agree``.
    """

    cosine: np.ndarray
    cosine_image: np.ndarray
    argmax_agree: np.ndarray
    mean_cosine: float
    agree_fraction: float


def feature_agreement(analysis) -> FeatureAgreement:
    """Per-pixel cosine agreement of F_up with upsampled F_high, and argmax agreement of
    ``logits_high`` with ``logits`` (both at image size)."""
    analysis.require_high("feature agreement")
    os_ = analysis.output_stride
    up = analysis.feat_up[None]
    high = resize_between_strides(analysis.feat_high[None], 32, os_, up.shape[-2:])
    cos = F.cosine_similarity(up, high, dim=1, eps=1e-8)[0].numpy().astype(np.float32)
    cos_img = cells_to_image(cos, os_, analysis.input_size, "bilinear")
    agree = analysis.pred_high == analysis.pred
    return FeatureAgreement(cosine=cos, cosine_image=cos_img, argmax_agree=agree,
                            mean_cosine=float(cos.mean()), agree_fraction=float(agree.mean()))


# ---- where the upsampler changed the decision ---------------------------------------

@dataclass
class DecisionChanges:
    """Where the upsampler's prediction differs from the HFG branch's.

    Attributes:
        changed: (H, W) bool, ``pred_up != pred_high``.
        outcome: (H, W) uint8 with ground truth, else None: ``UNCHANGED`` (0), ``FIXED``
            (1: high wrong, up right), ``BROKE`` (2: high right, up wrong), ``BOTH_WRONG``
            (3: changed, both wrong), ``IGNORED`` (255: label is ``ignore_index``).
        counts: pixels per case: pixels, changed, and with ground truth also fixed,
            broke, both_wrong, unchanged_right, unchanged_wrong, ignored.
        fraction_changed: changed / pixels.
    """

    changed: np.ndarray
    outcome: Optional[np.ndarray]
    counts: dict
    fraction_changed: float


def compare_predictions(pred_high, pred_up, target=None,
                        ignore_index: int = 255) -> DecisionChanges:
    """Compare two (H, W) label maps (HFG branch vs upsampler), optionally with truth."""
    ph, pu = np.asarray(pred_high), np.asarray(pred_up)
    if ph.shape != pu.shape:
        raise ValueError(f"prediction shapes differ: {ph.shape} vs {pu.shape}")
    changed = ph != pu
    counts = {"pixels": int(changed.size), "changed": int(changed.sum())}
    outcome = None
    if target is not None:
        t = np.asarray(target)
        if t.shape != ph.shape:
            raise ValueError(f"target shape {t.shape} does not match predictions {ph.shape}")
        valid = t != ignore_index
        hr, ur = (ph == t) & valid, (pu == t) & valid
        outcome = np.zeros(ph.shape, np.uint8)
        outcome[changed & ~hr & ur] = FIXED
        outcome[changed & hr & ~ur] = BROKE
        outcome[changed & ~hr & ~ur] = BOTH_WRONG
        outcome[~valid] = IGNORED
        counts.update(fixed=int((outcome == FIXED).sum()), broke=int((outcome == BROKE).sum()),
                      both_wrong=int((outcome == BOTH_WRONG).sum()),
                      unchanged_right=int((~changed & hr).sum()),
                      unchanged_wrong=int((~changed & valid & ~hr).sum()),
                      ignored=int((~valid).sum()))
    return DecisionChanges(changed=changed, outcome=outcome, counts=counts,
                           fraction_changed=counts["changed"] / max(counts["pixels"], 1))


def decision_changes(analysis, target=None, ignore_index: int = 255) -> DecisionChanges:
    """:func:`compare_predictions` of the analysis' two branches; ``target`` defaults
    to the one given to ``analyze_image`` (must be at the analysed size)."""
    analysis.require_high("decision changes")
    t = analysis.target if target is None else target
    return compare_predictions(analysis.pred_high, analysis.pred, t, ignore_index)
