"""HFGDConfig: YAML round trip and a clear message for every invalid value."""
import pytest

from hfgd_lab import ConfigError, HFGDConfig
from hfgd_lab.utils import apply_overrides


def test_yaml_round_trip(tmp_path):
    cfg = HFGDConfig(backbone="resnet18", num_classes=19, output_stride=8, cae_depth=0,
                     sg_tokens=False, class_weights=[1.0] * 19,
                     backbone_kwargs={"drop_path_rate": 0.1})
    path = tmp_path / "m.yaml"
    cfg.to_yaml(path)
    assert HFGDConfig.from_yaml(path) == cfg
    assert HFGDConfig.from_yaml(cfg.to_yaml()) == cfg
    assert HFGDConfig.from_yaml("model:\n  num_classes: 3\n").num_classes == 3


def test_resolved_switches():
    assert HFGDConfig().sg_backbone_on and HFGDConfig().sg_tokens_on
    c = HFGDConfig(stop_gradient=False, sg_tokens=True)
    assert not c.sg_backbone_on and not c.sg_high_on and c.sg_tokens_on
    assert not HFGDConfig(arch="semantic_fpn").sg_backbone_on


@pytest.mark.parametrize("kw, match", [
    (dict(backbone="no_such_net"), "backbone.*unknown timm model"),
    (dict(output_stride=3), "output_stride=3: must be one of"),
    (dict(cae_depth=-1), "cae_depth=-1"),
    (dict(num_classes=0), "num_classes=0"),
    (dict(arch="unet"), "arch='unet'"),
    (dict(embed_dim=30, cae_heads=8), "embed_dim=30: must be divisible by cae_heads"),
    (dict(pos_encoding="learned"), "pos_encoding"),
    (dict(classifier="mlp"), "classifier"),
    (dict(hfg_input="c3"), "hfg_input"),
    (dict(dropout=1.5), "dropout=1.5"),
    (dict(class_weights=[1.0, 2.0]), "class_weights.*num_classes"),
    (dict(pretrained=True, backbone_weights="x.pth"), "either pretrained"),
    (dict(pad_multiple=16), "pad_multiple"),
    (dict(loss_up_weight=-1), "loss_up_weight"),
    (dict(sg_high="yes"), "sg_high"),
])
def test_invalid_values_fail_with_message(kw, match):
    with pytest.raises(ConfigError, match=match):
        HFGDConfig(**kw)


def test_unknown_yaml_field_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown field.*outputstride"):
        HFGDConfig.from_yaml("outputstride: 4\n")
    with pytest.raises(ConfigError, match="not found"):
        HFGDConfig.from_yaml(tmp_path / "missing.yaml")


def test_overrides():
    cfg = apply_overrides(HFGDConfig(), ["output_stride=8", "backbone_kwargs.drop_path_rate=0.1"])
    assert cfg.output_stride == 8 and cfg.backbone_kwargs == {"drop_path_rate": 0.1}
    with pytest.raises(ValueError, match="unknown key 'nope'"):
        apply_overrides(HFGDConfig(), ["nope=1"])
    with pytest.raises(ConfigError, match="output_stride"):
        apply_overrides(HFGDConfig(), ["output_stride=16"])
