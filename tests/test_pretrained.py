"""Real pretrained features offline: packaged ImageNet weights through pretrained=True, the
backbone's own normalisation, its ImageNet classifier on real photos, norm_eval, the
partial stop-gradient and layer-wise learning-rate decay."""
import numpy as np
import pytest
import torch

from hfgd_lab import HFGDConfig, build_model
from hfgd_lab.analysis import analyze_imagenet
from hfgd_lab.data import IMAGENET_MEAN, prepare_image
from hfgd_lab.data.samples import photo_samples
from hfgd_lab.engine import ExperimentConfig
from hfgd_lab.engine.train import build_optimizer
from hfgd_lab.models import PACKAGED, WeightsError, offline_backbones
from hfgd_lab.models.backbone import Backbone
from hfgd_lab.models.imagenet import imagenet_class_names, imagenet_classifier
from hfgd_lab.models.weights import read_state_dict

LITE0 = "tf_efficientnet_lite0"
SMALL = dict(num_classes=5, embed_dim=32, cae_heads=4, decoder_channels=32, cae_depth=1)


@pytest.fixture(scope="module")
def classifier():
    return imagenet_classifier(LITE0)


def test_packaged_weights_load_bit_identical_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # the network must never be tried for a name with a packaged source
    monkeypatch.setattr("timm.models._builder.load_pretrained",
                        lambda *a, **k: pytest.fail("timm tried to fetch weights"))
    model = build_model(HFGDConfig(backbone=LITE0, pretrained=True, **SMALL))
    assert model.backbone.weights_source == f"packaged:{PACKAGED[LITE0].pip}"
    raw = [v for k, v in read_state_dict(PACKAGED[LITE0].path()).items()
           if not k.endswith("num_batches_tracked")]
    mine = [v for k, v in model.backbone.body.state_dict().items()
            if not k.endswith("num_batches_tracked")]
    assert len(raw) == 247 and len(mine) == 240          # the features_only body: first 240
    assert all(torch.equal(a, b) for a, b in zip(raw, mine))
    rows = {r["backbone"]: r for r in offline_backbones()}
    assert rows[LITE0]["installed"] and rows[LITE0]["license"] == "Apache-2.0"


def test_offline_without_a_packaged_copy_fails_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="HF_HUB_OFFLINE is set and no offline copy.*"
                                           "tf_efficientnet_lite0"):
        Backbone("resnet18", pretrained=True)


def test_a_packaged_file_that_does_not_map_names_the_first_mismatch(monkeypatch, tmp_path):
    sd = {k: v for k, v in read_state_dict(PACKAGED[LITE0].path()).items()}
    first = next(iter(sd))
    sd[first] = torch.zeros(7, 3, 3, 3)
    torch.save(sd, tmp_path / "bad.pth")
    monkeypatch.setattr(type(PACKAGED[LITE0]), "path", lambda self: tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match=f"tensor '{first}' \\(7, 3, 3, 3\\) does not fit "
                                           "timm's 'conv_stem.weight'"):
        Backbone(LITE0, pretrained=True)


def test_normalisation_comes_from_the_backbone_and_old_cards_keep_imagenet():
    assert HFGDConfig(backbone=LITE0).normalization == ([0.5] * 3, [0.5] * 3)
    assert HFGDConfig(backbone="convnext_atto").normalization[0] == list(IMAGENET_MEAN)
    cfg = HFGDConfig(backbone=LITE0, image_mean=[0.4, 0.4, 0.4], image_std=[0.2] * 3)
    assert cfg.normalization == ([0.4] * 3, [0.2] * 3)
    # a changed backbone is not stuck with the old backbone's constants
    assert HFGDConfig(backbone="convnext_atto").replace(backbone=LITE0).normalization[0] == [0.5] * 3
    assert cfg.resolved().image_mean == [0.4] * 3


@pytest.mark.parametrize("photo, accepted", [
    ("chelsea", {"Egyptian cat", "tabby", "tiger cat"}),       # scikit-image
    ("coffee", {"espresso"}),                                  # scikit-image
    ("grace_hopper", {"military uniform"}),                    # matplotlib
])
def test_imagenet_classifier_names_real_photos_through_our_normalisation(classifier, photo,
                                                                         accepted):
    image = photo_samples([photo])[0].image
    mean, std = HFGDConfig(backbone=LITE0).normalization
    x, _ = prepare_image(image, mean, std, max_side=224)
    with torch.no_grad():
        top = classifier(x)[0].argmax().item()
    assert imagenet_class_names()[top] in accepted


