"""hfgd-lab predict: outputs at the input's size, names that keep relative paths and
extensions, a legend and a per-class summary, words about what the model knows, and
nothing overwritten that predict did not write; every option checked before any work."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

from hfgd_lab.cli import main
from hfgd_lab.config import HFGDConfig
from hfgd_lab.data.scenes import SCENE_CLASSES, SCENE_PALETTE
from hfgd_lab.engine.checkpoint import save_checkpoint
from hfgd_lab.models import build_model

TINY = dict(backbone="convnext_atto", num_classes=10, embed_dim=32, cae_heads=4,
            decoder_channels=32, backbone_kwargs={"dims": [16, 32, 64, 128],
                                                  "depths": [1, 1, 1, 1]})


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A random-weight 10-class model with the scenes' classes (a two-file checkpoint)."""
    tmp = tmp_path_factory.mktemp("predict_model")
    model = build_model(HFGDConfig(**TINY)).eval()
    save_checkpoint(tmp / "tiny", model, classes=SCENE_CLASSES, palette=SCENE_PALETTE,
                    extra={"dataset": "folder"})
    return str(tmp / "tiny")


def _image(path, h, w, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), np.uint8)).save(path)
    return path


def _one_line_error(capsys, *needles):
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def test_outputs_at_the_input_size_with_legend_and_summary(ckpt, tmp_path, capsys):
    img = _image(tmp_path / "in" / "big.jpg", 150, 260)
    out = tmp_path / "pred"
    assert main(["predict", ckpt, str(img), "--out", str(out), "--max-side", "64",
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    labels = np.asarray(Image.open(out / "big.jpg.labels.png"))
    assert labels.shape == (150, 260) and labels.dtype == np.uint8 and labels.max() < 10
    for kind in ("mask", "overlay"):
        assert np.asarray(Image.open(out / f"big.jpg.{kind}.png")).shape == (150, 260, 3)
    # the mask is the palette of the labels, pixel for pixel
    mask = np.asarray(Image.open(out / "big.jpg.mask.png"))
    np.testing.assert_array_equal(mask, SCENE_PALETTE[labels])

    summary = json.loads((out / "summary.json").read_text())
    rec = summary["images"]["big.jpg"]
    assert rec["size"] == [260, 150] and rec["inference_size"] == [64, 37]
    assert abs(sum(c["area_pct"] for c in rec["classes"]) - 100) < 0.1
    counts = np.bincount(labels.ravel(), minlength=10)
    for c in rec["classes"]:
        assert c["pixels"] == counts[c["index"]] and c["class"] == SCENE_CLASSES[c["index"]]
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert {r["class"] for r in rows} == {c["class"] for c in rec["classes"]}
    assert all(r["image"] == "big.jpg" for r in rows)

    legend = np.asarray(Image.open(out / "legend.png").convert("RGB"))
    colours = {tuple(c) for c in legend.reshape(-1, 3)}
    assert all(tuple(int(v) for v in c) in colours for c in SCENE_PALETTE)

    # printed: what the model is and knows, one summary line per image, low confidence
    assert "model tiny: 10 classes (sky, water" in text
    assert "knows only the classes of the built-in procedural scenes" in text
    line = next(x for x in text.splitlines() if x.startswith("big.jpg (260x150):"))
    assert "mean confidence" in line and rec["classes"][0]["class"] in line
    assert "warning: big.jpg: low confidence" in text  # random weights: ~0.1-0.2
    assert rec["warnings"] and rec["mean_confidence"] < 0.5


def test_low_confidence_threshold_is_an_option(ckpt, tmp_path, capsys):
    img = _image(tmp_path / "a.png", 40, 40)
    assert main(["predict", ckpt, str(img), "--out", str(tmp_path / "p"),
                 "--low-confidence", "0", "--no-progress"]) == 0
    assert "low confidence" not in capsys.readouterr().out
    assert json.loads((tmp_path / "p" / "summary.json").read_text())["images"]["a.png"][
        "warnings"] == []


def test_names_keep_relative_paths_and_extensions(ckpt, tmp_path, capsys):
    src = tmp_path / "in"
    for rel, seed in (("x.png", 1), ("x.jpg", 2), ("sub/x.png", 3)):
        _image(src / rel, 40, 48, seed)
    out = tmp_path / "pred"
    assert main(["predict", ckpt, str(src), "--out", str(out), "--no-progress"]) == 0
    for rel in ("x.png", "x.jpg", "sub/x.png"):
        for kind in ("labels", "mask", "overlay"):
            assert (out / f"{rel}.{kind}.png").is_file(), (rel, kind)
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert len(written) == 9 + 4  # + legend, summary.json, summary.csv, manifest
    assert set(json.loads((out / "summary.json").read_text())["images"]) == \
        {"x.png", "x.jpg", "sub/x.png"}
    # earlier results inside the input folder are not read back as inputs: an output
    # folder inside it (twice), a second one beside it, or the input folder itself
    for target in ("pred", "pred", "pred2", "."):
        assert main(["predict", ckpt, str(src), "--out", str(src / target),
                     "--no-progress"]) == 0
        rec = json.loads((src / target / "summary.json").read_text())["images"]
        assert set(rec) == {"x.png", "x.jpg", "sub/x.png"}, (target, set(rec))
    assert not list(src.rglob("*.labels.png.*"))
    assert (src / "x.png.labels.png").is_file()  # --out the input folder: beside the inputs


def test_two_inputs_with_one_output_name_are_refused(ckpt, tmp_path, capsys):
    a, b = _image(tmp_path / "a" / "x.png", 32, 32), _image(tmp_path / "b" / "x.png", 32, 32)
    assert main(["predict", ckpt, str(a), str(b), "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, str(a), str(b), "x.png.labels.png")
    assert not (tmp_path / "o").exists()


def test_never_overwrites_a_file_it_did_not_write(ckpt, tmp_path, capsys):
    img = _image(tmp_path / "photo.png", 40, 40)
    out = tmp_path / "pred"
    out.mkdir()
    mine = out / "photo.png.mask.png"
    mine.write_bytes(b"the user's own file")
    assert main(["predict", ckpt, str(img), "--out", str(out), "--no-progress"]) == 2
    _one_line_error(capsys, str(mine), "not written by hfgd-lab", "--overwrite")
    assert mine.read_bytes() == b"the user's own file"
    assert sorted(p.name for p in out.iterdir()) == ["photo.png.mask.png"]  # no work done
    # its own files, listed in the manifest, are replaced on a second run
    assert main(["predict", ckpt, str(img), "--out", str(out), "--no-progress",
                 "--overwrite"]) == 0
    assert mine.read_bytes() != b"the user's own file"
    manifest = json.loads((out / "hfgd-lab-manifest.json").read_text())
    assert "photo.png.mask.png" in manifest["files"]
    assert main(["predict", ckpt, str(img), "--out", str(out), "--no-progress"]) == 0
    # summary.json is merged: a second image keeps the first one's record, also when
    # another model made the second (each record names its model)
    img2 = _image(tmp_path / "other.png", 40, 40, seed=5)
    other_model = build_model(HFGDConfig(**{**TINY, "num_classes": 3})).eval()
    save_checkpoint(tmp_path / "m3", other_model, classes=["a", "b", "c"])
    assert main(["predict", str(tmp_path / "m3"), str(img2), "--out", str(out),
                 "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert {k: v["model"] for k, v in summary["images"].items()} == \
        {"photo.png": "tiny", "other.png": "m3"}
    assert summary["models"] == {"tiny": list(SCENE_CLASSES), "m3": ["a", "b", "c"]}
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert {(r["image"], r["model"]) for r in rows} == {("photo.png", "tiny"),
                                                       ("other.png", "m3")}
    # a file named like the manifest that is not one: refused
    other = tmp_path / "o2"
    other.mkdir()
    (other / "hfgd-lab-manifest.json").write_text("{}")
    assert main(["predict", ckpt, str(img), "--out", str(other)]) == 2
    _one_line_error(capsys, "not a manifest written by hfgd-lab")


def test_out_naming_a_file_is_a_one_line_error(ckpt, tmp_path, capsys):
    img = _image(tmp_path / "a.png", 32, 32)
    (tmp_path / "file.txt").write_text("keep")
    assert main(["predict", ckpt, str(img), "--out", str(tmp_path / "file.txt")]) == 2
    _one_line_error(capsys, "--out", "file.txt", "not a folder")
    assert (tmp_path / "file.txt").read_text() == "keep"
    assert main(["predict", ckpt, str(img), "--out", str(tmp_path / "file.txt" / "sub")]) == 2
    _one_line_error(capsys, "--out", "is a file, not a folder")


@pytest.mark.parametrize("option, needles", [
    (["--opacity", "1.5"], ["--opacity", "1.5", "[0, 1]"]),
    (["--opacity", "x"], ["--opacity", "'x'"]),
    (["--max-side", "0"], ["--max-side", "0", ">= 32"]),
    (["--crop", "0", "32"], ["--crop", "0", ">= 1"]),
    (["--scales", "1", "-0.5"], ["--scales", "-0.5", "> 0"]),
    (["--scales", "nan"], ["--scales", "'nan'"]),
    (["--device", "gpu"], ["--device", "'gpu'", "cpu, cuda"]),
    (["--device", "cuda:99"], ["--device cuda:99"]),
    (["--mode", "whole", "--crop", "32", "32"], ["--crop 32 32", "--mode slide"]),
    (["--mode", "slide"], ["--mode slide", "--crop"]),
    (["--crop", "32", "32", "--stride", "48", "16"], ["--stride 48 16", "larger"]),
    (["--stride", "8", "8"], ["--stride 8 8", "needs --crop"]),
    (["--low-confidence", "2"], ["--low-confidence", "[0, 1]"]),
    (["--mode", "zoom"], ["--mode", "'zoom'"]),
])
def test_every_option_is_checked_before_any_work(ckpt, tmp_path, capsys, option, needles):
    img = _image(tmp_path / "a.png", 32, 32)
    out = tmp_path / "o"
    assert main(["predict", ckpt, str(img), "--out", str(out), *option]) == 2
    _one_line_error(capsys, *needles)
    assert not out.exists()


def test_missing_input_and_model_fail_before_work(ckpt, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["predict", ckpt, str(tmp_path / "nope.png"), "--out", str(out)]) == 2
    _one_line_error(capsys, "nope.png", "no such file")
    (tmp_path / "empty").mkdir()
    assert main(["predict", ckpt, str(tmp_path / "empty"), "--out", str(out)]) == 2
    _one_line_error(capsys, "no images")
    img = _image(tmp_path / "a.png", 32, 32)
    assert main(["predict", str(tmp_path / "no_model"), str(img), "--out", str(out)]) == 2
    _one_line_error(capsys, "no_model")
    assert not out.exists()  # the folder made for the run is removed again


def test_unreadable_images_are_skipped_and_counted(ckpt, tmp_path, capsys):
    _image(tmp_path / "in" / "photo.jpg", 50, 70)
    (tmp_path / "in" / "notes.png").write_bytes(b"this is not an image")
    code = main(["predict", ckpt, str(tmp_path / "in"), "--out", str(tmp_path / "pred"),
                 "--no-progress"])
    assert code == 1  # one input was refused
    text = capsys.readouterr().out
    assert "notes.png: not a readable image" in text and "1 of 2 input(s) skipped" in text
    assert np.asarray(Image.open(tmp_path / "pred" / "photo.jpg.labels.png")).shape == (50, 70)


def test_slide_scales_and_flip_run(ckpt, tmp_path):
    img = _image(tmp_path / "a.png", 70, 90)
    assert main(["predict", ckpt, str(img), "--out", str(tmp_path / "o"), "--crop", "64", "64",
                 "--stride", "32", "32", "--scales", "0.75", "1", "--flip", "--opacity", "0",
                 "--no-progress"]) == 0
    overlay = np.asarray(Image.open(tmp_path / "o" / "a.png.overlay.png"))
    np.testing.assert_array_equal(overlay, np.asarray(Image.open(img)))  # opacity 0


def test_a_model_not_of_the_scenes_gets_no_scenes_note(tmp_path, capsys):
    model = build_model(HFGDConfig(**{**TINY, "num_classes": 3})).eval()
    save_checkpoint(tmp_path / "three", model, classes=["a", "b", "c"],
                    palette=[[255, 0, 0], [0, 255, 0], [0, 0, 255]],
                    extra={"trained_on": "my own photos."})
    img = _image(tmp_path / "a.png", 40, 40)
    assert main(["predict", str(tmp_path / "three"), str(img), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "model three: 3 classes (a, b, c); trained on my own photos" in text
    assert "procedural scenes" not in text
