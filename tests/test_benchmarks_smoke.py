"""benchmarks/speed.py runs end to end on a tiny input (a smoke test, not a timing)."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_speed():
    spec = importlib.util.spec_from_file_location("bench_speed", ROOT / "benchmarks" / "speed.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up here
    spec.loader.exec_module(mod)
    return mod


def test_speed_smoke(tmp_path, capsys):
    pytest.importorskip("segmentation_models_pytorch")
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
    pytest.importorskip("segmentation_models_pytorch")
    speed = load_speed()
    speed.main(["--size", "64", "--repeats", "1", "--warmup", "0", "--models", "hfgd_os4",
                "--variants", "native", "--markdown", "--quiet"])
    text = capsys.readouterr().out
    assert "| HFGD OS4 | 1/4 |" in text
