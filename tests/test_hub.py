"""Hub-style model folders (issue 17, sharing): a model trained with ``hfgd-lab train``
goes to a folder and back to identical logits, loads through ``from_pretrained`` (what
the app and the notebooks use), from a Hub repo id through the local cache when
offline, and the two-file checkpoints still load and convert."""
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import hfgd_lab
from hfgd_lab import HFGDConfig, build_model, from_pretrained
from hfgd_lab.cli import main
from hfgd_lab.engine import hub
from hfgd_lab.engine.checkpoint import CheckpointError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_engine import TINY_MODEL, tiny_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FOLDER_FILES = ["README.md", "config.json", "model.safetensors"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny model trained with ``hfgd-lab train`` (4 iterations, a set every 2)."""
    tmp = tmp_path_factory.mktemp("hub")
    tiny_config(tmp / "unused", iters=4, val_interval=2).to_yaml(tmp / "tiny.yaml")
    assert main(["train", str(tmp / "tiny.yaml"), "--work-dir", str(tmp / "run"),
                 "--no-progress"]) == 0
    return tmp / "run"


@pytest.fixture
def no_pickle(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("torch.load must never be called")
    monkeypatch.setattr(torch, "load", refuse)


def _logits(loaded, seed=0):
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return loaded.model(x).logits


def test_trained_model_goes_to_a_folder_and_back_to_identical_logits(run, tmp_path, no_pickle,
                                                                      capsys):
    out = tmp_path / "my_model"
    assert main(["convert", str(run), str(out)]) == 0
    assert "from_pretrained" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == FOLDER_FILES
    from_run, from_folder = from_pretrained(run / "best"), from_pretrained(out)
    assert torch.equal(_logits(from_run), _logits(from_folder))
    assert from_folder.source == "checkpoint" and from_folder.name == "my_model"
    assert from_folder.classes == from_run.classes
    assert np.array_equal(from_folder.palette, from_run.palette)
    image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    for a, b in zip(from_run.segment(image), from_folder.segment(image)):
        assert np.array_equal(a, b)
    card = json.loads((out / "config.json").read_text())
    assert "train_state" not in card  # a shared folder carries no optimizer state
    assert card["normalization"] == {"mean": from_run.normalization[0],
                                     "std": from_run.normalization[1]}
    assert card["training"]["iterations"] == 4 and card["experiment"]["train"]["iters"] == 4
    assert card["metrics"]["mIoU"] == from_run.card["metrics"]["mIoU"]
    readme = (out / "README.md").read_text()
    assert readme.startswith("---\nlibrary_name: hfgd-lab\n")
    assert "dataset 'scenes', split 'train'" in readme           # what it was trained on
    assert f"| mIoU | {card['metrics']['mIoU']:.2f} |" in readme  # metrics ...
    assert f"`hfgd-lab train {run / 'config.yaml'}`" in readme   # ... with their command
    assert "random initialisation" in readme                     # backbone weights' origin
    assert f"hfgd_lab.from_pretrained({str(out)!r})" in readme   # usage
    assert "| 4 | bird | (220, 220, 0) |" in readme


def test_run_best_last_and_set_folders_load(run, no_pickle):
    best = from_pretrained(run)
    assert best.name == f"{run.name}/best" and best.output_stem == run / "best"
    assert best.val_miou() == best.card["metrics"]["mIoU"]
    assert "Trained on: dataset 'scenes'" in best.describe()
    last = from_pretrained(run / "last.json")
    assert last.card["train_state"]["iteration"] == 4
    set_folder = run / json.loads((run / "last.json").read_text())["checkpoint"]
    assert torch.equal(_logits(from_pretrained(set_folder)), _logits(last))


def test_save_pretrained_of_a_bare_model(tmp_path, no_pickle):
    torch.manual_seed(1)
    model = build_model(HFGDConfig(**{**TINY_MODEL, "num_classes": 3})).eval()
    folder = hfgd_lab.save_pretrained(model, tmp_path / "bare", classes=["a", "b", "c"],
                                      palette=[[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    loaded = from_pretrained(folder)
    with torch.no_grad():
        expected = model(torch.randn(2, 3, 64, 96,
                                     generator=torch.Generator().manual_seed(0))).logits
    assert torch.equal(_logits(loaded), expected)
    assert loaded.classes == ("a", "b", "c") and loaded.palette.tolist()[2] == [7, 8, 9]
    readme = (folder / "README.md").read_text()
    assert "does not say what it was trained on" in readme and "No metrics recorded" in readme
    # saved again: an hfgd-lab folder is updated in place, a README the user wrote stays
    (folder / "README.md").write_text("# my own words\n")
    hfgd_lab.save_pretrained(model, folder, classes=["a", "b", "c"])
    assert (folder / "README.md").read_text() == "# my own words\n"
    assert sorted(p.name for p in folder.iterdir()) == FOLDER_FILES
    assert not list(tmp_path.glob(".tmp-*"))


def test_model_card_names_the_backbone_weights_licence(tmp_path):
    from hfgd_lab.models.weights import PACKAGED, packaged_weights_path
    assert packaged_weights_path("tf_efficientnet_lite0") is not None, "package not installed"
    model = build_model(HFGDConfig(backbone="tf_efficientnet_lite0", pretrained=True,
                                   num_classes=3, embed_dim=32, cae_heads=4, cae_depth=1,
                                   decoder_channels=32)).eval()
    hfgd_lab.save_pretrained(model, tmp_path / "lite0")
    readme = (tmp_path / "lite0" / "README.md").read_text()
    entry = PACKAGED["tf_efficientnet_lite0"]
    assert entry.license == "Apache-2.0" and "\nlicense: apache-2.0\n" in readme
    assert f"licence **{entry.license}**" in readme and entry.pip in readme
    card = json.loads((tmp_path / "lite0" / "config.json").read_text())
    assert card["normalization"] == {"mean": [0.5] * 3, "std": [0.5] * 3}  # tf_ backbone's


def test_two_file_checkpoints_convert_and_still_load(tmp_path, no_pickle, capsys):
    from hfgd_lab.engine.zoo import write_stand_ins
    write_stand_ins(tmp_path / "zoo", names=("hfgd_lite0_sg",))
    stem = tmp_path / "zoo" / "hfgd_lite0_sg"
    two_files = from_pretrained(stem)
    for typed, half in ((stem, False), (f"{stem}.json", True)):
        out = tmp_path / f"converted_{half}"
        assert main(["convert", str(typed), str(out)] + (["--half"] if half else [])) == 0
        folder = from_pretrained(out)
        assert torch.equal(_logits(folder), _logits(two_files))  # fp16 weights: exact both ways
        assert "A random-weight stand-in" in (out / "README.md").read_text()
    size = {h: (tmp_path / f"converted_{h}" / "model.safetensors").stat().st_size
            for h in (False, True)}
    assert size[True] < 0.6 * size[False]


def test_convert_refuses_what_it_did_not_write(run, tmp_path, capsys):
    a_file = tmp_path / "model.bin"
    a_file.write_bytes(b"mine")
    assert main(["convert", str(run), str(a_file)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is an existing file" in err and len(err.splitlines()) == 1
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "config.json").write_text('{"model_type": "bert"}')
    (theirs / "README.md").write_text("their card")
    assert main(["convert", str(run), str(theirs)]) == 2
    err = capsys.readouterr().err
    assert "config.json, README.md" in err and "--overwrite" in err
    assert (theirs / "README.md").read_text() == "their card"
    assert sorted(p.name for p in theirs.iterdir()) == ["README.md", "config.json"]
    assert main(["convert", str(run), str(theirs), "--overwrite"]) == 0
    assert sorted(p.name for p in theirs.iterdir()) == FOLDER_FILES
    assert main(["convert", str(run), str(theirs)]) == 0  # ours now: updated in place
    assert main(["convert", str(tmp_path / "nothing_here"), str(tmp_path / "x")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# ---- the Hugging Face Hub --------------------------------------------------------------

def _put_in_hub_cache(folder: Path, repo_id: str, hf_home: Path) -> str:
    """Lay ``folder`` out as huggingface_hub's cache stores a downloaded snapshot:
    ``hub/models--OWNER--NAME/{blobs/<sha256>, snapshots/<commit>/<file> -> blob,
    refs/main}`` (https://huggingface.co/docs/huggingface_hub/guides/manage-cache)."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in folder.iterdir():
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return commit


def test_repo_id_offline_resolves_from_the_local_cache_only(run, tmp_path):
    folder = tmp_path / "tiny"
    from_pretrained(run).save_pretrained(folder)
    hf_home = tmp_path / "hf_home"
    commit = _put_in_hub_cache(folder, "someone/tiny-hfgd", hf_home)
    script = textwrap.dedent(f"""
        import json, sys, torch
        import huggingface_hub
        from hfgd_lab import from_pretrained
        from hfgd_lab.engine.checkpoint import CheckpointError
        torch.load = None  # never unpickle
        info = huggingface_hub.scan_cache_dir()
        assert [r.repo_id for r in info.repos] == ["someone/tiny-hfgd"], info
        m = from_pretrained("someone/tiny-hfgd")
        x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            a = m.model(x).logits
            b = from_pretrained({str(folder)!r}).model(x).logits
        try:
            from_pretrained("someone/not-cached")
            missing = None
        except CheckpointError as e:
            missing = str(e)
        print(json.dumps({{"equal": bool(torch.equal(a, b)), "source": m.source,
                          "name": m.name, "key": m.key, "stem": str(m.output_stem),
                          "missing": missing}}))
    """)
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    env.pop("HF_HUB_CACHE", None)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["equal"] and res["source"] == "hub" and res["name"] == "someone/tiny-hfgd"
    assert f"snapshots/{commit}/config.json" in res["key"]
    assert res["stem"] == "someone--tiny-hfgd"  # outputs never go into the Hub cache
    assert "'someone/not-cached' is not in the local Hugging Face cache" in res["missing"]
    assert "HF_HUB_OFFLINE is set" in res["missing"]
    # the command line says it in one line
    proc = subprocess.run([sys.executable, "-m", "hfgd_lab.cli", "convert", "someone/not-cached",
                           str(tmp_path / "out")], env=env, capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "not in the local Hugging Face cache" in proc.stderr


class FakeHfApi:
    """Records what would go to the Hub (no network in tests)."""

    calls = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, private=None, exist_ok=False):
        FakeHfApi.calls.append(("create_repo", repo_id, private, exist_ok))

    def upload_folder(self, repo_id, folder_path, allow_patterns=None, revision=None,
                      commit_message=None):
        files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
        FakeHfApi.calls.append(("upload_folder", repo_id, files, commit_message))
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/1"})


def test_push_to_hub_uploads_the_model_folder(run, monkeypatch):
    FakeHfApi.calls = []
    monkeypatch.setattr(hub, "HfApi", FakeHfApi)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    loaded = from_pretrained(run)
    url = loaded.push_to_hub("someone/tiny-hfgd", private=True)
    assert url == "https://huggingface.co/someone/tiny-hfgd/commit/1"
    (_, repo, private, exist_ok), (_, repo2, files, _) = FakeHfApi.calls
    assert repo == repo2 == "someone/tiny-hfgd" and private and exist_ok
    assert sorted(files) == FOLDER_FILES
    assert "hfgd_lab.from_pretrained('someone/tiny-hfgd')" in files["README.md"].decode()
    assert json.loads(files["config.json"])["classes"] == list(loaded.classes)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE is set"):
        loaded.push_to_hub("someone/tiny-hfgd")


# ---- the README's "Share a model" ------------------------------------------------------

def _readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_readme_share_a_model_commands_run(run, tmp_path, monkeypatch):
    section = _readme_section("Share a model")
    bash = re.findall(r"```bash\n(.*?)```", section, re.S)
    python = re.findall(r"```python\n(.*?)```", section, re.S)
    commands = [line.split("#")[0].strip() for block in bash for line in block.splitlines()
                if line.strip().startswith("hfgd-lab ")]
    assert len(commands) >= 2 and python
    # the run the section starts from, where the section says it is
    src = re.search(r"hfgd-lab convert (runs/\S+?)/best", section).group(1)
    shutil.copytree(run, tmp_path / src)
    monkeypatch.chdir(tmp_path)
    for cmd in commands:
        assert main(shlex.split(cmd)[1:]) == 0, cmd
    folder = Path(re.search(r"hfgd-lab convert \S+ (\S+)", section).group(1))
    assert sorted(p.name for p in folder.iterdir()) == FOLDER_FILES  # eval wrote beside it
    FakeHfApi.calls = []
    monkeypatch.setattr(hub, "HfApi", FakeHfApi)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for block in python:
        exec(compile(block, "README.md", "exec"), {})
    assert [c[0] for c in FakeHfApi.calls] == ["create_repo", "upload_folder"]


def test_model_card_of_a_zoo_file_names_the_command_that_scored_it():
    """Bundled models' cards carry ``provenance.command`` (the model-zoo build that
    trained and scored them) instead of a training summary; their metrics are val_*."""
    card = {"config": {"backbone": "tf_efficientnet_lite0", "arch": "hfgd", "output_stride": 4,
                       "num_classes": 2, "image_mean": [0.5] * 3, "image_std": [0.5] * 3},
            "metrics": {"val_mIoU": 80.123, "val_images": 96}, "dataset": "scenes",
            "classes": ["a", "b"], "trained_on": "200 labelled scenes",
            "provenance": {"command": "python benchmarks/stop_gradient.py --bundle",
                           "date": "2026-11-30"},
            "backbone_pretraining": {"weights": "packaged:p", "source": "ImageNet-1k",
                                     "license": "Apache-2.0", "package": "p"}}
    text = hub.model_card(card, "zoo_model")
    assert "\nlicense: apache-2.0\n" in text and "| mIoU | 80.12 |" in text
    assert "Made with `python benchmarks/stop_gradient.py --bundle` (2026-11-30)." in text
    assert "96 images by `python benchmarks/stop_gradient.py --bundle`" in text
    assert "Input: RGB pixels scaled to [0, 1], normalised with mean [0.5, 0.5, 0.5]" in text
