"""Checkpoint sets, pointers, resolution, fallback on resume, clean-up, log truncation
(engine/checkpoint.py and the save / resume parts of engine/train.py)."""
import copy
import json
import os
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch

from hfgd_lab import HFGDConfig, build_model
from hfgd_lab.engine import checkpoint as C
from hfgd_lab.engine.checkpoint import CheckpointError
from hfgd_lab.engine.train import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_engine import TINY_MODEL, tiny_config  # noqa: E402

CLASSES = list("abcde")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(HFGDConfig(**{**TINY_MODEL, "num_classes": 5})).eval()


def _optimizer(model):
    """An AdamW with state, stepped on a copy (the shared model stays as it is)."""
    model = copy.deepcopy(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(1, 3, 64, 64)).logits.mean().backward()
    opt.step()
    opt.zero_grad()
    return opt


def _save(work, model, it, pointers=("last",), opt=None):
    return C.save_training_set(work, model, iteration=it, pointers=pointers, classes=CLASSES,
                               metrics={"mIoU": float(it)}, optimizer=opt or _optimizer(model),
                               train_state={"iteration": it})


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---- layout and resolution -----------------------------------------------------------

def test_a_save_is_a_set_folder_and_pointers(tmp_path, model):
    s1 = _save(tmp_path, model, 2, ("last", "best"))
    assert s1.parent == tmp_path / "checkpoints" and s1.name.startswith("iter000002-")
    assert sorted(p.name for p in s1.iterdir()) == ["config.json", "model.safetensors",
                                                    "train.safetensors"]
    for name in ("last", "best"):
        pointer = json.loads((tmp_path / f"{name}.json").read_text())
        assert pointer == {"format": C.POINTER_FORMAT, "iteration": 2,
                           "checkpoint": f"checkpoints/{s1.name}"}
    card = json.loads((s1 / "config.json").read_text())
    assert card["train_state"]["iteration"] == 2 and card["classes"] == CLASSES
    assert card["normalization"]["mean"] == card["config"]["image_mean"]
    # last moves on, best stays: both sets kept; a set nobody points at is removed
    s2 = _save(tmp_path, model, 4)
    assert {p.name for p in (tmp_path / "checkpoints").iterdir()} == {s1.name, s2.name}
    s3 = _save(tmp_path, model, 6)
    assert {p.name for p in (tmp_path / "checkpoints").iterdir()} == {s1.name, s3.name}
    assert C.read_pointer(tmp_path / "last.json") == tmp_path / "checkpoints" / s3.name


def test_everything_a_user_types_resolves(tmp_path, model):
    s = _save(tmp_path, model, 2, ("last", "best"))
    _save(tmp_path, model, 4)
    last = C.read_pointer(tmp_path / "last.json")
    for typed, folder in [(tmp_path, s), (tmp_path / "best", s), (tmp_path / "best.json", s),
                          (tmp_path / "last", last), (str(tmp_path / "last.json"), last),
                          (s, s), (s / "model.safetensors", s), (s / "config.json", s)]:
        ref = C.resolve(typed)
        assert ref.folder == folder and ref.card == folder / "config.json", typed
        loaded, card = C.load_checkpoint(typed)
        assert _same_weights(loaded, model) and card["classes"] == CLASSES
    assert C.resolve(tmp_path / "best").stem == tmp_path / "best"
    assert C.resolve(tmp_path / "best").name == f"{tmp_path.name}/best"
    assert C.checkpoint_paths(tmp_path)["weights"] == s / "model.safetensors"


def test_two_file_checkpoints_and_old_run_folders_still_load(tmp_path, model):
    C.save_checkpoint(tmp_path / "m", model, classes=CLASSES)
    for typed in ("m", "m.json", "m.safetensors"):
        ref = C.resolve(tmp_path / typed)
        assert ref.folder is None and ref.card == tmp_path / "m.json"
        assert _same_weights(C.load_checkpoint(tmp_path / typed)[0], model)
    old_run = tmp_path / "old_run"  # hfgd-lab < 0.3: best/last were two-file checkpoints
    C.save_checkpoint(old_run / "best", model, classes=CLASSES)
    C.save_checkpoint(old_run / "last", model, optimizer=_optimizer(model),
                      train_state={"iteration": 3})
    assert C.resolve(old_run).card == old_run / "best.json"
    point = C.find_resume(True, old_run)
    assert point.ref.card == old_run / "last.json" and point.note is None


def test_bad_pointers_and_folders_fail_in_one_line(tmp_path, model):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint in folder .*empty"):
        C.resolve(tmp_path / "empty")
    (tmp_path / "evil.json").write_text(json.dumps(
        {"format": C.POINTER_FORMAT, "checkpoint": "../../etc"}))
    with pytest.raises(CheckpointError, match="names no checkpoint set inside its run folder"):
        C.resolve(tmp_path / "evil")
    (tmp_path / "gone.json").write_text(json.dumps(
        {"format": C.POINTER_FORMAT, "checkpoint": "checkpoints/iter000001-00000000"}))
    with pytest.raises(CheckpointError, match="names a set that is not there"):
        C.load_checkpoint(tmp_path / "gone")


