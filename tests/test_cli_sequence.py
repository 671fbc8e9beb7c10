"""The newcomer's path, end to end from make-scenes, as the README documents it:
make-scenes -> train configs/scenes_folder.yaml -> eval -> predict; and a one-line
message (exit 2, naming the key or option) for every wrong combination on the way."""
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from hfgd_lab.cli import main

ROOT = Path(__file__).resolve().parents[1]
FOLDER_CFG = ROOT / "configs" / "scenes_folder.yaml"
QUICK_CFG = ROOT / "configs" / "scenes_quick.yaml"
# the documented run, made small: 64 px scenes, 2 iterations (same keys the README uses)
SMALL = ["train.iters=2", "train.val_interval=2", "train.log_interval=1",
         "train.warmup_iters=1", "data.crop_size=[64,64]", "data.batch_size=2"]


def _one_line_error(capsys, *needles):
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    out = tmp_path_factory.mktemp("seq") / "scenes"
    assert main(["make-scenes", "--out", str(out), "--num", "8", "--size", "64",
                 "--workers", "1"]) == 0
    return out


def test_make_scenes_writes_train_and_val_and_says_so(scenes, tmp_path, capsys):
    assert len(list((scenes / "images" / "train").glob("*.png"))) == 8
    assert len(list((scenes / "images" / "val").glob("*.png"))) == 2  # a quarter of --num
    info = json.loads((scenes / "scenes.json").read_text())
    assert info["train"]["num"] == 8 and info["val"]["num"] == 2
    out = tmp_path / "only_train"
    assert main(["make-scenes", "--out", str(out), "--num", "3", "--size", "64",
                 "--val-num", "0", "--workers", "1"]) == 0
    text = capsys.readouterr().out
    assert "wrote 3 train scenes" in text
    assert "has no 'val' split" in text and f"make-scenes --out {out} --split val" in text


def test_make_scenes_rerun_replaces_only_its_own_files(tmp_path, capsys):
    out = tmp_path / "s"
    args = ["make-scenes", "--out", str(out), "--size", "64", "--workers", "1"]
    assert main([*args, "--num", "6"]) == 0
    assert main([*args, "--num", "4"]) == 0  # fewer: its own extra scenes are removed
    assert len(list((out / "images" / "train").iterdir())) == 4
    assert len(list((out / "masks" / "val").iterdir())) == 1
    capsys.readouterr()
    (out / "images" / "val" / "mine.png").write_bytes(b"user data")
    assert main([*args, "--num", "4"]) == 2
    _one_line_error(capsys, "mine.png", "not written by make-scenes", "'val'")
    assert (out / "images" / "val" / "mine.png").read_bytes() == b"user data"
    (tmp_path / "file").write_text("x")
    assert main(["make-scenes", "--out", str(tmp_path / "file")]) == 2
    _one_line_error(capsys, "--out", "not a folder")
    assert main(["make-scenes", "--out", str(tmp_path / "t"), "--split", "val",
                 "--val-num", "3"]) == 2
    _one_line_error(capsys, "--val-num 3", "--split")
    assert main(["make-scenes", "--out", str(tmp_path / "t"), "--size", "16"]) == 2
    _one_line_error(capsys, "--size", ">= 32")
    assert not (tmp_path / "t").exists()


def test_the_documented_sequence_end_to_end(scenes, tmp_path, capsys):
    """make-scenes -> train -> eval -> predict on the ImageNet Lite0 config, tiny."""
    run = tmp_path / "run"
    assert main(["train", str(FOLDER_CFG), "--work-dir", str(run), "--no-progress",
                 "--set", f"data.root={scenes}", *SMALL]) == 0
    text = capsys.readouterr().out
    assert "val@2: mIoU" in text and f"hfgd-lab eval {run.as_posix()}/best" in text
    card_dir = run / json.loads((run / "best.json").read_text())["checkpoint"]
    card = json.loads((card_dir / "config.json").read_text())
    assert card["config"]["backbone"] == "tf_efficientnet_lite0"
    assert card["config"]["norm_eval"] is True
    assert card["backbone_pretraining"]["weights"].startswith("packaged:")

    assert main(["eval", str(run / "best"), "--out", str(tmp_path / "eval.json"),
                 "--no-progress"]) == 0
    res = json.loads((tmp_path / "eval.json").read_text())
    assert res["num_images"] == 2 and res["split"] == "val" and res["dataset"] == "folder"
    assert "mIoU" in capsys.readouterr().out

    pred = tmp_path / "pred"
    assert main(["predict", str(run / "best"), str(scenes / "images" / "val"), "--out",
                 str(pred), "--no-progress"]) == 0
    for name in ("scene_000000.png", "scene_000001.png"):
        labels = np.asarray(Image.open(pred / f"{name}.labels.png"))
        assert labels.shape == (64, 64) and labels.max() < 10
    assert (pred / "legend.png").is_file() and (pred / "summary.csv").is_file()
    assert "knows only the classes of the built-in procedural scenes" in \
        capsys.readouterr().out

    # the same work dir again, without --resume: refused, nothing touched
    before = sorted(p.name for p in run.iterdir())
    assert main(["train", str(FOLDER_CFG), "--work-dir", str(run),
                 "--set", f"data.root={scenes}", *SMALL]) == 2
    _one_line_error(capsys, "train.work_dir", "--resume")
    assert sorted(p.name for p in run.iterdir()) == before


