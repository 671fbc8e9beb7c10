"""Cross-entropy of low-resolution logits against full-resolution labels, fused.

HFGD's two losses compare stride-``s`` logits (B, K, h, w) with (B, H, W) labels: the
straightforward version resizes the logits to the labels' size and calls
``F.cross_entropy`` on the (B, K, H, W) result. On a CPU that was about half of a
training step (K = 150): ``log_softmax`` over the channel dimension of an NCHW tensor is
a strided reduction (on a channels-last one, what the class-token ``einsum`` returned,
it is preceded by a full copy), and the backward pass materialises a zero-filled one-hot
gradient, the log-softmax gradient and the resize gradient: five (B, K, H, W) tensors
in all, each freshly allocated, and first-touching a fresh 80 MB buffer (page faults)
costs about as much as the arithmetic done in it.

:func:`upsampled_cross_entropy` computes the same value and the same gradient without
materialising the resized logits:

* **On CPU**, in chunks of output rows that stay in cache. The bilinear resize is
  separable: the logits are first resized along the width only (a (B, h, W, K) map,
  1/s of the full size), then each chunk of full-resolution rows is the banded
  product ``A[rows, band] @ t[band]`` of PyTorch's own interpolation weights ``A``
  (two taps per row) with the few width-resized rows it needs. Per chunk, in reused
  buffers: ``log_softmax`` over the contiguous class dimension, the target's
  log-probability and the row's log-sum-exp are kept (two floats a pixel). The
  backward pass recomputes each chunk, forms ``w[y] / sum(w[y]) * (softmax -
  onehot(y))`` in place and accumulates ``A[rows, band]^T @ chunk`` into the
  width-resized gradient, which the resize's own backward kernel takes to (B, K, h, w).
* **On CUDA** (no page faults, launches matter), in one piece: the resize in
  channels-last memory so that ``log_softmax`` runs over the contiguous class
  dimension, and one autograd node whose backward forms the gradient above in one
  buffer from the saved log-probabilities.
* A crop of the resized map (a stride-``s`` grid covers ``ceil(H/s)*s >= H`` pixels) is
  replaced by padding the labels with ``ignore_index``: ignored pixels count for nothing,
  so the value is the same without copying the cropped logits.

The loss is the usual one (PyTorch's ``F.cross_entropy``, reduction ``"mean"``):
``sum_i w[y_i] * -log softmax(z_i)[y_i] / sum_i w[y_i]`` over pixels ``i`` whose label is
not ``ignore_index`` (``w`` = 1 without class weights; NaN when every pixel is ignored,
as in PyTorch); its gradient with respect to the resized logits ``z_i`` is
``w[y_i] / sum_j w[y_j] * (softmax(z_i) - onehot(y_i))`` (the textbook softmax
cross-entropy gradient). The interpolation weights follow PyTorch's
``upsample_bilinear2d`` (source index ``(dst + 0.5) * in / out - 0.5`` clamped at 0, or
``dst * (in - 1) / (out - 1)`` with ``align_corners``). ``tests/test_losses.py`` checks
values and gradients of both paths against ``F.cross_entropy(F.interpolate(...))``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

CHUNK_ELEMENTS = 1 << 18   # floats per CPU chunk (1 MB): rows of W*K logits that fit a cache


def interpolation_matrix(n_in: int, n_out: int, align_corners: bool,
                         device=None) -> tuple[torch.Tensor, list, list]:
    """PyTorch's 1-D bilinear resize as a matrix: ``(n_out, n_in)`` float32 ``A`` with
    ``resize(x) = A @ x`` along that axis (two taps a row), and for each output index
    its first and last source index (lists of ints), as ``upsample_bilinear2d``
    computes them."""
    dst = torch.arange(n_out, dtype=torch.float32, device=device)
    if align_corners:
        src = dst * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
    else:
        src = ((dst + 0.5) * (n_in / n_out) - 0.5).clamp(min=0)
    i0 = src.long().clamp(max=n_in - 1)
    i1 = torch.where(i0 < n_in - 1, i0 + 1, i0)
    l1 = src - i0
    a = torch.zeros(n_out, n_in, device=device)
    r = torch.arange(n_out, device=device)
    a.index_put_((r, i0), 1 - l1, accumulate=True)
    a.index_put_((r, i1), l1, accumulate=True)
    return a, i0.tolist(), i1.tolist()


def _bands(i0: list, i1: list, rows: int) -> list:
    """(first row, end row, first source row, end source row) of each chunk."""
    n = len(i0)
    return [(y0, min(n, y0 + rows), i0[y0], i1[min(n, y0 + rows) - 1] + 1)
            for y0 in range(0, n, rows)]


class _UpsampledCrossEntropy(torch.autograd.Function):
    """Bilinear resize + cross-entropy as one autograd node (see the module docstring)."""

    @staticmethod
    def forward(ctx, logits, target, size, weight, ignore_index, align_corners, chunked):
        b, k, h, w = logits.shape
        t = target.reshape(b, -1)
        valid = t != ignore_index
        safe = t.masked_fill(~valid, 0)
        wv = weight[safe] * valid if weight is not None else valid.float()
        denom = wv.sum()
        z = logits.float().contiguous(memory_format=torch.channels_last)
        ctx.geometry = (tuple(size), (b, k, h, w), align_corners, logits.dtype)
        ctx.chunked = chunked
        if chunked:
            nll, saved, ctx.bands = _chunked_forward(z, safe, size, align_corners)
        else:
            up = F.interpolate(z, size=size, mode="bilinear", align_corners=align_corners)
            # channels-last (B, K, H, W) is a contiguous (B, H, W, K): rows of K logits
            logp = torch.log_softmax(up.permute(0, 2, 3, 1).reshape(-1, k), dim=1)
            del up
            nll = -logp.gather(1, safe.reshape(-1, 1)).view(b, -1)
            saved = (logp,)
        ctx.save_for_backward(safe, wv, denom, *saved)
        return (nll * wv).sum() / denom

    @staticmethod
    def backward(ctx, grad):
        safe, wv, denom, *saved = ctx.saved_tensors
        size, in_shape, align_corners, dtype = ctx.geometry
        coef = wv * (grad / denom)                                  # (B, H*W)
        if ctx.chunked:
            gz = _chunked_backward(saved, ctx.bands, safe, coef, size, in_shape,
                                   align_corners)
        else:
            logp, = saved
            # a new buffer rather than exp_ on the saved tensor: the graph may be retained
            # (analysis.probes takes the gradient of each loss from one forward pass)
            g = torch.exp(logp)                                     # softmax, (B*H*W, K)
            g.mul_(coef.reshape(-1, 1))
            g.scatter_add_(1, safe.reshape(-1, 1), -coef.reshape(-1, 1))
            b, k = in_shape[:2]
            g = g.view(b, *size, k).permute(0, 3, 1, 2)            # channels-last view
            gz = torch.ops.aten.upsample_bilinear2d_backward(
                g, list(size), list(in_shape), align_corners, None, None)
        return gz.to(dtype), None, None, None, None, None, None


def _chunked_forward(z, safe, size, align_corners):
    """CPU forward: per-pixel -log p[target] (B, H*W) and what the backward needs."""
    b, k, h, _ = z.shape
    ho, wo = size
    # width only: (B, K, h, Wo) channels-last, i.e. a contiguous (B, h, Wo*K)
    tw = F.interpolate(z, size=(h, wo), mode="bilinear", align_corners=align_corners)
    tw = tw.permute(0, 2, 3, 1).reshape(b, h, wo * k)
    a, i0, i1 = interpolation_matrix(h, ho, align_corners)
    rows = max(1, CHUNK_ELEMENTS // (wo * k))
    bands = _bands(i0, i1, rows)
    nll = torch.empty(b, ho * wo)
    lse = torch.empty(b, ho * wo)
    up = torch.empty(rows, wo * k)
    logp = torch.empty(rows * wo, k)
    for bi in range(b):
        for y0, y1, lo, hi in bands:
            n = (y1 - y0) * wo
            u = torch.mm(a[y0:y1, lo:hi], tw[bi, lo:hi], out=up[: y1 - y0]).view(n, k)
            lp = torch.log_softmax(u, 1, out=logp[:n])
            px = slice(y0 * wo, y1 * wo)
            torch.sub(u[:, 0], lp[:, 0], out=lse[bi, px])     # log-sum-exp of each row
            torch.gather(lp, 1, safe[bi, px, None], out=nll[bi, px, None])
    return nll.neg_(), (tw, a, lse), bands


def _chunked_backward(saved, bands, safe, coef, size, in_shape, align_corners):
    """CPU backward: the gradient of sum(coef * nll) with respect to the logits."""
    tw, a, lse = saved
    b, k, h, w = in_shape
    ho, wo = size
    rows = bands[0][1] - bands[0][0]
    gw = torch.zeros(b, h, wo * k)            # gradient of the width-resized map
    up = torch.empty(rows, wo * k)
    for bi in range(b):
        for y0, y1, lo, hi in bands:
            n = (y1 - y0) * wo
            px = slice(y0 * wo, y1 * wo)
            band = a[y0:y1, lo:hi]
            u = torch.mm(band, tw[bi, lo:hi], out=up[: y1 - y0])
            g = u.view(n, k)
            g.sub_(lse[bi, px, None]).exp_().mul_(coef[bi, px, None])   # coef * softmax
            g.scatter_add_(1, safe[bi, px, None], coef[bi, px, None].neg())
            gw[bi, lo:hi].addmm_(band.t(), u)
    gw = gw.view(b, h, wo, k).permute(0, 3, 1, 2)                       # channels-last view
    return torch.ops.aten.upsample_bilinear2d_backward(gw, [h, wo], list(in_shape),
                                                       align_corners, None, None)


def upsampled_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                            size: tuple | None = None, weight: torch.Tensor | None = None,
                            ignore_index: int = 255, align_corners: bool = False,
                            chunked: bool | None = None) -> torch.Tensor:
    """Cross-entropy of ``logits`` bilinearly resized to ``size``, against ``target``.

    Equal (to float rounding, values and gradients) to::

        up = F.interpolate(logits, size=size, mode="bilinear", align_corners=align_corners)
        F.cross_entropy(up[..., :H, :W].float(), target, weight=weight,
                        ignore_index=ignore_index)

    without materialising ``up`` (on CPU; on CUDA one (B*H*W, K) log-probability
    buffer). The resize runs in float32 even for half-precision logits, where the line
    above would resize in half precision.

    Args:
        logits: (B, K, h, w) float tensor, any memory layout.
        target: (B, H, W) integer labels in ``[0, K)`` or ``ignore_index``.
        size: (Ho, Wo) the logits are resized to, with ``Ho >= H`` and ``Wo >= W`` (the
            resized map is cropped to its top-left (H, W)); default (H, W).
        weight: optional (K,) per-class weights (as ``F.cross_entropy``'s ``weight``).
        ignore_index: label that counts for nothing.
        align_corners: as ``F.interpolate``'s.
        chunked: the CPU way (chunks of rows) or the CUDA way (one piece); default by
            the logits' device. Both give the same result; tests run both.

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
    if chunked is None:
        chunked = logits.device.type == "cpu"
    return _UpsampledCrossEntropy.apply(logits, target, size, weight, ignore_index,
                                        align_corners, bool(chunked))
