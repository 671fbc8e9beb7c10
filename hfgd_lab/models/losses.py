"""Cross-entropy of low-resolution logits against full-resolution labels, fused.

HFGD's two losses compare stride-``s`` logits (B, K, h, w) with (B, H, W) labels: the
straightforward version resizes the logits to the labels' size and calls
``F.cross_entropy`` on the (B, K, H, W) result. On a CPU that is about half of a training
step (K = 150): ``log_softmax`` over the channel dimension of an NCHW tensor is a
strided reduction, on a channels-last tensor (what the class-token ``einsum`` returns)
it is preceded by a full copy, and the backward pass materialises a zero-filled
one-hot gradient, the log-softmax gradient and the resize gradient as three more
(B, K, H, W) tensors.

:func:`upsampled_cross_entropy` computes the same value and the same gradient with less
work:

* the logits are resized in channels-last memory, so the resized map is a contiguous
  (B*H*W, K) matrix and ``log_softmax`` runs over its last, contiguous dimension;
* one autograd node does the rest: the backward pass computes
  ``w[y] / sum(w[y]) * (softmax - onehot(y))`` in one buffer, from the saved
  log-probabilities (``exp``, one scatter, one scale), and hands it to the resize's
  backward kernel;
* a crop of the resized map (a stride-``s`` grid covers ``ceil(H/s)*s >= H`` pixels) is
  replaced by padding the labels with ``ignore_index``: ignored pixels count for nothing,
  so the value is the same without copying the cropped logits.

The loss is the usual one (PyTorch's ``F.cross_entropy``, reduction ``"mean"``):
``sum_i w[y_i] * -log softmax(z_i)[y_i] / sum_i w[y_i]`` over pixels ``i`` whose label is
not ``ignore_index`` (``w`` = 1 without class weights; NaN when every pixel is ignored,
as in PyTorch); its gradient with respect to the resized logits ``z_i`` is
``w[y_i] / sum_j w[y_j] * (softmax(z_i) - onehot(y_i))``. ``tests/test_losses.py`` checks
value and gradients against ``F.cross_entropy(F.interpolate(...))``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class _UpsampledCrossEntropy(torch.autograd.Function):
    """Bilinear resize + cross-entropy as one autograd node (see the module docstring)."""

    @staticmethod
    def forward(ctx, logits, target, size, weight, ignore_index, align_corners):
        b, k, h, w = logits.shape
        z = logits.float().contiguous(memory_format=torch.channels_last)
        up = F.interpolate(z, size=size, mode="bilinear", align_corners=align_corners)
        # channels-last (B, K, H, W) is a contiguous (B, H, W, K): rows of K logits
        logp = torch.log_softmax(up.permute(0, 2, 3, 1).reshape(-1, k), dim=1)
        del up, z
        t = target.reshape(-1)
        valid = t != ignore_index
        safe = t.masked_fill(~valid, 0)
        wv = weight[safe] * valid if weight is not None else valid.to(logp.dtype)
        denom = wv.sum()
        picked = logp.gather(1, safe[:, None])[:, 0]
        loss = -(picked * wv).sum() / denom
        ctx.save_for_backward(logp, safe, wv, denom)
        ctx.geometry = (tuple(size), (b, k, h, w), align_corners, logits.dtype)
        return loss

    @staticmethod
    def backward(ctx, grad):
        logp, safe, wv, denom = ctx.saved_tensors
        size, in_shape, align_corners, dtype = ctx.geometry
        # A new buffer rather than exp_ on the saved tensor: the graph may be retained
        # (e.g. analysis.probes takes the gradient of each loss from one forward pass).
        g = torch.exp(logp)                                    # softmax, (B*H*W, K)
        g.scatter_add_(1, safe[:, None], g.new_full((g.shape[0], 1), -1.0))
        g.mul_((wv * (grad / denom))[:, None])
        b, k = in_shape[:2]
        g = g.view(b, *size, k).permute(0, 3, 1, 2)           # (B, K, H, W), channels-last
        gz = torch.ops.aten.upsample_bilinear2d_backward(g, list(size), list(in_shape),
                                                         align_corners, None, None)
        return gz.to(dtype), None, None, None, None, None


def upsampled_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                            size: tuple | None = None, weight: torch.Tensor | None = None,
                            ignore_index: int = 255, align_corners: bool = False
                            ) -> torch.Tensor:
    """Cross-entropy of ``logits`` bilinearly resized to ``size``, against ``target``.

    Equal (to float rounding, values and gradients) to::

        up = F.interpolate(logits, size=size, mode="bilinear", align_corners=align_corners)
        F.cross_entropy(up[..., :H, :W].float(), target, weight=weight,
                        ignore_index=ignore_index)

    without materialising ``up`` beyond one (B*H*W, K) log-probability buffer (the
    resize runs in float32 even for half-precision logits, where the line above would
    resize in half precision).

    Args:
        logits: (B, K, h, w) float tensor, any memory layout.
        target: (B, H, W) integer labels in ``[0, K)`` or ``ignore_index``.
        size: (Ho, Wo) the logits are resized to, with ``Ho >= H`` and ``Wo >= W`` (the
            resized map is cropped to its top-left (H, W)); default (H, W).
        weight: optional (K,) per-class weights (as ``F.cross_entropy``'s ``weight``).
        ignore_index: label that counts for nothing.
        align_corners: as ``F.interpolate``'s.

    Returns:
        A 0-dim float32 tensor: the weighted mean over non-ignored pixels (NaN when every
        pixel is ignored, as ``F.cross_entropy``).

    Raises:
        ValueError: shapes that do not fit, or a label outside ``[0, K)`` that is not
            ``ignore_index`` (one line naming it).
    """
    if logits.dim() != 4 or target.dim() != 3 or logits.shape[0] != target.shape[0]:
        raise ValueError(f"upsampled_cross_entropy: logits must be (B, K, h, w) and target "
                         f"(B, H, W) with the same B, got {tuple(logits.shape)} and "
                         f"{tuple(target.shape)}")
    k = logits.shape[1]
    th, tw = target.shape[-2:]
    size = (th, tw) if size is None else (int(size[0]), int(size[1]))
    if size[0] < th or size[1] < tw:
        raise ValueError(f"upsampled_cross_entropy: size={size} is smaller than the target "
                         f"({th}, {tw})")
    if weight is not None and tuple(weight.shape) != (k,):
        raise ValueError(f"upsampled_cross_entropy: weight must have shape ({k},), got "
                         f"{tuple(weight.shape)}")
    target = target.long()
    bad = (target != ignore_index) & ((target < 0) | (target >= k))
    if bool(bad.any()):
        raise ValueError(f"upsampled_cross_entropy: target label {int(target[bad][0])} is "
                         f"outside [0, {k}) and is not ignore_index={ignore_index}")
    if (th, tw) != size:  # the crop, as ignored labels
        target = F.pad(target, (0, size[1] - tw, 0, size[0] - th), value=ignore_index)
    if weight is not None:
        weight = weight.to(device=logits.device, dtype=torch.float32)
    return _UpsampledCrossEntropy.apply(logits, target, size, weight, ignore_index,
                                        align_corners)