def test_the_issue_command_names_the_scenes_only_keys(scenes, tmp_path, capsys):
    """`train configs/scenes_quick.yaml --set data.name=folder data.root=...` used to end
    in a TypeError about 'num'."""
    assert main(["train", str(QUICK_CFG), "--work-dir", str(tmp_path / "r"), "--set",
                 "data.name=folder", f"data.root={scenes}"]) == 2
    _one_line_error(capsys, "data.kwargs.num=", "'folder'", "reduce_zero_label",
                    "--set data.kwargs={}", "scenes_folder.yaml")
    assert not (tmp_path / "r").exists()
    # clearing them as the message says works up to the split check
    assert main(["train", str(QUICK_CFG), "--work-dir", str(tmp_path / "r"), "--set",
                 "data.name=folder", f"data.root={scenes}", "data.kwargs={}",
                 "data.val_kwargs={}", *SMALL, "--quiet"]) == 0


def test_a_missing_val_split_says_how_to_make_one(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["make-scenes", "--out", str(out), "--num", "2", "--size", "64",
                 "--val-num", "0", "--workers", "1"]) == 0
    capsys.readouterr()
    assert main(["train", str(FOLDER_CFG), "--work-dir", str(tmp_path / "r"),
                 "--set", f"data.root={out}"]) == 2
    _one_line_error(capsys, "data.val_split='val'", "split folder not found",
                    f"make-scenes --out {out} --split val")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("sets, needles", [
    (["data.name=nosuch"], ["data.name='nosuch'", "unknown dataset", "folder"]),
    (["data.root=/no/such/folder"], ["data.root='/no/such/folder'", "not found"]),
    (["data.root=null"], ["data.root", "needs its folder"]),
    (["data.val_kwargs={num: 3}"], ["data.val_kwargs.num=3", "'folder'"]),
    (["train.lr=fast"], ["train.lr", "fast"]),
    (["train.work_dir=" + str(FOLDER_CFG)], ["train.work_dir", "not a folder"]),
])
def test_wrong_combinations_name_the_key(scenes, tmp_path, capsys, sets, needles):
    work = [] if any(s.startswith("train.work_dir") for s in sets) else \
        ["--work-dir", str(tmp_path / "run")]
    assert main(["train", str(FOLDER_CFG), *work, "--set", f"data.root={scenes}", *sets]) == 2
    _one_line_error(capsys, *needles)
    assert not (tmp_path / "run").exists()


def test_quick_and_folder_configs_describe_the_same_run():
    quick, folder = (yaml.safe_load(p.read_text()) for p in (QUICK_CFG, FOLDER_CFG))
    assert quick["model"] == folder["model"]
    assert quick["model"]["backbone"] == "tf_efficientnet_lite0"
    assert quick["model"]["pretrained"] is True and quick["model"]["norm_eval"] is True
    drop = lambda d, *keys: {k: v for k, v in d.items() if k not in keys}
    assert drop(quick["train"], "work_dir") == drop(folder["train"], "work_dir")
    assert drop(quick["data"], "name", "kwargs", "val_kwargs") == \
        drop(folder["data"], "name", "root")
    # the folder config's default root is where the README's make-scenes writes
    from hfgd_lab.commands.make_scenes import DEFAULT_ROOT
    assert folder["data"]["root"] == DEFAULT_ROOT
    readme = (ROOT / "README.md").read_text()
    assert f"hfgd-lab make-scenes --out {DEFAULT_ROOT}" in readme
    assert "hfgd-lab train configs/scenes_folder.yaml" in readme


def test_every_shipped_dataset_config_passes_the_checks():
    """configs/*.yaml (not zoo/sg): typed fields, and dataset kwargs the dataset takes."""
    from hfgd_lab.commands._checks import check_dataset_kwargs, check_dataset_name
    from hfgd_lab.engine.experiment import ExperimentConfig
    paths = sorted((ROOT / "configs").glob("*.yaml"))
    assert len(paths) >= 7
    for path in paths:
        cfg = ExperimentConfig.from_yaml(path)
        check_dataset_name(cfg.data.name, "data.name")
        check_dataset_kwargs(cfg.data.name, cfg.data.kwargs, "data.kwargs", "")
        check_dataset_kwargs(cfg.data.name, cfg.data.val_kwargs, "data.val_kwargs", "")


def test_jpeg_masks_are_refused_by_content_from_the_command_line(scenes, tmp_path, capsys):
    """A label file whose content is JPEG (named .png) is refused by train and eval with
    one line naming the file: its compression artefacts would become labels."""
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(scenes, bad)
    for split in ("train", "val"):
        mask = bad / "masks" / split / "scene_000001.png"
        Image.open(mask).convert("L").save(mask, format="JPEG")
    for workers in (0, 1):  # a DataLoader worker's error arrives with its traceback text
        assert main(["train", str(FOLDER_CFG), "--work-dir", str(tmp_path / f"r{workers}"),
                     "--no-progress", "--set", f"data.root={bad}", *SMALL,
                     f"data.num_workers={workers}", "data.val_split=train"]) == 2
        line = _one_line_error(capsys, "scene_000001.png", "JPEG")
        assert line.startswith("hfgd-lab train: error: /"), line
    # eval of a model on the same folder
    good = tmp_path / "good_run"
    assert main(["train", str(FOLDER_CFG), "--work-dir", str(good), "--quiet",
                 "--set", f"data.root={scenes}", *SMALL]) == 0
    capsys.readouterr()
    assert main(["eval", str(good / "best"), "--data", "folder", "--root", str(bad),
                 "--out", str(tmp_path / "e.json"), "--no-progress"]) == 2
    _one_line_error(capsys, "scene_000001.png", "JPEG")
    assert not (tmp_path / "e.json").exists()
