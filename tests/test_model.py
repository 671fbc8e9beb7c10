"""The HFGD model: shapes, the stop-gradient guidance (proved with autograd), weights."""
import math

import pytest
import torch

from hfgd_lab import HFGDConfig, build_model
from hfgd_lab.models import WeightsError, save_backbone_weights

SMALL = dict(num_classes=5, embed_dim=32, cae_heads=4, decoder_channels=32, cae_depth=1)


@pytest.mark.parametrize("backbone", ["convnext_atto", "resnet18", "efficientnet_b0",
                                      "vit_tiny_patch16_224"])
@pytest.mark.parametrize("output_stride", [8, 4, 2])
def test_output_shapes_odd_sizes(backbone, output_stride):
    model = build_model(HFGDConfig(backbone=backbone, output_stride=output_stride, **SMALL))
    h, w = 97, 70
    out = model(torch.randn(2, 3, h, w), return_attention=True)
    hs, ws = math.ceil(h / output_stride), math.ceil(w / output_stride)
    assert out.logits.shape == (2, 5, hs, ws)
    assert out.feat_up.shape == (2, 32, hs, ws)
    assert out.logits_high.shape == (2, 5, math.ceil(h / 32), math.ceil(w / 32))
    assert out.feat_high.shape == (2, 32, math.ceil(h / 32), math.ceil(w / 32))
    n = out.grid_high[0] * out.grid_high[1]
    assert len(out.attentions) == 1 and out.attentions[0].shape == (2, 4, n, n)
    full = model.predict(torch.randn(1, 3, h, w))
    assert full.shape == (1, 5, h, w)


def test_attention_only_when_asked():
    model = build_model(HFGDConfig(**SMALL))
    assert model(torch.randn(1, 3, 64, 64)).attentions is None
    att = model(torch.randn(1, 3, 64, 64), return_attention=True).attentions[0]
    torch.testing.assert_close(att.sum(-1), torch.ones_like(att.sum(-1)))


def test_fast_and_explicit_attention_agree():
    model = build_model(HFGDConfig(**SMALL)).eval()
    x = torch.randn(1, 3, 96, 128)
    a = model(x)
    b = model(x, return_attention=True)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a.feat_high, b.feat_high, atol=1e-5, rtol=1e-4)


def test_padding_does_not_leak_into_cropped_size():
    model = build_model(HFGDConfig(**SMALL)).eval()
    out = model(torch.randn(1, 3, 33, 33))
    assert out.logits.shape[-2:] == (9, 9) and out.logits_high.shape[-2:] == (2, 2)


def test_cae_depth_zero_and_options():
    for kw in [dict(cae_depth=0), dict(pos_encoding="conv"), dict(pos_encoding="none"),
               dict(classifier="cosine"), dict(hfg_input="c4c5")]:
        model = build_model(HFGDConfig(**{**SMALL, **kw}))
        out = model(torch.randn(1, 3, 64, 64), return_attention=True)
        assert out.logits.shape == (1, 5, 16, 16)
        assert len(out.attentions) == (0 if kw.get("cae_depth") == 0 else 1)


# ---- the guidance, proved with autograd ---------------------------------------------

def _grads(model, loss):
    named = [(n, p) for n, p in model.named_parameters()]
    gs = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    return {n: (0.0 if g is None else g.abs().sum().item()) for (n, _), g in zip(named, gs)}


def _group(grads, prefix):
    vals = [v for n, v in grads.items() if n.startswith(prefix)]
    assert vals, prefix
    return vals


def _loss_up_grads(**kw):
    model = build_model(HFGDConfig(**{**SMALL, "dropout": 0.0, **kw}))
    x, y = torch.randn(2, 3, 64, 64), torch.randint(0, 5, (2, 64, 64))
    y[0, :8] = 255
    out = model(x)
    return _grads(model, model.loss(out, y)["loss_up"]), model


