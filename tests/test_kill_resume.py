"""Kill a training run anywhere, resume, and get the uninterrupted run's weights bit
for bit (issue 16: "Checkpoints survive any kill").

The kill is injected, not timed: every file operation of the save machinery (and each
iteration and log line) is a numbered ``fault_point``; ``HFGD_LAB_KILL_AT=N`` ends the
process there with ``os._exit`` (see hfgd_lab/engine/checkpoint.py).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hfgd_lab.engine.checkpoint import KILL_ENV, KILL_EXIT_CODE, TRACE_ENV, load_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_engine import tiny_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# every kind of point the save / resume machinery passes
KINDS = {"mkdir", "create", "half-written write", "fsync", "rename", "replace", "remove",
         "half-done removal", "saved", "iteration", "half-written log line"}


@pytest.mark.slow
def test_killed_at_every_point_resume_is_bit_identical(tmp_path):
    out = tmp_path / "result.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kill_resume.py"),
                           "--out", str(out), "--jobs", "2", "--work", str(tmp_path / "w")],
                          env=env, capture_output=True, text=True, timeout=1500)
    assert out.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["failures"] == [], json.dumps(res["failures"], indent=1)[:3000]
    assert proc.returncode == 0
    assert res["bit_identical"] == res["cases"] >= res["points_in_run"] > 60
    # every point of the run was a kill point, inside every kind of file operation
    assert set(res["by_kind"]) == KINDS
    labels = [t.split("\t", 1)[1] for t in res["trace"]]
    assert sum(x.startswith("saved ") for x in labels) == 3  # three whole saves killed into
    assert res["double_kill_cases"] >= 12
    # some kills left no checkpoint (start afresh); some left a set without pointer
    # (resume takes the newest complete set, and says so)
    assert res["fresh_starts"] > 0 and res["fallbacks_said"] > 0


def _cli(args, env, cwd):
    return subprocess.run([sys.executable, "-m", "hfgd_lab.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_hfgd_lab_train_killed_inside_a_save_resumes_and_says_so(tmp_path):
    """Through the real command line: killed after the first set was renamed into
    place but before ``last.json`` pointed at it, ``hfgd-lab train --resume`` takes that
    newest complete set, says so, and ends with the uninterrupted run's weights. (A set
    renamed in while an older ``last.json`` exists is not taken: the pointer is the
    commit, and the iterations after it are run again -- the harness checks that.)"""
    cfg = tmp_path / "tiny.yaml"
    tiny_config(tmp_path / "unused", iters=4, val_interval=2).to_yaml(cfg)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(KILL_ENV, None)
    trace = tmp_path / "trace.tsv"
    ref = _cli(["train", str(cfg), "--work-dir", str(tmp_path / "ref"), "--no-progress"],
               {**env, TRACE_ENV: str(trace)}, tmp_path)
    assert ref.returncode == 0, ref.stderr[-2000:]
    points = [line.split("\t") for line in trace.read_text().splitlines()]
    n = [int(i) for i, label in points if label == "fsync folder checkpoints"][0]
    killed = _cli(["train", str(cfg), "--work-dir", str(tmp_path / "run"), "--no-progress"],
                  {**env, KILL_ENV: str(n)}, tmp_path)
    assert killed.returncode == KILL_EXIT_CODE, killed.stderr[-2000:]
    assert not (tmp_path / "run" / "last.json").exists()
    assert [p.name[:10] for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["iter000002"]
    resumed = _cli(["train", str(cfg), "--work-dir", str(tmp_path / "run"), "--no-progress",
                    "--resume"], env, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "newest complete set" in resumed.stderr and "iteration 2" in resumed.stderr
    a = load_checkpoint(tmp_path / "ref" / "last")[0].state_dict()
    b = load_checkpoint(tmp_path / "run" / "last")[0].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
