"""The app's benchmarks run end to end at a tiny size (their real runs, with the figures,
are in docs/benchmarks.md): the soak answers every request as expected and reports the
memory levels it is judged on; the latency benchmark times the API and the in-process
handlers."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_soak_runs_and_reports_memory_levels(tmp_path):
    soak = _load("app_soak")
    out = tmp_path / "soak.json"
    r = soak.main(["--requests", "40", "--clients", "3", "--images", "12", "--seconds", "900",
                   "--json", str(out)])
    assert r["requests"] >= 40 and r["server_alive"]
    assert r["unexpected_count"] == 0, r["unexpected"]
    assert r["outcomes"].get("bad_input/error", 0) == r["by_action"].get("bad_input", 0)
    assert r["rss_idle_mb"] > 0 and r["rss_peak_mb"] >= r["rss_idle_mb"] * 0.9
    assert r["bound_mb"] == pytest.approx(r["rss_idle_mb"] + r["cache_mb"] + 300)
    assert len(r["levels"]) == 10 and isinstance(r["levelled_off"], bool)
    assert json.loads(out.read_text())["requests"] == r["requests"]


@pytest.mark.slow
def test_latency_benchmark_runs(tmp_path):
    latency = _load("app_latency")
    r = latency.main(["--repeats", "2", "--no-browser", "--no-huge", "--max-side", "256",
                      "--json", str(tmp_path / "latency.json")])
    for kind in ("scene 192 px", "photo, cap 256"):
        assert r["api"][kind]["first_result"]["n"] == 2
        assert r["api"][kind]["click"]["n"] == 4
        assert r["in_process"][kind]["click"]["median_ms"] > 0
