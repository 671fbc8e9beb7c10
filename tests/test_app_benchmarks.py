"""The app's benchmarks run end to end at a tiny size (their real runs, with the figures,
are in docs/benchmarks.md): the soak answers every request as expected and reports the
memory levels it is judged on; the latency benchmark times the API and the in-process
handlers. The server keeps a bounded number of Gradio sessions (the soak's growth with
the bundled models)."""
import importlib.util
import json
import os
import subprocess
import sys
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


# Serves the app in this child process with a small session cap, makes API calls (each is
# a new Gradio session) and prints how many sessions the server keeps.
SESSIONS_SCRIPT = r"""
import json, sys
import httpx
from hfgd_lab.app import server
from hfgd_lab.app.testing import free_port
server.SESSIONS = 3
demo, url = server.serve(port=free_port(), block=False, warmup=False)
answers = []
for name in ["hfgd_lite0_sg", "semantic_fpn_lite0"] * 4:
    eid = httpx.post(url + "gradio_api/call/load_model", json={"data": [name]},
                     timeout=300).json()["event_id"]
    text = httpx.get(f"{url}gradio_api/call/load_model/{eid}", timeout=300).text
    answers.append("event: complete" in text)
print(json.dumps({"answers": answers, "sessions": len(demo.state_holder.session_data),
                  "capacity": demo.state_session_capacity}))
demo.close()
"""


@pytest.mark.slow
def test_server_keeps_a_bounded_number_of_sessions(tmp_path):
    """Every API call is a new Gradio session, and Gradio keeps a copy of the page's
    configuration per session (10000 by default): the soak's RSS grew ~25 MB per 100
    requests with the bundled models until server.SESSIONS capped them."""
    from hfgd_lab.engine.zoo import write_stand_ins
    weights = write_stand_ins(tmp_path / "weights")
    env = dict(os.environ, HFGD_LAB_WEIGHTS_DIR=str(weights), GRADIO_ANALYTICS_ENABLED="False",
               HF_HUB_OFFLINE="1", NO_PROXY="127.0.0.1,localhost", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", SESSIONS_SCRIPT], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    # demo.close() prints a line of its own after the result
    r = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("{")))
    assert r["answers"] == [True] * 8
    assert r["capacity"] == 3 and r["sessions"] <= 3, r
