"""The notebooks run top to bottom (nbclient, this environment's kernel) in fast mode,
draw their figures, and their live widget panels answer every control.

They run against random-weight stand-ins of the bundled models (made here), so these
tests check the machinery, not the weights; one more runs the quickstart against the
real bundled models when they are installed.
"""
import json
import math
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest

from hfgd_lab import notebook as nb
from hfgd_lab.experiments.stop_gradient import STAGES, markdown_table, summarize
from hfgd_lab.zoo import write_stand_ins

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
REAL_WEIGHTS = ROOT / "hfgd_lab" / "weights"

# at least this many figures (image/png outputs) per notebook, stand-in weights, fast mode
MIN_FIGURES = {"01_quickstart.ipynb": 7, "02_feature_exploration.ipynb": 5,
               "03_stop_gradient_effect.ipynb": 4, "04_cae_attention.ipynb": 3}
# the live panels each notebook builds with nb.explore
PANELS = {"01_quickstart.ipynb": 0, "02_feature_exploration.ipynb": 3,
          "03_stop_gradient_effect.ipynb": 0, "04_cae_attention.ipynb": 2}
EXERCISE = ("import sys\nfrom hfgd_lab import notebook as _nb\n"
            "print('PREFIX', sys.prefix)\n"
            "print('PANELS', len(_nb.PANELS), _nb.exercise_panels())")


def fake_run(variant: str, seed: int, miou: float) -> dict:
    """One run result with the fields the summaries and figures read."""
    sg = variant == "hfgd_sg"
    hist = [{"iter": i, "mIoU": miou - 10 + 5 * j, "mAcc": 50.0, "aAcc": 80.0}
            for j, i in enumerate((10, 20, 30))]
    norms = {m: {"loss_high": 0.0 if variant == "semantic_fpn" else 0.1,
                 "loss_up": 0.0 if sg else 0.2} for m in ("backbone.C2", "backbone.C5")}
    norms["upsampler"] = {"loss_high": 0.0, "loss_up": 0.3}
    return {"variant": variant, "seed": seed, "seconds": 60.0,
            "val": {"mIoU": miou, "mAcc": 50.0, "aAcc": 80.0, "IoU": [miou] * 10},
            "best_val": {"iteration": 30, "mIoU": miou}, "history": hist,
            "train_mIoU": miou + 5, "cka": {s: 0.9 + 0.02 * sg for s in STAGES},
            "grad_norms": [{"iter": i, "norms": norms} for i in (1, 10, 20, 30)],
            "loss_curve": [{"iter": i, "loss": 1.0 / i, "loss_high": 0.5 / i, "loss_up": 0.5 / i}
                           for i in (10, 20, 30)]}


def write_fake_results(folder: Path, with_runs: bool = True) -> Path:
    """A stand-in of docs/results/sg_*.json ({"meta", "summary"}, plus "runs")."""
    runs = [fake_run(v, s, 60 + s + {"semantic_fpn": 0, "hfgd_nosg": 1, "hfgd_sg": 2}[v])
            for v in ("semantic_fpn", "hfgd_nosg", "hfgd_sg") for s in (0, 1, 2)]
    from hfgd_lab.engine import ExperimentConfig
    config = ExperimentConfig.from_yaml(ROOT / "configs" / "zoo" / "finetune.yaml").to_dict()
    data = {"meta": {"title": "fake regime (test)", "date": "2026-01-01", "machine": "test",
                     "wall_minutes": 1.0, "command": "none", "config": config},
            "summary": json.loads(json.dumps(summarize(runs)))}  # tuples -> lists, as on disk
    if with_runs:
        data["runs"] = runs
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sg_fake.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    root = tmp_path_factory.mktemp("notebooks")
    weights = write_stand_ins(root / "weights")
    results = root / "results"
    write_fake_results(results)
    return {"HFGD_LAB_WEIGHTS_DIR": str(weights), "HFGD_LAB_RESULTS_DIR": str(results),
            "HFGD_LAB_THREADS": "1"}


def outputs(notebook):
    for cell in notebook.cells:
        if cell.cell_type == "code":
            yield from cell.get("outputs", [])


def errors(notebook) -> list:
    return [f"{o.get('ename')}: {o.get('evalue')}" for o in outputs(notebook)
            if o.get("output_type") == "error"]


