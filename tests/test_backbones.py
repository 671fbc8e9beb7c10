"""Any timm backbone, really: a matrix over timm families (build, forward at an odd size,
loss and backward, the stop-gradient isolation proof, save and reload to identical logits),
and the rules that lay out feature maps from what timm says (``feature_info``,
``output_fmt``), never from shapes. Random weights at tiny widths: nothing is downloaded."""
import math

import pytest
import torch
from timm.layers import Format

from hfgd_lab import HFGDConfig, build_model
from hfgd_lab.engine.checkpoint import load_checkpoint, save_checkpoint
from hfgd_lab.models import backbone as backbone_module
from hfgd_lab.models.backbone import Backbone, BackboneError

SMALL = dict(num_classes=5, embed_dim=32, cae_heads=4, decoder_channels=32, cae_depth=1,
             dropout=0.0)
H, W = 97, 131          # odd on purpose: padding, cropping and ceil(H / stride) all show

# family -> (timm name, tiny-width kwargs, extra HFGDConfig fields, layout timm declares)
MATRIX = {
    "convnext": ("convnext_atto", dict(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128)), {}, "NCHW"),
    "resnet": ("resnet18", dict(layers=(1, 1, 1, 1)), {}, "NCHW"),
    "efficientnet_lite": ("tf_efficientnet_lite0", {}, {}, "NCHW"),
    "mobilenetv3": ("mobilenetv3_small_050", {}, {}, "NCHW"),
    "regnet": ("regnetx_002", {}, {}, "NCHW"),
    "swin_224": ("swin_tiny_patch4_window7_224",
                 dict(embed_dim=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8)), {}, "NHWC"),
    "swin_384": ("swin_base_patch4_window12_384",
                 dict(embed_dim=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8)), {}, "NHWC"),
    "vit_patch16": ("vit_tiny_patch16_224", dict(depth=3, embed_dim=64, num_heads=2), {}, "NCHW"),
    "vit_patch14": ("vit_small_patch14_dinov2", dict(depth=3, embed_dim=64, num_heads=2), {},
                    "NCHW"),
    "coat": ("coat_lite_tiny", dict(embed_dims=(16, 32, 64, 128), serial_depths=(1, 1, 1, 1)),
             {}, "NCHW"),
    # timm's MetaFormer builders fix depths/dims (a keyword clash): full poolformer_s12
    "metaformer": ("poolformer_s12", {}, {}, "NCHW"),
    "hrnet": ("hrnet_w18_small", dict(feature_location=""), {}, "NCHW"),
    "fastvit": ("fastvit_t8", dict(layers=(1, 1, 1, 1), embed_dims=(16, 32, 64, 128)), {},
                "NCHW"),
    "pvt_v2": ("pvt_v2_b0", dict(depths=(1, 1, 1, 1)), {}, "NCHW"),
    "efficientvit": ("efficientvit_b0", {}, {}, "NCHW"),
    # MobileViT rounds its stride-32 grid to even sizes: it needs inputs padded to 64
    "mobilevitv2": ("mobilevitv2_050", {}, dict(pad_multiple=64), "NCHW"),
}


def _grads(model, loss, retain=False):
    named = list(model.named_parameters())
    gs = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True,
                             retain_graph=retain)
    return {n: (0.0 if g is None else g.abs().sum().item()) for (n, _), g in zip(named, gs)}


def _group(grads, prefix):
    vals = [v for n, v in grads.items() if n.startswith(prefix)]
    assert vals, prefix
    return vals