@pytest.mark.parametrize("backbone", ["convnext_atto", "resnet18", "vit_tiny_patch16_224"])
def test_all_stop_gradients_leave_exactly_zero(backbone):
    g, _ = _loss_up_grads(backbone=backbone, stop_gradient=True, output_stride=2)
    for prefix in ("backbone.", "cae.", "high_proj.", "class_tokens"):
        assert all(v == 0.0 for v in _group(g, prefix)), prefix
    ups = _group(g, "upsampler.") + (_group(g, "neck.") if backbone.startswith("vit") else [])
    # every decoder parameter learns (a plain ViT's neck and the max-pool-free levels too)
    assert sum(v > 0 for v in ups) == len(ups), "every upsampler parameter must learn"


def test_each_switch_lets_gradient_reach_what_it_protects():
    def nonzero(g, prefix):
        return any(v > 0 for v in _group(g, prefix))

    g, _ = _loss_up_grads(sg_backbone=False)  # backbone features unprotected
    assert nonzero(g, "backbone.")
    assert not nonzero(g, "cae.") and not nonzero(g, "class_tokens")

    g, _ = _loss_up_grads(sg_high=False)  # F_high unprotected: CAE and, through it, backbone
    assert nonzero(g, "cae.") and nonzero(g, "high_proj.") and nonzero(g, "backbone.")
    assert not nonzero(g, "class_tokens")

    g, _ = _loss_up_grads(sg_tokens=False)  # class tokens unprotected
    assert nonzero(g, "class_tokens")
    assert not nonzero(g, "backbone.") and not nonzero(g, "cae.")

    g, _ = _loss_up_grads(stop_gradient=False)  # all off
    for prefix in ("backbone.", "cae.", "high_proj.", "class_tokens"):
        assert nonzero(g, prefix), prefix


def test_high_loss_trains_backbone_cae_and_tokens_but_not_upsampler():
    model = build_model(HFGDConfig(**SMALL))
    out = model(torch.randn(2, 3, 64, 64))
    g = _grads(model, model.loss(out, torch.randint(0, 5, (2, 64, 64)))["loss_high"])
    assert all(v > 0 for v in _group(g, "class_tokens"))
    assert any(v > 0 for v in _group(g, "backbone.")) and any(v > 0 for v in _group(g, "cae."))
    assert all(v == 0 for v in _group(g, "upsampler."))


def test_semantic_fpn_baseline_trains_backbone_from_decoder_loss():
    model = build_model(HFGDConfig(**{**SMALL, "arch": "semantic_fpn", "stop_gradient": True}))
    assert model.cae is None and not model.cfg.sg_backbone_on  # sg is meaningless here
    out = model(torch.randn(2, 3, 64, 64))
    assert out.logits_high is None and out.feat_high is None
    losses = model.loss(out, torch.randint(0, 5, (2, 64, 64)))
    assert losses["loss_high"].item() == 0.0
    g = _grads(model, losses["loss"])
    assert any(v > 0 for v in _group(g, "backbone.")) and all(v > 0 for v in _group(g, "class_tokens"))


def test_loss_ignore_index_and_class_weights():
    model = build_model(HFGDConfig(**{**SMALL, "dropout": 0.0})).eval()
    x = torch.randn(1, 3, 64, 64)
    y = torch.randint(0, 5, (1, 64, 64))
    out = model(x)
    base = model.loss(out, y)
    y2 = y.clone()
    y2[:, :32] = 255
    half = model.loss(out, y2)
    assert not torch.isclose(base["loss_up"], half["loss_up"])
    all_ignored = model.loss(out, torch.full_like(y, 255))
    assert torch.isnan(all_ignored["loss_up"]) or all_ignored["loss_up"] == 0
    # weights: zero weight on every class but one equals the loss on that class alone
    w = [0.0, 1.0, 0.0, 0.0, 0.0]
    mw = build_model(HFGDConfig(**{**SMALL, "dropout": 0.0, "class_weights": w})).eval()
    mw.load_state_dict(model.state_dict())
    y3 = y.clone()
    y3[y3 != 1] = 255
    torch.testing.assert_close(mw.loss(mw(x), y)["loss_up"], model.loss(out, y3)["loss_up"])
    # upsampler loss weight
    m0 = build_model(HFGDConfig(**{**SMALL, "dropout": 0.0, "loss_up_weight": 0.0})).eval()
    m0.load_state_dict(model.state_dict())
    l0 = m0.loss(m0(x), y)
    torch.testing.assert_close(l0["loss"], l0["loss_high"])