def figures(notebook) -> int:
    return sum("image/png" in o.get("data", {}) for o in outputs(notebook))


def text(notebook) -> str:
    parts = []
    for o in outputs(notebook):
        if o.get("output_type") == "stream":
            parts.append(o.get("text", ""))
        for kind in ("text/plain", "text/markdown"):
            if kind in o.get("data", {}):
                parts.append(o["data"][kind])
    return "\n".join(parts)


def run(name, tmp_path, env, exercise=True):
    """Execute a copy of notebook ``name`` in fast mode (never the stored file)."""
    copy = tmp_path / name
    copy.write_bytes((NOTEBOOKS / name).read_bytes())
    return nb.execute_notebook(copy, fast=True, env=env, inplace=False, timeout=300,
                               extra_cells=[EXERCISE] if exercise else [])


# ---- every notebook, fast mode, stand-in weights ------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", nb.NOTEBOOKS)
def test_notebook_runs_in_fast_mode(name, tmp_path, stand_ins):
    executed = run(name, tmp_path, stand_ins)
    assert errors(executed) == []
    assert figures(executed) >= MIN_FIGURES[name], figures(executed)
    out = text(executed)
    assert "FAST mode" in out and stand_ins["HFGD_LAB_WEIGHTS_DIR"] in out
    assert "random-weight" in out or name == "03_stop_gradient_effect.ipynb"
    # the kernel is this environment's interpreter, and the appended cell moved every
    # control of every live panel without an error
    assert f"PREFIX {sys.prefix}" in out
    assert f"PANELS {PANELS[name]}" in out
    if name == "03_stop_gradient_effect.ipynb":
        assert "checked: with sg, loss_up sends exactly 0 into" in out
        assert "fake regime (test)" in out  # the stored results were read and tabulated
        assert "200 labelled scenes of 192 px" in out
        assert "| HFGD sg |" in out


@pytest.mark.slow
def test_quickstart_with_the_real_bundled_models(tmp_path):
    # the trained weights are committed: their absence is a broken checkout, not a skip
    assert (REAL_WEIGHTS / "hfgd_scenes_sg.safetensors").is_file(), REAL_WEIGHTS
    executed = run("01_quickstart.ipynb", tmp_path, {"HFGD_LAB_WEIGHTS_DIR": None,
                                                     "HFGD_LAB_THREADS": "1"}, exercise=False)
    assert errors(executed) == []
    assert figures(executed) >= MIN_FIGURES["01_quickstart.ipynb"]
    out = text(executed)
    assert "stand-in" not in out and "models from hfgd_lab/weights (bundled)" in out
    assert "Trained on:" in out and "Validation mIoU" in out


# ---- the stored notebooks -----------------------------------------------------------

@pytest.mark.parametrize("name", nb.NOTEBOOKS)
def test_stored_notebook_is_small_valid_and_clean(name):
    path = NOTEBOOKS / name
    assert path.stat().st_size < 1.5e6, f"{name}: {path.stat().st_size / 1e6:.2f} MB"
    stored = nbformat.read(path, as_version=4)
    nbformat.validate(stored)
    assert stored.metadata["kernelspec"]["name"] == "python3"
    assert "widgets" not in stored.metadata  # the widget state is never stored
    assert errors(stored) == []
    # shipped executed (python notebooks/execute.py), so that GitHub shows the figures,
    # and executed with the real models at full size, not stand-ins or the CI size
    assert figures(stored) >= MIN_FIGURES[name], "run: python notebooks/execute.py"
    assert "random-weight" not in text(stored) and "FAST mode" not in text(stored)


# ---- the helpers --------------------------------------------------------------------

def test_fast_mode_switch(monkeypatch):
    monkeypatch.delenv(nb.FAST_ENV, raising=False)
    assert not nb.fast_mode() and nb.pick(full=10, fast=1) == 10
    for value in ("1", "true", "yes"):
        monkeypatch.setenv(nb.FAST_ENV, value)
        assert nb.fast_mode() and nb.pick(full=10, fast=1) == 1
    for value in ("0", "false", ""):
        monkeypatch.setenv(nb.FAST_ENV, value)
        assert not nb.fast_mode()


