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


def test_bench_command_and_script_wrapper(capsys):
    from hfgd_lab.cli import main
    assert main(["bench", "--size", "64", "--repeats", "1", "--warmup", "0", "--models",
                 "hfgd_os8", "--variants", "native", "--quiet"]) == 0
    assert "HFGD OS8" in capsys.readouterr().out
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--num-classes" in out