# ---- local backbone weights ---------------------------------------------------------

def test_local_weights_load_to_identical_tensors(tmp_path):
    src = build_model(HFGDConfig(**SMALL))
    path = tmp_path / "bb.safetensors"
    save_backbone_weights(src.backbone, path)
    dst = build_model(HFGDConfig(**SMALL, backbone_weights=str(path)))
    for (n, a), (_, b) in zip(src.backbone.state_dict().items(), dst.backbone.state_dict().items()):
        assert torch.equal(a, b), n


def test_timm_classification_checkpoint_loads(tmp_path):
    import timm
    full = timm.create_model("resnet18", num_classes=10)
    torch.save(full.state_dict(), tmp_path / "resnet18.pth")
    model = build_model(HFGDConfig(**{**SMALL, "backbone": "resnet18"},
                                   backbone_weights=str(tmp_path / "resnet18.pth")))
    torch.testing.assert_close(model.backbone.body.conv1.weight, full.conv1.weight)
    torch.testing.assert_close(model.backbone.body.layer4[1].conv2.weight, full.layer4[1].conv2.weight)
    assert "fc.weight" in model.backbone.unused_weight_keys


def test_wrong_weights_fail_clearly(tmp_path):
    import timm
    torch.save(timm.create_model("resnet18").state_dict(), tmp_path / "r18.pth")
    with pytest.raises(WeightsError, match=r"missing keys: .*unexpected keys: .*conv1"):
        build_model(HFGDConfig(**SMALL, backbone_weights=str(tmp_path / "r18.pth")))
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="cannot read weights"):
        build_model(HFGDConfig(**SMALL, backbone_weights=str(tmp_path / "junk.safetensors")))
    with pytest.raises(WeightsError, match="not found"):
        build_model(HFGDConfig(**SMALL, backbone_weights=str(tmp_path / "nope.pth")))


def test_pickled_objects_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="cannot read weights"):
        build_model(HFGDConfig(**SMALL, backbone_weights=str(tmp_path / "evil.pth")))


def test_pretrained_by_name_goes_through_timm(tmp_path):
    # pretrained=True is timm's own loading path; offline, timm's pretrained_cfg_overlay
    # points it at a local file instead of the hub, so the real path is exercised here.
    import timm
    full = timm.create_model("resnet18")
    torch.save(full.state_dict(), tmp_path / "r18.pth")
    model = build_model(HFGDConfig(**{**SMALL, "backbone": "resnet18"}, pretrained=True,
                                   backbone_kwargs={"pretrained_cfg_overlay":
                                                    {"file": str(tmp_path / "r18.pth")}}))
    torch.testing.assert_close(model.backbone.body.layer3[0].conv1.weight,
                               full.layer3[0].conv1.weight)


@pytest.mark.parametrize("output_stride", [4, 2])
def test_folded_projection_gives_the_same_logits(output_stride):
    model = build_model(HFGDConfig(**SMALL, output_stride=output_stride)).eval()
    x = torch.randn(1, 3, 70, 90)
    full = model(x)
    folded = model(x, return_feat_up=False)
    assert folded.feat_up is None
    torch.testing.assert_close(folded.logits, full.logits, atol=1e-5, rtol=1e-4)
    cos = build_model(HFGDConfig(**SMALL, classifier="cosine")).eval()
    assert cos(x, return_feat_up=False).feat_up is not None  # cosine cannot be folded