def test_describe_sg_summary_reports_either_way():
    runs = [fake_run(v, s, 60 + s + d) for v, d in (("hfgd_nosg", 0), ("hfgd_sg", 3))
            for s in (0, 1, 2)]
    text_sg_better = nb.describe_sg_summary(summarize(runs))
    assert "helped" in text_sg_better and "+3.0" in text_sg_better
    assert "exactly 0" in text_sg_better and "C2 0.920 vs 0.900" in text_sg_better
    runs = [fake_run(v, s, 60 + s + (d if s != 1 else -d)) for v, d in
            (("hfgd_nosg", 0), ("hfgd_sg", 3)) for s in (0, 1, 2)]
    assert "no measurable effect" in nb.describe_sg_summary(summarize(runs))
    # every seed the same way, but 3 seeds give a wide t-interval (4.30 s / sqrt 3 = 0.6):
    # a 2-sigma rule would call +0.33 +- 0.25 an effect; the paired t-interval does not
    runs = [fake_run(v, s, 60 + s + (d * (0.1, 0.6, 0.3)[s])) for v, d in
            (("hfgd_nosg", 0), ("hfgd_sg", 1)) for s in (0, 1, 2)]
    small = nb.describe_sg_summary(summarize(runs))
    assert "no measurable effect" in small and "interval ±0.6" in small
    one = [fake_run(v, 0, 60) for v in ("hfgd_nosg", "hfgd_sg")]
    assert "one seed" in nb.describe_sg_summary(summarize(one)).lower()
    # the JSON form (lists, NaN CKA for SemanticFPN) reads the same
    data = json.loads(json.dumps(summarize(runs)))
    assert nb.describe_sg_summary(data) == nb.describe_sg_summary(summarize(runs))
    assert "| HFGD sg |" in markdown_table(data)


def test_stand_in_zoo_loads(tmp_path, monkeypatch):
    from hfgd_lab import zoo
    folder = write_stand_ins(tmp_path / "w")
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", folder)
    assert zoo.list_pretrained() == ["hfgd_scenes_sg", "hfgd_scenes_nosg", "semantic_fpn_scenes"]
    p = zoo.load_pretrained()
    assert p.card["stand_in"] and len(p.classes) == 10 and p.palette.shape == (10, 3)
    assert "random-weight stand-in" in nb.describe_card(p.name, p.card)
    assert (folder / "scenes_backbone.safetensors").is_file()


def test_figure_helpers_and_cache(tmp_path):
    import torch

    from hfgd_lab import HFGDConfig, build_model
    torch.manual_seed(0)
    model = build_model(HFGDConfig(backbone="convnext_atto", num_classes=10, embed_dim=32,
                                   cae_heads=4, decoder_channels=16)).eval()
    samples = nb.scene_samples(2, size=64) + nb.photo_samples(("flower.jpg",), max_side=48)
    assert samples[0].mask.shape == (64, 64) and samples[0].background.shape == (64, 64)
    assert max(samples[2].image.shape[:2]) == 48 and samples[2].image.flags.writeable
    cache = nb.AnalysisCache(model, samples)
    a = cache["scene 0"]
    assert cache["scene 0"] is a and cache.forward_passes == 1
    calls = []
    assert cache.derived("scene 0", "x", lambda a: calls.append(1) or 5) == 5
    assert cache.derived("scene 0", "x", lambda a: calls.append(1) or 6) == 5 and calls == [1]
    areas = nb.class_areas(a.pred, 10)
    assert areas.shape == (10,) and math.isclose(areas.sum(), 1.0)
    from hfgd_lab.data.scenes import SCENE_CLASSES, SCENE_PALETTE
    png = nb.figure_png(nb.plot_class_areas({"scene 0": areas}, SCENE_CLASSES, SCENE_PALETTE))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    grid = nb.plot_prediction_grid({n: cache[n] for n in cache.names}, SCENE_CLASSES,
                                   SCENE_PALETTE)
    assert len(grid.axes) == 3 * 4
    assert nb.figure_png(grid, colors=None)[:4] == b"\x89PNG"
    import io

    from PIL import Image
    Image.fromarray(samples[0].image).resize((400, 300)).save(tmp_path / "figure.png")
    small = Image.open(io.BytesIO(nb.image_file_png(tmp_path / "figure.png", max_side=100)))
    assert small.size == (100, 75) and small.mode == "P"