@pytest.mark.parametrize("family", list(MATRIX))
def test_backbone_matrix(family, tmp_path):
    name, kwargs, extra, layout = MATRIX[family]
    torch.manual_seed(0)
    cfg = HFGDConfig(backbone=name, backbone_kwargs=kwargs, stop_gradient=True, **SMALL,
                     **extra)
    model = build_model(cfg)
    bb = model.backbone
    assert {bb.layouts[i] for i in bb.take} == {layout}           # what timm declares
    assert len(bb.channels) == (1 if bb.plain else 4)

    # forward at an odd size: every map at ceil(H / stride)
    x, y = torch.randn(1, 3, H, W), torch.randint(0, 5, (1, H, W))
    y[0, :7] = 255
    out = model(x, return_features=True)
    assert out.logits.shape == (1, 5, math.ceil(H / 4), math.ceil(W / 4))
    assert out.logits_high.shape == (1, 5, math.ceil(H / 32), math.ceil(W / 32))
    pad = cfg.pad_multiple
    ph, pw = math.ceil(H / pad) * pad, math.ceil(W / pad) * pad
    for f, s in zip(out.features, (4, 8, 16, 32)):
        assert f.shape[-2:] == (ph // s, pw // s)

    # the stop-gradient isolation proof: loss_up sends exactly zero gradient into the
    # backbone, the HFG branch (projection, CAE) and the class tokens; every upsampler
    # parameter (and a plain ViT's pyramid) learns from it
    losses = model.loss(out, y)
    assert all(torch.isfinite(v) for v in losses.values())
    g_up = _grads(model, losses["loss_up"], retain=True)
    for prefix in ("backbone.", "high_proj.", "cae.", "class_tokens"):
        assert all(v == 0.0 for v in _group(g_up, prefix)), prefix
    decoder = _group(g_up, "upsampler.") + (_group(g_up, "neck.") if bb.plain else [])
    assert all(v > 0 for v in decoder)
    # ... so the whole loss trains the backbone and the tokens through loss_high alone
    losses["loss"].backward()
    assert sum(p.grad.abs().sum().item() for p in bb.parameters() if p.grad is not None) > 0
    assert model.class_tokens.grad.abs().min() > 0

    # save through save_checkpoint, reload through load_checkpoint: identical logits
    model.eval()
    with torch.no_grad():
        before = model(x).logits
    save_checkpoint(tmp_path / "m", model, classes=[f"c{i}" for i in range(5)])
    again, card = load_checkpoint(tmp_path / "m")
    assert card["config"]["backbone"] == name
    with torch.no_grad():
        assert torch.equal(again(x).logits, before)


def test_coat_shares_tensors_and_still_saves(tmp_path):
    """CoaT's timm model shares modules between blocks (one tensor under two keys), which
    safetensors refuses to write as such; the checkpoint keeps both names and reloads."""
    name, kwargs, _, _ = MATRIX["coat"]
    model = build_model(HFGDConfig(backbone=name, backbone_kwargs=kwargs, **SMALL))
    by_ptr = {}
    for k, v in model.state_dict().items():
        by_ptr.setdefault(v.data_ptr(), []).append(k)
    shared = [ks for ks in by_ptr.values() if len(ks) > 1]
    assert shared, "coat_lite_tiny no longer shares tensors: pick another model for this test"
    save_checkpoint(tmp_path / "coat", model)
    again, _ = load_checkpoint(tmp_path / "coat")
    sd = again.state_dict()
    for keys in shared:
        assert all(torch.equal(sd[k], model.state_dict()[k]) for k in keys)
        assert len({sd[k].data_ptr() for k in keys}) == 1      # still one tensor


def test_nhwc_layout_comes_from_timm_not_from_shapes():
    """Swin's maps are channels-last; at this size C2 is (B, 32, 32, 32), whose height
    equals its channels -- the case the old shape guess left channels-last. The backbone
    permutes because timm's output_fmt says NHWC."""
    name, kwargs, _, _ = MATRIX["swin_384"]
    bb = Backbone(name, **kwargs).eval()
    assert str(getattr(bb.body.output_fmt, "value", bb.body.output_fmt)) == "NHWC"
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        raw, mine = bb.body(x), bb(x)
    assert raw[0].shape == (1, 32, 32, 32)                      # ambiguous by shape
    for r, m, c in zip(raw, mine, bb.channels):
        assert m.shape == (1, c, r.shape[1], r.shape[2])
        assert torch.equal(m, r.permute(0, 3, 1, 2))


def test_non_2d_layout_is_refused_by_name(monkeypatch):
    create = backbone_module._create

    def nlc(name, hub, kwargs):
        body, notes = create(name, hub, kwargs)
        body.output_fmt = Format("NLC")
        return body, notes
    monkeypatch.setattr(backbone_module, "_create", nlc)
    with pytest.raises(BackboneError, match="'convnext_atto'.*layout 'NLC'"):
        Backbone("convnext_atto", depths=(1, 1, 1, 1), dims=(16, 32, 64, 128))


def test_strides_that_cannot_give_c2_to_c5_fail_naming_the_backbone():
    with pytest.raises(BackboneError, match=r"'levit_128s'.*strides \[16, 32, 64\].*stride 4"):
        Backbone("levit_128s")


def test_a_map_not_at_its_declared_stride_fails_with_the_fix():
    """MobileViT-v2 rounds its stride-32 grid to even sizes: at 128x160 its C5 is 4x6, not
    4x5; the model says so (and pad_multiple=64, as in the matrix, fixes it)."""
    model = build_model(HFGDConfig(backbone="mobilevitv2_050", **SMALL))
    with pytest.raises(BackboneError, match=r"'mobilevitv2_050'.*stride 32.*\(256, 4, 6\).*"
                                            r"expected \(256, 4, 5\).*pad_multiple"):
        model(torch.randn(1, 3, H, W))


def test_a_size_the_model_cannot_take_names_backbone_and_size():
    bb = Backbone("maxvit_nano_rw_256", embed_dim=(32, 32, 64, 64), depths=(1, 1, 1, 1),
                  stem_width=16)
    with pytest.raises(BackboneError, match=r"'maxvit_nano_rw_256' failed at input size "
                                            r"\(128, 160\).*fixed_input_size=True"):
        bb(torch.randn(1, 3, 128, 160))


@pytest.mark.parametrize("family,patch", [("vit_patch16", 16), ("vit_patch14", 14)])
def test_plain_vits_reach_stride_16_exactly(family, patch):
    """A plain ViT's map is the stride-16 C4 at any (padded) size; a patch-14 ViT sees the
    image resized by 14/16, so its token grid is exactly the stride-16 grid."""
    name, kwargs, _, _ = MATRIX[family]
    bb = Backbone(name, **kwargs).eval()
    assert bb.plain and bb.plain_stride == patch and bb.size_notes == ["dynamic_img_size"]
    seen = []
    bb.body.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[-2:])))
    for hw in [(96, 128), (224, 160), (32, 32)]:
        with torch.no_grad():
            (c4,) = bb(torch.randn(1, 3, *hw))
        assert c4.shape[-2:] == (hw[0] // 16, hw[1] // 16)
        assert seen[-1] == (hw[0] // 16 * patch, hw[1] // 16 * patch)


def test_coat_patch_grid_follows_the_input():
    name, kwargs, _, _ = MATRIX["coat"]
    bb = Backbone(name, **kwargs).eval()
    assert bb.size_notes == ["patch grid follows the input"]
    for hw in [(64, 96), (224, 224), (160, 64)]:
        with torch.no_grad():
            feats = bb(torch.randn(1, 3, *hw))
        assert [f.shape[-2:] for f in feats] == [(hw[0] // s, hw[1] // s) for s in (4, 8, 16, 32)]


def test_bad_timm_kwargs_are_one_line_errors():
    with pytest.raises(BackboneError, match="'convnext_atto'.*keyword arguments \\['colour'\\]"):
        Backbone("convnext_atto", colour="blue")
