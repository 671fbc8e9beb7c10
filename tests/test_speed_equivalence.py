"""Performance changes in the models keep their behaviour: the faster form of each
computation equals the straightforward one in values and gradients (float tolerance).
The loss has its own file, tests/test_losses.py."""
import pytest
import torch
import torch.nn.functional as F

from hfgd_lab.models.classifier import classify


# ---- the class-token classifier (a 1x1 convolution) equals its einsum definition ----------

@pytest.mark.parametrize("mode", ["dot", "cosine"])
def test_classify_equals_the_einsum_in_values_and_gradients(mode):
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(2, 16, 5, 7, generator=g)[..., 1:]       # a non-contiguous view
    tokens, scale = torch.randn(6, 16, generator=g), torch.tensor(1.5)
    outs = []
    for fn in ("einsum", "classify"):
        f, e, s = (t.clone().requires_grad_() for t in (feat, tokens, scale))
        if fn == "einsum":
            if mode == "cosine":
                out = torch.einsum("bdhw,kd->bkhw", F.normalize(f, dim=1),
                                   F.normalize(e, dim=1)) * s.exp()
            else:
                out = torch.einsum("bdhw,kd->bkhw", f, e)
        else:
            out = classify(f, e, mode, s)
        out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
        outs.append((out.detach(), f.grad, e.grad, s.grad))
    for a, b in zip(*outs):
        if a is not None or b is not None:
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