def test_panel_renders_once_per_setting_and_reports_errors():
    pytest.importorskip("ipywidgets")
    import ipywidgets as widgets
    from matplotlib.figure import Figure
    seen = []

    def view(k, name):
        seen.append((k, name))
        if k == 3:
            raise ValueError("no such class")
        fig = Figure(figsize=(1, 1))
        fig.subplots().plot([0, k])
        return [fig, f"class {k}"]

    panel = nb.Panel(view, {"k": widgets.IntSlider(value=0, min=0, max=2),
                            "name": widgets.Dropdown(options=["a", "b"], value="a")})
    assert panel.renders == 1  # interactive_output draws once on creation
    items = panel.render(k=0, name="a")
    assert panel.renders == 1 and items[0][:4] == b"\x89PNG" and items[1] == "class 0"
    assert panel.exercise() == 4 and panel.error is None
    assert panel.renders == 3  # (2, a) and (0, b) new; going back came from the cache
    panel.controls["k"].max = 3
    with pytest.raises(RuntimeError, match="no such class"):
        panel.exercise()


def test_execute_script_selects_notebooks():
    sys.path.insert(0, str(NOTEBOOKS))
    try:
        import execute
    finally:
        sys.path.remove(str(NOTEBOOKS))
    with pytest.raises(SystemExit):
        execute.main(["99_nothing"])


def test_stored_sg_results_from_files_and_from_the_card(tmp_path, monkeypatch):
    from hfgd_lab import zoo
    write_fake_results(tmp_path / "docs" / "results", with_runs=False)
    (tmp_path / "docs" / "figures").mkdir()
    (tmp_path / "docs" / "figures" / "sg_fake_summary.png").write_bytes(b"\x89PNG")
    monkeypatch.setenv(nb.RESULTS_ENV, str(tmp_path / "docs" / "results"))
    [r] = nb.stored_sg_results()
    assert r["title"] == "fake regime (test)" and r["runs"] is None
    assert r["figure"].name == "sg_fake_summary.png"
    assert r["regime"].startswith("200 labelled scenes of 192 px, 400 iterations of batch 8")
    # no files: the default model's card carries the summary (mean/std per variant)
    folder = write_stand_ins(tmp_path / "w")
    card_path = folder / "hfgd_scenes_sg.json"
    card = json.loads(card_path.read_text())
    runs = [fake_run(v, s, 60.0 + s) for v in ("hfgd_nosg", "hfgd_sg") for s in (0, 1)]
    card["sg_experiment"] = {"title": "from card", "seeds": 2, "variants": {
        v: {k: {"mean": row[k][0], "std": row[k][1]} for k in row if k != "seeds"}
        for v, row in summarize(runs)["variants"].items()}}
    card_path.write_text(json.dumps(card))
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", folder)
    monkeypatch.setenv(nb.RESULTS_ENV, str(tmp_path / "empty"))
    [r] = nb.stored_sg_results()
    assert r["title"] == "from card" and "card of hfgd_scenes_sg" in r["source"]
    assert "| HFGD sg |" in markdown_table(r["summary"])
    assert "mean over 2 seeds" in nb.describe_sg_summary(r["summary"])
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path / "nothing")
    assert nb.stored_sg_results() == []


def test_experiment_figures_draw_the_seed_means():
    """The curves are the mean over seeds of each variant (the band its spread), and the
    loss panel is log-scaled: what the docs' figures and notebook 03 show."""
    from hfgd_lab.viz.experiment import plot_experiment, plot_loss_curves, plot_val_curves

    runs = [fake_run(v, s, 60.0 + 2 * s) for v in ("hfgd_nosg", "hfgd_sg") for s in (0, 1, 2)]
    fig = plot_val_curves(runs)
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    assert set(lines) == {"HFGD no-sg", "HFGD sg"}
    # fake history: mIoU - 10 + 5 j at iterations 10, 20, 30; seeds give 60, 62, 64
    np.testing.assert_allclose(lines["HFGD sg"].get_xdata(), [10, 20, 30])
    np.testing.assert_allclose(lines["HFGD sg"].get_ydata(), [52.0, 57.0, 62.0])
    assert len(fig.axes[0].collections) == 2  # one std band per variant
    loss = plot_loss_curves(runs).axes[0]
    assert loss.get_yscale() == "log" and loss.get_title() == "training loss_up"
    assert len(plot_experiment(runs).axes) == 4