def test_files_of_two_saves_are_never_taken_for_one(tmp_path, model):
    s1 = _save(tmp_path, model, 2, ("last", "best"))
    s2 = _save(tmp_path, model, 4)
    shutil.copy(s1 / "model.safetensors", s2 / "model.safetensors")
    with pytest.raises(CheckpointError, match="save_id differs"):
        C.load_checkpoint(s2)
    with pytest.raises(CheckpointError, match="belongs to another save"):
        C.verify(s2)


def test_loading_never_unpickles(tmp_path, model, monkeypatch):
    _save(tmp_path, model, 2, ("last", "best"))

    def no_pickle(*a, **k):
        raise AssertionError("torch.load must never be called")
    monkeypatch.setattr(torch, "load", no_pickle)
    C.load_checkpoint(tmp_path)
    C.load_train_state(tmp_path / "last")
    s = C.read_pointer(tmp_path / "last.json")
    torch.save(model.state_dict(), s / "model.safetensors", _use_new_zipfile_serialization=True)
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match="cannot read"):
        C.load_checkpoint(s)


# ---- failures during a save ----------------------------------------------------------

@pytest.mark.parametrize("failing", ["rename", "replace", "fsync"])
def test_a_failed_save_leaves_the_previous_set_whole(tmp_path, model, monkeypatch, failing):
    first = _save(tmp_path, model, 2, ("last", "best"))
    real = getattr(os, failing)

    def boom(*a, **k):
        raise OSError(f"disk full ({failing})")
    monkeypatch.setattr(C.os, failing, boom)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, model, 4, ("last", "best"))
    monkeypatch.setattr(C.os, failing, real)
    for name in ("last", "best"):
        assert C.read_pointer(tmp_path / f"{name}.json") == first
    C.verify(tmp_path / "last", resumable=True)
    # the next save removes what the failed one left
    third = _save(tmp_path, model, 6, ("last", "best"))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [third.name]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_clean_up_removes_leftovers_and_nothing_else(tmp_path, model):
    keep = _save(tmp_path, model, 2, ("last", "best"))
    sets = tmp_path / "checkpoints"
    leftovers = [sets / ".tmp-iter000004-deadbeef", sets / ".del-iter000001-deadbeef",
                 sets / "iter000003-deadbeef"]
    for d in leftovers:
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"x" * 100)
    for f in (tmp_path / ".last.json.abcd1234.tmp", tmp_path / ".log.jsonl.abcd1234.tmp",
              tmp_path / ".last.safetensors.abcd1234.tmp", tmp_path / "last.safetensors",
              tmp_path / "best.train.safetensors"):
        f.write_bytes(b"x")
        leftovers.append(f)
    mine = [tmp_path / "notes.txt", sets / "my_export", tmp_path / "last.safetensors.bak"]
    mine[0].write_text("mine")
    mine[1].mkdir()
    mine[2].write_text("mine")
    removed = C.clean_run_folder(tmp_path)
    assert len(removed) == len(leftovers)
    assert not any(p.exists() for p in leftovers)
    assert all(p.exists() for p in mine) and keep.is_dir()


