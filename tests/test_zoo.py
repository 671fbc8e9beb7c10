"""The bundled models: they load by name, and their cards tell the truth."""
from pathlib import Path

import pytest
import torch

from hfgd_lab import list_pretrained, load_pretrained
from hfgd_lab.engine.checkpoint import CheckpointError
from hfgd_lab.zoo import DEFAULT_MODEL, WEIGHTS_DIR, pretrained_backbone

BUNDLED = ["hfgd_scenes_sg", "hfgd_scenes_nosg", "semantic_fpn_scenes"]


def test_bundled_models_are_listed_default_first():
    names = list_pretrained()
    assert set(BUNDLED) <= set(names)
    assert names[0] == DEFAULT_MODEL


def test_total_bundled_size_is_small():
    total = sum(p.stat().st_size for p in WEIGHTS_DIR.iterdir() if p.is_file())
    assert total <= 25 * 1024 * 1024, f"{total / 2**20:.1f} MB"


@pytest.mark.parametrize("name", BUNDLED)
def test_card_subset_miou_is_reproduced(name):
    from hfgd_lab.data import build_dataset
    from hfgd_lab.data.transforms import build_eval_transform
    from hfgd_lab.engine.evaluate import evaluate

    p = load_pretrained(name)
    model, classes, palette = p
    assert not model.training
    assert len(classes) == model.cfg.num_classes == len(palette)
    card = p.card
    metrics = card["metrics"]
    assert 0 < metrics["subset_mIoU"] <= 100 and 0 < metrics["val_mIoU"] <= 100
    assert card["trained_on"] and card["provenance"]["command"]
    d = card["experiment"]["data"]
    val = build_dataset(d["name"], d["root"], d["val_split"], transform=build_eval_transform(),
                        **{**d["kwargs"], **d["val_kwargs"]})
    got = evaluate(model, val, max_images=metrics["subset_images"], progress=False)
    assert got["mIoU"] == pytest.approx(metrics["subset_mIoU"], abs=0.5)


def test_bundled_variants_are_what_their_names_say():
    sg = load_pretrained("hfgd_scenes_sg").model.cfg
    nosg = load_pretrained("hfgd_scenes_nosg").model.cfg
    sfpn = load_pretrained("semantic_fpn_scenes").model.cfg
    assert sg.arch == "hfgd" and sg.sg_backbone_on and sg.sg_high_on and sg.sg_tokens_on
    assert nosg.arch == "hfgd" and not (nosg.sg_backbone_on or nosg.sg_high_on or nosg.sg_tokens_on)
    assert sfpn.arch == "semantic_fpn"


def test_bundled_backbone_loads_as_backbone_weights():
    from hfgd_lab import HFGDConfig, build_model
    cfg = load_pretrained(DEFAULT_MODEL).model.cfg
    model = build_model(cfg.replace(backbone_weights=str(pretrained_backbone()), num_classes=3))
    assert model(torch.randn(1, 3, 64, 64)).logits.shape == (1, 3, 16, 16)


def test_unknown_name_fails_clearly():
    with pytest.raises(CheckpointError, match="no bundled model named 'nope'; available: "):
        load_pretrained("nope")


def test_stand_ins_have_the_bundled_architecture(tmp_path):
    """Tests run the app and notebooks on stand-ins: they must be the shipped models'
    shape (configs/zoo/finetune.yaml), or the tests would exercise another network."""
    import yaml
    from safetensors import safe_open

    from hfgd_lab.zoo import SCENES_MODEL, write_stand_ins

    root = Path(__file__).resolve().parents[1]
    model_cfg = yaml.safe_load((root / "configs/zoo/finetune.yaml").read_text())["model"]
    assert model_cfg == SCENES_MODEL
    folder = write_stand_ins(tmp_path)
    for name in BUNDLED:
        real, fake = WEIGHTS_DIR / f"{name}.safetensors", folder / f"{name}.safetensors"
        with safe_open(real, "pt") as a, safe_open(fake, "pt") as b:
            assert {k: a.get_slice(k).get_shape() for k in a.keys()} == \
                   {k: b.get_slice(k).get_shape() for k in b.keys()}, name
    before = (folder / "hfgd_scenes_sg.safetensors").stat().st_mtime_ns
    write_stand_ins(folder, seed=1)  # existing files are kept
    assert (folder / "hfgd_scenes_sg.safetensors").stat().st_mtime_ns == before
