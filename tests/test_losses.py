"""The fused loss (models/losses.py) equals the straightforward one: F.cross_entropy of the
bilinearly resized logits, in value and in gradient, for every case HFGD.loss meets."""
import pytest
import torch
import torch.nn.functional as F

from hfgd_lab import HFGDConfig, build_model
from hfgd_lab.models import losses
from hfgd_lab.models.hfgd import resize_logits
from hfgd_lab.models.losses import interpolation_matrix, upsampled_cross_entropy


def reference(logits, target, size, weight=None, ignore_index=255, align_corners=False):
    """The straightforward version: resize, crop, F.cross_entropy."""
    up = F.interpolate(logits, size=size, mode="bilinear", align_corners=align_corners)
    h, w = target.shape[-2:]
    return F.cross_entropy(up[..., :h, :w].float(), target.long(), weight=weight,
                           ignore_index=ignore_index)


def both(logits, target, size, **kw):
    """(value, grad) of the reference and of the fused loss on the same logits."""
    out = []
    for fn in (lambda *a, chunked=None, **k: reference(*a, **k), upsampled_cross_entropy):
        z = logits.detach().clone().requires_grad_()
        loss = fn(z, target, size, **kw)
        loss.backward()
        out.append((loss.detach(), z.grad))
    return out


CASES = [  # (B, K, h, w), target (H, W), resize size
    ((2, 150, 16, 16), (64, 64), (64, 64)),      # stride 4, exact
    ((2, 150, 2, 2), (64, 64), (64, 64)),        # stride 32
    ((1, 7, 5, 6), (35, 47), (40, 48)),          # a grid larger than the image: cropped
    ((3, 5, 9, 4), (50, 30), (50, 30)),          # labels at another size than 1/stride
    ((2, 3, 1, 1), (8, 8), (32, 32)),            # 1x1 map
    ((1, 4, 40, 36), (32, 30), (32, 30)),        # labels coarser than the logits
]


