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


# ---- every value checked by its declared type, naming the key (issue 16) ----------------

import textwrap  # noqa: E402

from hfgd_lab.engine.experiment import ExperimentConfig  # noqa: E402


@pytest.mark.parametrize("yaml_text, match", [
    ("train:\n  lr: fast\n", r"train\.lr='fast': expected a number"),
    ("train:\n  iters: three hundred\n", r"train\.iters='three hundred': expected an integer"),
    ("data:\n  batch_size: [8]\n", r"data\.batch_size=\[8\]: expected an integer"),
    ("model: 5\n", r"model=5: expected a mapping of HFGDConfig fields"),
    ("model:\n  dropout: lots\n", r"HFGDConfig\.dropout='lots': expected a number"),
    ("data:\n  crop_size: [192, big]\n", r"data\.crop_size=\[192, 'big'\]: expected a list of"),
    ("eval:\n  flip: maybe\n", r"eval\.flip='maybe': expected true or false"),
    ("train: [1, 2]\n", r"train=\[1, 2\]: expected a mapping"),
    ("[1, 2]\n", r"must be a mapping of sections"),
    ("train:\n  lr: [1,\n", r"not valid YAML"),
])
def test_experiment_yaml_values_fail_with_one_line_naming_the_key(tmp_path, yaml_text, match):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=match) as e:
        ExperimentConfig.from_yaml(path)
    assert "\n" not in str(e.value)


def test_values_are_coerced_from_their_declared_type(tmp_path):
    # YAML 1.1 reads 1e-3 as a string: it is still a learning rate
    cfg = apply_overrides(ExperimentConfig(), ["train.lr=1e-3", "data.batch_size=4",
                                               "model.dropout=0.2"])
    assert cfg.train.lr == 0.001 and isinstance(cfg.train.lr, float)
    assert HFGDConfig(dropout="0.1").dropout == 0.1
    assert HFGDConfig(num_classes="7").num_classes == 7
    path = tmp_path / "e.yaml"
    path.write_text(textwrap.dedent("""\
        train:
          lr: 1e-3
          warmup_ratio: 1.0e-3
        data:
          crop_size: [96, "128"]
        """))
    exp = ExperimentConfig.from_yaml(path)
    assert exp.train.lr == 0.001 and exp.data.crop_size == [96, 128]


@pytest.mark.parametrize("item, match", [
    ("train.lr=[1,", r"--set train\.lr='\[1,': not a valid value"),
    ("train.lr=fast", r"train\.lr='fast': expected a number"),
    ("model=5", r"model=5: expected a mapping"),
    ("train.nope=1", r"--set train\.nope: unknown key 'nope'"),
    ("lr", r"--set expects KEY=VALUE"),
])
def test_set_overrides_fail_with_one_line(item, match):
    with pytest.raises(ConfigError, match=match) as e:
        apply_overrides(ExperimentConfig(), [item])
    assert "\n" not in str(e.value)


def test_bare_constructor_type_errors_are_config_errors():
    with pytest.raises(ConfigError, match=r"HFGDConfig\.dropout='x': expected a number"):
        HFGDConfig(dropout="x")
    with pytest.raises(ConfigError, match=r"HFGDConfig\.backbone=5: expected a string"):
        HFGDConfig(backbone=5)
    with pytest.raises(ConfigError, match=r"HFGDConfig\.sg_levels=\['C6'\]"):
        HFGDConfig(sg_levels=["C6"])