def test_save_checkpoint_failure_keeps_the_two_files(tmp_path, model, monkeypatch):
    C.save_checkpoint(tmp_path / "m", model, classes=CLASSES)
    before = (tmp_path / "m.safetensors").read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(C.os, "replace", boom)
    with pytest.raises(OSError):
        C.save_checkpoint(tmp_path / "m", model, classes=CLASSES)
    monkeypatch.undo()
    assert (tmp_path / "m.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]


# ---- resuming ------------------------------------------------------------------------

def test_resume_falls_back_to_the_newest_complete_set_and_says_so(tmp_path, model):
    s1 = _save(tmp_path, model, 2, ("last", "best"))
    s2 = _save(tmp_path, model, 4)
    assert C.find_resume(True, tmp_path).ref.folder == s2
    (s2 / "train.safetensors").write_bytes((s2 / "train.safetensors").read_bytes()[:100])
    point = C.find_resume(True, tmp_path)
    assert point.ref.folder == s1
    assert "unusable" in point.note and "newest complete set" in point.note
    assert "iteration 2" in point.note
    # through the pointer file too; an explicitly named broken set is an error
    assert C.find_resume(str(tmp_path / "last.json"), tmp_path).ref.folder == s1
    assert C.find_resume(str(tmp_path), tmp_path / "elsewhere").ref.folder == s1
    with pytest.raises(CheckpointError, match="train.safetensors cannot be read"):
        C.find_resume(str(s2), tmp_path)
    # a set renamed into place whose pointer was never written is found as well
    (tmp_path / "last.json").unlink()
    shutil.rmtree(s2)
    s3 = tmp_path / "checkpoints" / "iter000006-0a0a0a0a"
    shutil.copytree(s1, s3)
    card = json.loads((s3 / "config.json").read_text())
    card["train_state"]["iteration"] = 6
    (s3 / "config.json").write_text(json.dumps(card))
    point = C.find_resume(True, tmp_path)
    assert point.ref.folder == s3 and "last.json is missing" in point.note


def test_nothing_to_resume(tmp_path):
    with pytest.raises(FileNotFoundError, match="no last checkpoint"):
        C.find_resume(True, tmp_path)


def test_truncate_log(tmp_path):
    log = tmp_path / "log.jsonl"
    recs = [{"iter": i, "loss": 1.0 / i} for i in range(1, 6)]
    log.write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"iter": 6, "lo')
    assert C.truncate_log(log, 3) == 3  # iterations 4, 5 and the torn line
    assert [json.loads(x)["iter"] for x in log.read_text().splitlines()] == [1, 2, 3]
    inode = log.stat().st_ino
    assert C.truncate_log(log, 3) == 0 and log.stat().st_ino == inode  # not rewritten


def test_resume_after_a_crash_mid_save_mends_the_run(tmp_path, monkeypatch, capsys):
    """A save that dies half-way (here: an exception at iteration 4's save) leaves the
    log with iterations 3-4 and a half-built set; resuming continues from iteration 2,
    cuts the log back, removes the leftovers, and ends where an unbroken run ends."""
    full = tmp_path / "full"
    train(tiny_config(full, iters=6, val_interval=2), progress=False)
    work = tmp_path / "work"
    real = C.os.rename

    def dies_at_4(src, dst):
        if "iter000004" in str(src):
            raise OSError("killed")
        return real(src, dst)
    monkeypatch.setattr(C.os, "rename", dies_at_4)
    with pytest.raises(OSError, match="killed"):
        train(tiny_config(work, iters=6, val_interval=2), progress=False)
    monkeypatch.setattr(C.os, "rename", real)
    iters = [json.loads(x)["iter"] for x in (work / "log.jsonl").read_text().splitlines()]
    assert max(iters) == 4 and any(p.name.startswith(".tmp-iter000004")
                                   for p in (work / "checkpoints").iterdir())
    capsys.readouterr()
    train(tiny_config(work, iters=6, val_interval=2), resume=True, progress=False)
    assert "at iteration 2" in capsys.readouterr().out
    strip = [{k: v for k, v in json.loads(x).items() if k not in ("time", "img_per_s")}
             for x in (work / "log.jsonl").read_text().splitlines()]
    ref = [{k: v for k, v in json.loads(x).items() if k not in ("time", "img_per_s")}
           for x in (full / "log.jsonl").read_text().splitlines()]
    assert strip == ref  # each record once, the same numbers
    assert _same_weights(C.load_checkpoint(work / "last")[0], C.load_checkpoint(full / "last")[0])
    names = [p.name for p in (work / "checkpoints").iterdir()]
    assert not [n for n in names if n.startswith(".")] and len(names) <= 2


def test_resume_continues_an_old_two_file_run(tmp_path):
    """A run folder of hfgd-lab < 0.3 (last.json a card beside last.safetensors) resumes;
    its first new save replaces the old files by a set and pointers."""
    work = tmp_path / "run"
    train(tiny_config(work, iters=2, val_interval=2), progress=False)
    # the old layout: the same files under the names 0.2 gave them, no pointers
    for name in ("last", "best"):
        folder = C.read_pointer(work / f"{name}.json")
        shutil.copy(folder / "model.safetensors", work / f"{name}.safetensors")
        if name == "last":
            shutil.copy(folder / "train.safetensors", work / "last.train.safetensors")
        (work / f"{name}.json").unlink()
        shutil.copy(folder / "config.json", work / f"{name}.json")
    shutil.rmtree(work / "checkpoints")
    assert C.find_resume(True, work).ref.card == work / "last.json"
    train(tiny_config(work, iters=4, val_interval=2), resume=True, progress=False)
    assert C.read_pointer(work / "last.json") is not None
    assert not (work / "last.safetensors").exists()
    assert not (work / "last.train.safetensors").exists()
    assert C.load_checkpoint(work / "last")[1]["train_state"]["iteration"] == 4


def test_tensorboard_events_after_the_resumed_iteration_are_purged(tmp_path, monkeypatch):
    made = []

    class FakeWriter:
        def __init__(self, log_dir, purge_step=None):
            made.append(purge_step)

        def add_scalar(self, *a):
            pass

        def close(self):
            pass
    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    train(tiny_config(tmp_path, iters=2, val_interval=2), progress=False)
    train(tiny_config(tmp_path, iters=3, val_interval=3), resume=True, progress=False)
    assert made == [None, 3]