@pytest.mark.parametrize("shape,tsize,size", CASES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("chunked,chunk", [(True, 1), (True, 700), (True, None), (False, None)],
                         ids=["chunks-of-a-row", "chunks-of-rows", "chunks", "one-piece"])
def test_value_and_gradient_equal_the_straightforward_loss(shape, tsize, size, weighted,
                                                           chunked, chunk, monkeypatch):
    if chunk is not None:  # chunks of one row / of a few rows with a shorter last one
        monkeypatch.setattr(losses, "CHUNK_ELEMENTS", chunk * shape[1])
    g = torch.Generator().manual_seed(0)
    b, k = shape[:2]
    logits = 3 * torch.randn(*shape, generator=g)
    target = torch.randint(0, k, (b, *tsize), generator=g)
    target[0, : tsize[0] // 3] = 255                     # ignored band
    weight = torch.rand(k, generator=g) + 0.1 if weighted else None
    (v0, g0), (v1, g1) = both(logits, target, size, weight=weight, chunked=chunked)
    torch.testing.assert_close(v1, v0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g1, g0, rtol=1e-4, atol=1e-7)
    assert g1.abs().sum() > 0


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("chunked", [True, False])
def test_align_corners_and_other_ignore_index(align_corners, chunked):
    logits = torch.randn(2, 4, 6, 6)
    target = torch.randint(0, 4, (2, 24, 24))
    target[1, 5:9] = 0
    (v0, g0), (v1, g1) = both(logits, target, (24, 24), ignore_index=0,
                              align_corners=align_corners, chunked=chunked)
    torch.testing.assert_close(v1, v0)
    torch.testing.assert_close(g1, g0, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("chunked", [True, False])
def test_memory_layouts_and_half_precision(chunked):
    base = torch.randn(2, 10, 8, 8)
    target = torch.randint(0, 10, (2, 32, 32))
    ref, _ = both(base, target, (32, 32))[0]
    cl = base.contiguous(memory_format=torch.channels_last)   # what the einsum returns
    sliced = torch.randn(2, 10, 8, 12)[..., :8].copy_(base)   # a non-contiguous view
    for z in (cl, sliced):
        torch.testing.assert_close(upsampled_cross_entropy(z, target, (32, 32),
                                                           chunked=chunked), ref)
    # bf16 logits: the gradient comes back in bf16, the value is float32
    z = base.bfloat16().requires_grad_()
    loss = upsampled_cross_entropy(z, target, (32, 32), chunked=chunked)
    loss.backward()
    assert loss.dtype == torch.float32 and z.grad.dtype == torch.bfloat16
    torch.testing.assert_close(loss, ref, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("chunked", [True, False])
def test_all_ignored_is_nan_like_pytorch(chunked):
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    target = torch.full((1, 16, 16), 255)
    assert torch.isnan(reference(logits, target, (16, 16)))
    assert torch.isnan(upsampled_cross_entropy(logits, target, (16, 16), chunked=chunked))


@pytest.mark.parametrize("chunked", [True, False])
def test_retained_graph_gives_the_same_gradient_twice(chunked):
    # analysis.probes takes several gradients from one forward pass
    z = torch.randn(2, 5, 4, 4, requires_grad=True)
    loss = upsampled_cross_entropy(z, torch.randint(0, 5, (2, 16, 16)), (16, 16),
                                   chunked=chunked)
    g1, = torch.autograd.grad(loss, z, retain_graph=True)
    g2, = torch.autograd.grad(2 * loss, z)
    torch.testing.assert_close(g2, 2 * g1)


@pytest.mark.parametrize("n_in,n_out", [(8, 256), (64, 256), (5, 17), (40, 32), (1, 9),
                                        (7, 7)])
@pytest.mark.parametrize("align_corners", [False, True])
def test_interpolation_matrix_is_pytorchs_bilinear_resize(n_in, n_out, align_corners):
    x = torch.randn(1, 3, 2, n_in)
    a, i0, i1 = interpolation_matrix(n_in, n_out, align_corners)
    want = F.interpolate(x, size=(2, n_out), mode="bilinear", align_corners=align_corners)
    torch.testing.assert_close(x @ a.T, want)
    assert all(lo <= hi for lo, hi in zip(i0, i1)) and i0 == sorted(i0)
    nonzero = [set(r.nonzero().flatten().tolist()) for r in a]
    assert all(nz <= {lo, hi} for nz, lo, hi in zip(nonzero, i0, i1))


def test_bad_inputs_fail_in_one_line():
    z = torch.randn(1, 3, 4, 4)
    with pytest.raises(ValueError, match=r"target label 7 is outside \[0, 3\)"):
        upsampled_cross_entropy(z, torch.full((1, 16, 16), 7), (16, 16))
    with pytest.raises(ValueError, match="target label -1"):
        upsampled_cross_entropy(z, torch.full((1, 16, 16), -1), (16, 16))
    with pytest.raises(ValueError, match=r"size=\(8, 8\) is smaller than the target"):
        upsampled_cross_entropy(z, torch.zeros(1, 16, 16, dtype=torch.long), (8, 8))
    with pytest.raises(ValueError, match="logits must be"):
        upsampled_cross_entropy(z[0], torch.zeros(1, 16, 16, dtype=torch.long))
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\)"):
        upsampled_cross_entropy(z, torch.zeros(1, 16, 16, dtype=torch.long), (16, 16),
                                weight=torch.ones(4))


# ---- HFGD.loss as a whole: the old, straightforward loss, parameter by parameter ---------

SMALL = dict(num_classes=6, embed_dim=32, cae_heads=4, decoder_channels=32, cae_depth=1,
             dropout=0.0)


def straightforward_loss(model, out, target):
    """HFGD.loss as it was before the fused version (resize_logits + F.cross_entropy)."""
    cfg, size = model.cfg, tuple(target.shape[-2:])

    def ce(logits, stride):
        up = resize_logits(logits, out.input_size, stride, size)
        return F.cross_entropy(up.float(), target, weight=model.class_weights,
                               ignore_index=cfg.ignore_index)
    loss_up, loss_high = ce(out.logits, out.output_stride), ce(out.logits_high, 32)
    loss = cfg.loss_high_weight * loss_high + cfg.loss_up_weight * loss_up
    return {"loss": loss, "loss_high": loss_high, "loss_up": loss_up}


@pytest.mark.parametrize("output_stride,hw,label_hw", [
    (4, (64, 64), None), (2, (70, 45), None), (8, (64, 96), (32, 48))])
@pytest.mark.parametrize("stop_gradient", [True, False])
def test_hfgd_loss_equals_the_straightforward_loss(output_stride, hw, label_hw, stop_gradient):
    torch.manual_seed(0)
    model = build_model(HFGDConfig(**SMALL, output_stride=output_stride,
                                   stop_gradient=stop_gradient, loss_up_weight=0.7,
                                   class_weights=[1, 2, 0.5, 1, 1, 3]))
    x = torch.randn(2, 3, *hw)
    target = torch.randint(0, 6, (2, *(label_hw or hw)))
    target[1, :5] = 255
    params = [p for p in model.parameters() if p.requires_grad]
    results = []
    for fn in (straightforward_loss, lambda m, o, t: m.loss(o, t)):
        out = model(x)
        losses = fn(model, out, target)
        grads = torch.autograd.grad(losses["loss"], params, allow_unused=True)
        results.append((losses, grads))
    (l0, g0), (l1, g1) = results
    for key in ("loss", "loss_high", "loss_up"):
        torch.testing.assert_close(l1[key], l0[key], rtol=1e-5, atol=1e-6)
    for p, a, b in zip(params, g0, g1):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-6)
