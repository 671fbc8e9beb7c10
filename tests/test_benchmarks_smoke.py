"""The speed benchmark (hfgd-lab bench, benchmarks/speed.py) runs end to end on a tiny
input (a smoke test, not a timing)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hfgd_lab import bench

ROOT = Path(__file__).resolve().parents[1]


def load_speed():
    return bench


def test_speed_smoke(tmp_path, capsys):
    speed = load_speed()
    out = tmp_path / "speed.json"
    res = speed.main(["--size", "64", "--repeats", "1", "--warmup", "0", "--threads", "1",
                      "--num-classes", "5", "--quiet", "--json", str(out)])
    text = capsys.readouterr().out
    for label in ("HFGD OS8", "HFGD OS4", "HFGD OS2", "SemanticFPN", "smp FPN", "smp UPerNet"):
        assert label in text
    data = json.loads(out.read_text())
    assert set(data["models"]) == set(speed.MODELS) == set(res["models"])
    fpn = data["models"]["smp_fpn"]
    assert fpn["wall"]["full"]["ratio"] == pytest.approx(1.0)
    # same encoder everywhere: equal encoder parameter counts
    assert len({round(r["encoder_params_m"], 6) for r in data["models"].values()}) == 1
    for r in data["models"].values():
        assert r["gflops"] > r["encoder_gflops"] > 0
        for clock in ("wall", "cpu"):
            for v in ("full", "native"):
                assert r[clock][v]["ms"] > 0 and len(r[clock][v]["times_ms"]) == 1


def test_speed_subset_markdown(capsys):
    speed = load_speed()
    speed.main(["--size", "64", "--repeats", "1", "--warmup", "0", "--models", "hfgd_os4",
                "--variants", "native", "--markdown", "--quiet"])
    text = capsys.readouterr().out
    assert "| HFGD OS4 | 1/4 |" in text


def test_bench_command_and_script_wrapper(capsys, tmp_path):
    from hfgd_lab.cli import main
    args = ["--size", "64", "--repeats", "1", "--warmup", "0", "--models", "hfgd_os8",
            "--variants", "native", "--quiet", "--json", str(tmp_path / "speed.json")]
    assert main(["bench", *args]) == 0
    assert "HFGD OS8" in capsys.readouterr().out
    recorded = json.loads((tmp_path / "speed.json").read_text())["environment"]["command"]
    assert recorded == " ".join(["hfgd-lab bench", *args])  # as typed, for the docs
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--num-classes" in out


def test_stop_gradient_script_end_to_end(tmp_path, monkeypatch, capsys):
    """benchmarks/stop_gradient.py in a fast mode: pretrain -> three variants -> report,
    docs figures and a bundle that load_pretrained reads, with a reproducible subset mIoU."""
    import yaml

    from hfgd_lab import zoo
    from hfgd_lab.cli import main as cli
    from hfgd_lab.data import build_dataset
    from hfgd_lab.data.transforms import build_eval_transform
    from hfgd_lab.engine.evaluate import evaluate

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import stop_gradient as script

    tiny = {"dims": [16, 32, 64, 128], "depths": [1, 1, 1, 1]}
    weights = tmp_path / "bb.safetensors"
    assert cli(["pretrain", "--out", str(weights), "--no-progress", "--set", "iters=2",
                "batch_size=2", "size=64", "num_workers=0",
                "backbone_kwargs={dims: [16, 32, 64, 128], depths: [1, 1, 1, 1]}"]) == 0
    cfg = yaml.safe_load((ROOT / "configs/zoo/finetune.yaml").read_text())
    cfg["model"].update(backbone_kwargs=tiny, embed_dim=32, decoder_channels=32)
    cfg["data"].update(kwargs={"num": 6, "size": 64, "seed": 1}, val_kwargs={"num": 4},
                       crop_size=[64, 64], batch_size=2)
    cfg["train"].update(iters=3, warmup_iters=1, val_interval=3, log_interval=1)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    out, docs, bundle = tmp_path / "sg_tiny", tmp_path / "docs", tmp_path / "weights"
    script.main(["--config", str(tmp_path / "tiny.yaml"), "--pretrained", str(weights),
                 "--out", str(out), "--seeds", "0", "--jobs", "1", "--probe-every", "1",
                 "--docs", str(docs), "--bundle", str(bundle), "--subset", "2"])
    printed = capsys.readouterr().out
    assert "| HFGD sg |" in printed and "bundled hfgd_scenes_sg" in printed
    report = json.loads((out / "results.json").read_text())
    assert {r["variant"] for r in report["runs"]} == {"semantic_fpn", "hfgd_nosg", "hfgd_sg"}
    assert report["summary"]["variants"]["hfgd_sg"]["grad_up_backbone"][0] == 0.0
    assert report["summary"]["variants"]["hfgd_nosg"]["grad_up_backbone"][0] > 0.0
    assert (docs / "results" / "sg_tiny.json").is_file()
    assert list((docs / "figures").glob("sg_tiny_*.png"))

    monkeypatch.setattr(zoo, "WEIGHTS_DIR", bundle)
    assert zoo.list_pretrained() == ["hfgd_scenes_sg", "hfgd_scenes_nosg", "semantic_fpn_scenes"]
    assert zoo.pretrained_backbone().is_file()
    p = zoo.load_pretrained("hfgd_scenes_sg")
    assert p.card["variant"] == "hfgd_sg" and p.model.cfg.stop_gradient
    val = build_dataset("scenes", None, "val", transform=build_eval_transform(),
                        **{**cfg["data"]["kwargs"], **cfg["data"]["val_kwargs"]})
    again = evaluate(p.model, val, max_images=2, progress=False)["mIoU"]
    assert abs(again - p.card["metrics"]["subset_mIoU"]) < 1e-6
