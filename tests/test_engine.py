"""Training, resuming, DDP, evaluation and checkpoints on the built-in scenes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hfgd_lab.engine import ExperimentConfig, load_checkpoint, save_checkpoint
from hfgd_lab.engine.checkpoint import CheckpointError
from hfgd_lab.engine.inference import InferenceOptions, predict_probs
from hfgd_lab.engine.train import train

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = dict(num_classes=None, embed_dim=32, cae_heads=4, decoder_channels=32, cae_depth=1,
                  backbone_kwargs=dict(dims=[16, 32, 64, 128], depths=[1, 1, 1, 1]))


def tiny_config(work_dir, iters=6, val_interval=3, **train_kw):
    from hfgd_lab.data import build_dataset
    k = len(build_dataset("scenes", None, "train", num=2, size=64).CLASSES)
    return ExperimentConfig.from_dict({
        "model": {**TINY_MODEL, "num_classes": k},
        "data": {"name": "scenes", "kwargs": {"num": 16, "size": 64, "seed": 0},
                 "val_kwargs": {"num": 4}, "crop_size": [64, 64], "scale": [0.75, 1.5],
                 "batch_size": 4},
        "train": {"iters": iters, "val_interval": val_interval, "log_interval": 1,
                  "warmup_iters": 2, "lr": 2e-3, "work_dir": str(work_dir), **train_kw},
    })


def test_short_training_lowers_the_loss(tmp_path):
    cfg = tiny_config(tmp_path, iters=40, val_interval=40)
    result = train(cfg, progress=False)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    assert result["best"]["mIoU"] > 0
    for name in ("last", "best"):  # pointers to a checkpoint set (engine/checkpoint.py)
        assert (tmp_path / f"{name}.json").is_file()
        assert (tmp_path / json.loads((tmp_path / f"{name}.json").read_text())["checkpoint"]
                / "model.safetensors").is_file()
    model, card = load_checkpoint(tmp_path / "best")
    assert card["classes"] and len(card["palette"]) == model.cfg.num_classes
    assert card["metrics"]["mIoU"] == result["best"]["mIoU"]


def _weights(path):
    model, _ = load_checkpoint(path)
    return model.state_dict()


def test_resume_continues_exactly(tmp_path):
    full = tmp_path / "full"
    train(tiny_config(full, iters=6, val_interval=3), progress=False)
    part = tmp_path / "part"
    train(tiny_config(part, iters=3, val_interval=3), progress=False)
    # same run, told to go on to 6: --resume (latest in work_dir)
    train(tiny_config(part, iters=6, val_interval=3), resume=True, progress=False)
    a, b = _weights(full / "last"), _weights(part / "last")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    card = load_checkpoint(part / "last")[1]
    assert card["train_state"]["iteration"] == 6


def test_resume_by_path_and_missing(tmp_path):
    train(tiny_config(tmp_path / "a", iters=2, val_interval=2), progress=False)
    cfg = tiny_config(tmp_path / "b", iters=3, val_interval=3)
    out = train(cfg, resume=str(tmp_path / "a" / "last"), progress=False)
    assert out["history"][-1]["iter"] == 3
    with pytest.raises(FileNotFoundError, match="no last checkpoint"):
        train(tiny_config(tmp_path / "empty"), resume=True, progress=False)
    save_checkpoint(tmp_path / "weights_only", load_checkpoint(tmp_path / "a" / "best")[0])
    with pytest.raises(CheckpointError, match="holds no training state"):
        train(tiny_config(tmp_path / "c"), resume=str(tmp_path / "weights_only"), progress=False)


def test_grad_accumulation_matches_larger_batch(tmp_path):
    # accum 2 x batch 2 draws the same samples as batch 4; with dropout off and no
    # batch-dependent layers the first update is the same up to float rounding.
    def run(bs, acc, d):
        cfg = tiny_config(d, iters=1, val_interval=1, accum_steps=acc, warmup_iters=0)
        cfg.data.batch_size = bs
        cfg.model.dropout = 0.0
        cfg.data.photometric = False
        train(cfg, progress=False)
        return _weights(d / "last")
    a, b = run(4, 1, tmp_path / "a"), run(2, 2, tmp_path / "b")
    diffs = [(a[k] - b[k]).abs().max().item() for k in a if a[k].is_floating_point()]
    assert max(diffs) < 1e-4


DDP_SCRIPT = r"""
import hashlib, json, os, sys, torch
sys.path.insert(0, {root!r})
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from test_engine import tiny_config
from hfgd_lab.engine.train import train
import hfgd_lab.engine.train as T
captured = {{}}
def on_step(it, model, losses):
    captured["model"] = model