def test_imagenet_view_maps_are_the_classifier(classifier):
    image = photo_samples(["chelsea"])[0].image
    v = analyze_imagenet(classifier, image, LITE0, max_side=224)
    assert v.names[0] in {"Egyptian cat", "tabby", "tiger cat"}
    h, w = v.image.shape[:2]
    assert v.cosine.shape == (5, h, w) and v.evidence.shape == (5, h, w)
    assert np.all(np.abs(v.cosine) <= 1 + 1e-5)
    # the mean of the cells' evidence is the classifier's own logit (linear head)
    mean, std = HFGDConfig(backbone=LITE0).normalization
    x, _ = prepare_image(image, mean, std, max_side=224)
    with torch.no_grad():
        logits = classifier(x)[0]
    np.testing.assert_allclose(v.grid_evidence.mean((1, 2)), logits[v.classes].numpy(),
                               rtol=1e-4, atol=1e-4)
    assert list(np.argsort(-v.probs)) == list(range(len(v.probs)))


def test_norm_eval_freezes_backbone_batchnorm_statistics():
    torch.manual_seed(0)
    model = build_model(HFGDConfig(backbone=LITE0, norm_eval=True, **SMALL))
    bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns
    before = [m.running_mean.clone() for m in bns]
    model.train()
    assert all(not m.training for m in bns) and model.upsampler.training
    out = model(torch.randn(2, 3, 64, 64))
    model.loss(out, torch.randint(0, 5, (2, 64, 64)))["loss"].backward()
    assert all(torch.equal(a, m.running_mean) for a, m in zip(before, bns))
    assert bns[0].weight.grad is not None          # the affine weights still learn
    free = build_model(HFGDConfig(backbone=LITE0, norm_eval=False, **SMALL)).train()
    assert all(m.training for m in free.backbone.modules()
               if isinstance(m, torch.nn.BatchNorm2d))


def test_partial_stop_gradient_protects_only_c5():
    torch.manual_seed(0)
    cfg = HFGDConfig(backbone="convnext_atto", stop_gradient=True, sg_levels=["C5"], **SMALL)
    assert cfg.variant == "hfgd_partial_sg"
    model = build_model(cfg)
    out = model(torch.randn(2, 3, 64, 64), return_features=True)
    model.zero_grad()
    model.loss(out, torch.randint(0, 5, (2, 64, 64)))["loss_up"].backward()
    g = {n: (p.grad.abs().sum().item() if p.grad is not None else 0.0)
         for n, p in model.named_parameters()}
    assert all(v == 0 for n, v in g.items() if n.startswith(("cae.", "class_tokens",
                                                             "high_proj.")))
    # C2..C4 still learn from the decoder loss; the last stage (only C5) does not
    assert any(v > 0 for n, v in g.items() if n.startswith("backbone.body.stages_1"))
    assert all(v == 0 for n, v in g.items() if n.startswith("backbone.body.stages_3"))


def test_layer_decay_gives_early_stages_smaller_learning_rates():
    exp = ExperimentConfig.from_dict({"model": dict(backbone=LITE0, **SMALL),
                                      "train": {"lr": 1e-3, "backbone_lr_mult": 0.1,
                                                "layer_decay": 0.5}})
    model = build_model(exp.model)
    groups = {g["name"]: g["lr"] for g in build_optimizer(model, exp.train).param_groups}
    assert groups["head"] == pytest.approx(1e-3)
    top = max(int(n.split("_L")[1].split("_")[0]) for n in groups if n.startswith("backbone_L"))
    assert groups[f"backbone_L{top}"] == pytest.approx(1e-4)
    assert groups["backbone_L0"] == pytest.approx(1e-4 * 0.5 ** top)
    n_params = sum(len(g["params"]) for g in build_optimizer(model, exp.train).param_groups)
    assert n_params == len([p for p in model.parameters() if p.requires_grad])