cfg = tiny_config({work!r}, iters=3, val_interval=3)
train(cfg, progress=False, on_step=on_step)
h = hashlib.sha256()
for k, v in sorted(captured["model"].state_dict().items()):
    h.update(k.encode()); h.update(v.detach().float().numpy().tobytes())
open(os.path.join({work!r}, "rank%s.txt" % os.environ["RANK"]), "w").write(h.hexdigest())
"""


def test_torchrun_two_ranks_gloo_identical_weights(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(root=str(ROOT), tests=str(ROOT / "tests"),
                                        work=str(tmp_path)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           "--master_port=29517", str(script)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    h0, h1 = (tmp_path / "rank0.txt").read_text(), (tmp_path / "rank1.txt").read_text()
    assert h0 == h1
    # rank 0 alone writes the log and checkpoints
    assert (tmp_path / "last.json").is_file() and (tmp_path / "log.jsonl").is_file()


# ---- inference -----------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model():
    from hfgd_lab import HFGDConfig, build_model
    torch.manual_seed(0)
    return build_model(HFGDConfig(**{**TINY_MODEL, "num_classes": 5})).eval()


def test_slide_window_covering_image_equals_whole(tiny_model):
    x = torch.randn(1, 3, 70, 90)
    whole = predict_probs(tiny_model, x)
    slide = predict_probs(tiny_model, x, InferenceOptions("slide", crop_size=[96, 96]))
    assert torch.equal(whole, slide)
    small = predict_probs(tiny_model, x, InferenceOptions("slide", [32, 32], [16, 16]))
    assert small.shape == whole.shape
    torch.testing.assert_close(small.sum(1), torch.ones(1, 70, 90))


def test_flip_and_scales(tiny_model):
    x = torch.randn(1, 3, 64, 64)
    p = predict_probs(tiny_model, x, InferenceOptions(flip=True, scales=[0.5, 1.0, 1.5]))
    assert p.shape == (1, 5, 64, 64)
    # flip TTA of a mirrored image is the mirror of flip TTA of the image
    q = predict_probs(tiny_model, x.flip(-1), InferenceOptions(flip=True))
    torch.testing.assert_close(q.flip(-1), predict_probs(tiny_model, x, InferenceOptions(flip=True)),
                               atol=1e-5, rtol=1e-4)


# ---- checkpoints ----------------------------------------------------------------

def test_checkpoint_round_trip_and_bad_files(tmp_path, tiny_model):
    save_checkpoint(tmp_path / "m", tiny_model, classes=list("abcde"), palette=[[0, 0, 0]] * 5,
                    metrics={"mIoU": 1.0})
    model, card = load_checkpoint(tmp_path / "m.safetensors")
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, model.state_dict()[k])
    assert card["classes"] == list("abcde")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="bad.json is not valid JSON"):
        load_checkpoint(tmp_path / "bad")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing")
    (tmp_path / "m.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "m")


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, tiny_model, monkeypatch):
    save_checkpoint(tmp_path / "last", tiny_model, classes=list("abcde"))
    before = (tmp_path / "last.safetensors").read_bytes()
    import hfgd_lab.engine.checkpoint as C

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(C.os, "replace", boom)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "last", tiny_model, classes=list("abcde"))
    monkeypatch.undo()
    assert (tmp_path / "last.safetensors").read_bytes() == before
    load_checkpoint(tmp_path / "last")


def test_checkpoint_refuses_pickle(tmp_path, tiny_model):
    save_checkpoint(tmp_path / "m", tiny_model)
    torch.save(tiny_model.state_dict(), tmp_path / "m.safetensors")  # a pickle in disguise
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "m")
