"""The notebooks run top to bottom (nbclient, this environment's kernel) in fast mode,
draw readable figures, label the static copy of every live view and drop it once a control
moves, and their live widget panels answer every control.

They run against random-weight stand-ins of the bundled models (made here), so these
tests check the machinery, not the weights; one more runs the quickstart against the
real bundled models, and the stored notebooks must be executed with them.
"""
import ast
import json
import math
import re
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
import yaml
from matplotlib.figure import Figure

from hfgd_lab import notebook as nb
from hfgd_lab.analysis.scores import class_areas
from hfgd_lab.data.samples import scene_samples
from hfgd_lab.engine import zoo
from hfgd_lab.engine.zoo import write_stand_ins
from hfgd_lab.experiments import stop_gradient as sg
from hfgd_lab.experiments.stop_gradient import (STAGES, describe_summary, markdown_table,
                                                stored_results, summarize)
from hfgd_lab.viz import MIN_FONT

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
REAL_WEIGHTS = ROOT / "hfgd_lab" / "weights"

# at least this many figures (image/png outputs) per notebook, stand-in weights, fast mode
MIN_FIGURES = {"01_quickstart.ipynb": 7, "02_feature_exploration.ipynb": 5,
               "03_stop_gradient_effect.ipynb": 4, "04_cae_attention.ipynb": 3}
# of which outside the static copies of live views (what stays once a control moved)
FIXED_FIGURES = {"01_quickstart.ipynb": 7, "02_feature_exploration.ipynb": 1,
                 "03_stop_gradient_effect.ipynb": 4, "04_cae_attention.ipynb": 1}
# the live panels each notebook builds with nb.explore
PANELS = {"01_quickstart.ipynb": 0, "02_feature_exploration.ipynb": 3,
          "03_stop_gradient_effect.ipynb": 0, "04_cae_attention.ipynb": 2}
EXERCISE = ("import sys\nfrom hfgd_lab import notebook as _nb\n"
            "print('PREFIX', sys.prefix)\n"
            "print('STATIC_SHOWN', sum(p.static_shown for p in _nb.PANELS))\n"
            "print('PANELS', len(_nb.PANELS), _nb.exercise_panels())\n"
            "print('STATIC_LEFT', sum(p.static_shown for p in _nb.PANELS))\n"
            "print('FONTS', min(s for s, _ in _nb.RENDERED), sorted({d for _, d in _nb.RENDERED}))")
MIN_TEXT_PX = 12   # the smallest text of every figure shown, in pixels: 8 pt at 110 dpi


def fake_run(variant: str, seed: int, miou: float) -> dict:
    """One run result with the fields the summaries and figures read."""
    sg_on = variant == "hfgd_sg"
    hist = [{"iter": i, "mIoU": miou - 10 + 5 * j, "mAcc": 50.0, "aAcc": 80.0}
            for j, i in enumerate((10, 20, 30))]
    norms = {m: {"loss_high": 0.0 if variant == "semantic_fpn" else 0.1,
                 "loss_up": 0.0 if sg_on else 0.2} for m in ("backbone.C2", "backbone.C5")}
    norms["upsampler"] = {"loss_high": 0.0, "loss_up": 0.3}
    return {"variant": variant, "seed": seed, "seconds": 60.0,
            "val": {"mIoU": miou, "mAcc": 50.0, "aAcc": 80.0, "IoU": [miou] * 10},
            "best_val": {"iteration": 30, "mIoU": miou}, "history": hist,
            "train_mIoU": miou + 5, "cka": {s: 0.9 + 0.02 * sg_on for s in STAGES},
            "grad_norms": [{"iter": i, "norms": norms} for i in (1, 10, 20, 30)],
            "loss_curve": [{"iter": i, "loss": 1.0 / i, "loss_high": 0.5 / i, "loss_up": 0.5 / i}
                           for i in (10, 20, 30)]}


def write_fake_results(folder: Path, with_runs: bool = True) -> Path:
    """A stand-in of docs/results/sg_<regime>.json ({"meta", "summary"}, plus "runs")."""
    runs = [fake_run(v, s, 60 + s + {"semantic_fpn": 0, "hfgd_nosg": 1, "hfgd_sg": 2}[v])
            for v in ("semantic_fpn", "hfgd_nosg", "hfgd_sg") for s in (0, 1, 2)]
    from hfgd_lab.engine import ExperimentConfig
    config = ExperimentConfig.from_yaml(ROOT / "configs" / "zoo" / "finetune.yaml").to_dict()
    data = {"meta": {"regime": "fake", "title": "fake regime (test)", "order": 0,
                     "question": "does the notebook read the stored results?",
                     "date": "2026-01-01", "machine": "test", "wall_minutes": 1.0,
                     "command": "none", "config": config},
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


def markdown_outputs(notebook) -> list:
    return [o["data"]["text/markdown"] for o in outputs(notebook)
            if "text/markdown" in o.get("data", {})]


DEADLINE = 240   # s per fast-mode run: each takes 15-40 s alone on 2 cores
RETRIES = 3


def run(name, tmp_path, env, exercise=True):
    """Execute a copy of notebook ``name`` in fast mode (never the stored file)."""
    copy = tmp_path / name
    copy.write_bytes((NOTEBOOKS / name).read_bytes())
    kw = dict(fast=True, env=env, inplace=False, timeout=600,
              extra_cells=[EXERCISE] if exercise else [], deadline=DEADLINE)
    for attempt in range(RETRIES):
        try:
            return nb.execute_notebook(copy, **kw)
        except nb.NotebookTimeout as e:
            # nbclient can be left waiting on an idle kernel in a cell with widgets
            # (jupyter/nbclient#312; seen here on an idle machine too): retry; a notebook
            # that really hangs fails every attempt
            print(f"attempt {attempt + 1} of {RETRIES}: {e}", file=sys.stderr)
    raise AssertionError(f"{name}: not finished in {RETRIES} attempts of {DEADLINE} s")


def static_label_start() -> str:
    return nb.STATIC_LABEL.split("{")[0]


# ---- every notebook, fast mode, stand-in weights ------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", nb.NOTEBOOKS)
def test_notebook_runs_in_fast_mode(name, tmp_path, stand_ins):
    executed = run(name, tmp_path, stand_ins)
    assert errors(executed) == []
    assert figures(executed) >= FIXED_FIGURES[name], figures(executed)
    out = text(executed)
    assert "FAST mode" in out and stand_ins["HFGD_LAB_WEIGHTS_DIR"] in out
    assert "random-weight" in out or name == "03_stop_gradient_effect.ipynb"
    # the kernel is this environment's interpreter, and the appended cell moved every
    # control of every live panel without an error
    assert f"PREFIX {sys.prefix}" in out
    assert f"PANELS {PANELS[name]}" in out
    # every figure shown was drawn at the notebooks' dpi with text of at least 12 px
    fonts = re.search(r"FONTS ([\d.]+) \[([\d, ]+)\]", out)
    assert fonts, out[-500:]
    assert {int(d) for d in fonts.group(2).split(",")} == {nb.DPI}
    assert float(fonts.group(1)) * nb.DPI / 72 >= MIN_TEXT_PX
    # live views: a labelled static copy each, replaced by a note once a control moved
    # (the saved outputs were updated in place through their display ids)
    assert f"STATIC_SHOWN {PANELS[name]}" in out and "STATIC_LEFT 0" in out
    md = markdown_outputs(executed)
    assert sum(m.startswith(static_label_start()) for m in md) == 0
    assert sum(m == nb.STATIC_GONE for m in md) == PANELS[name]
    if name == "01_quickstart.ipynb":
        # the ImageNet view of the real classifier on a real photo, credited
        assert "Egyptian cat" in out or "tabby" in out or "tiger cat" in out
        assert "Chelsea the cat (Stefan van der Walt, CC0)" in out
        assert "one trained model" in out
    if name == "03_stop_gradient_effect.ipynb":
        assert "checked: with sg, loss_up sends exactly 0 into" in out
        assert "fake regime (test)" in out  # the stored results were read and tabulated
        assert "200 labelled scenes of 192 px" in out
        assert "| HFGD sg |" in out and "The regime map in words" in out
        assert "does the notebook read the stored results?" in out
        assert "| partial (C5, F_high, tokens) |" in out
        # which mIoU is which: one bundled model beside the mean over seeds
        assert "| val mIoU of this model | its seed | mean ± std over seeds (regime) |" in out
        assert "one seed each: not the bundled models' and not the full experiment's" in _code_md(name)


@pytest.mark.slow
def test_static_copies_are_labelled_before_any_control_moves(tmp_path, stand_ins):
    """Without the appended exercise (as the stored notebooks are executed), each live
    view keeps its static copy, labelled with the values it shows."""
    executed = run("04_cae_attention.ipynb", tmp_path, stand_ins, exercise=False)
    assert errors(executed) == []
    assert figures(executed) >= MIN_FIGURES["04_cae_attention.ipynb"]
    labels = [m for m in markdown_outputs(executed) if m.startswith(static_label_start())]
    assert len(labels) == PANELS["04_cae_attention.ipynb"]
    assert "image = scene 0, x = " in labels[0] and "layer = all layers" in labels[0]
    assert "The live panel below updates; this copy does not." in labels[0]


@pytest.mark.slow
def test_quickstart_with_the_real_bundled_models(tmp_path):
    # the trained weights are committed: their absence is a broken checkout, not a skip
    assert (REAL_WEIGHTS / f"{zoo.DEFAULT_MODEL}.safetensors").is_file(), REAL_WEIGHTS
    executed = run("01_quickstart.ipynb", tmp_path, {"HFGD_LAB_WEIGHTS_DIR": None,
                                                     "HFGD_LAB_THREADS": "1"}, exercise=False)
    assert errors(executed) == []
    assert figures(executed) >= MIN_FIGURES["01_quickstart.ipynb"]
    out = text(executed)
    assert "stand-in" not in out and "models from hfgd_lab/weights (bundled)" in out
    assert "Trained on:" in out and "Validation mIoU of this model" in out


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
    # every live view's static copy is there, and says it is one
    labels = [m for m in markdown_outputs(stored) if m.startswith(static_label_start())]
    assert len(labels) == PANELS[name]


# ---- what the notebooks call --------------------------------------------------------

def _code_md(name) -> str:
    return "\n".join(c.source for c in nbformat.read(NOTEBOOKS / name, as_version=4).cells)


def _code(name) -> str:
    return "\n".join(c.source for c in nbformat.read(NOTEBOOKS / name, as_version=4).cells
                     if c.cell_type == "code")


@pytest.mark.parametrize("name", nb.NOTEBOOKS)
def test_notebooks_call_only_what_exists(name):
    """Every ``nb.x`` a notebook calls exists in hfgd_lab.notebook, every name it imports
    from hfgd_lab exists, and models load through from_pretrained."""
    code = _code(name)
    for attr in set(re.findall(r"\bnb\.(\w+)", code)):
        assert hasattr(nb, attr), f"{name}: nb.{attr}"
    import importlib
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hfgd_lab"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name) or importlib.util.find_spec(
                    f"{node.module}.{alias.name}"), f"{name}: {node.module}.{alias.name}"
    assert "load_pretrained" not in code and "describe_card" not in code
    if PANELS[name] or name == "01_quickstart.ipynb":
        assert "from_pretrained(" in code


def test_notebook_module_keeps_only_notebook_things():
    """Samples, figures, card and experiment text, the analysis cache live in their one
    home; notebook.py keeps fast mode, display, panels and execution."""
    moved = ("Sample", "scene_samples", "validation_scenes", "photo_samples", "AnalysisCache",
             "class_areas", "plot_class_areas", "plot_prediction_grid", "describe_card",
             "describe_sg_summary", "stored_sg_results", "results_dir", "RESULTS_ENV",
             "weights_dir")
    assert [m for m in moved if hasattr(nb, m)] == []
    assert set(nb.__all__) <= set(dir(nb))


def test_notebook_scenes_are_the_bundled_models_validation_scenes():
    """The notebooks show scene_samples(n, split="val") as 'scenes the model never saw':
    that must be the validation set the bundled models were trained beside
    (configs/zoo/finetune.yaml, and the cards of the installed bundled models)."""
    data = yaml.safe_load((ROOT / "configs" / "zoo" / "finetune.yaml").read_text())["data"]
    configs = [data]
    for name in zoo.list_pretrained():
        card = json.loads((zoo.WEIGHTS_DIR / f"{name}.json").read_text())
        if (card.get("experiment") or {}).get("data") and not card.get("stand_in"):
            configs.append(card["experiment"]["data"])
    import inspect
    defaults = {k: p.default for k, p in inspect.signature(scene_samples).parameters.items()}
    for d in configs:
        kw = {**d.get("kwargs", {}), **d.get("val_kwargs", {})}
        assert d.get("val_split", "val") == "val" and d.get("name", "scenes") == "scenes"
        assert kw.get("size", 192) == defaults["size"] and kw.get("seed") == defaults["seed"]
        assert kw.get("variation", 1.0) == defaults["variation"]
    for name in nb.NOTEBOOKS:
        for call in re.findall(r"scene_samples\(([^)]*)\)", _code(name)):
            assert 'split="val"' in call and "seed" not in call and "size" not in call, call


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


def test_figures_are_shown_at_a_readable_size(tmp_path):
    import io

    from PIL import Image
    fig = Figure(figsize=(2.0, 1.0))
    ax = fig.subplots()
    tiny = ax.text(0.5, 0.5, "tiny", fontsize=5)        # drawn elsewhere, too small
    ax.set_title("title", fontsize=10)
    before = len(nb.RENDERED)
    png = nb.figure_png(fig)
    assert Image.open(io.BytesIO(png)).size == (2 * nb.DPI, nb.DPI)
    assert tiny.get_fontsize() == MIN_FONT                # raised on display
    assert nb.RENDERED[before:] == [(MIN_FONT, nb.DPI)]
    assert MIN_FONT * nb.DPI / 72 >= MIN_TEXT_PX
    assert nb.figure_png(fig, colors=None)[:4] == b"\x89PNG"
    Image.fromarray(np.zeros((300, 400, 3), np.uint8)).save(tmp_path / "figure.png")
    small = Image.open(io.BytesIO(nb.image_file_png(tmp_path / "figure.png", max_side=100)))
    assert small.size == (100, 75) and small.mode == "P"


def _view_and_controls():
    import ipywidgets as widgets
    seen = []

    def view(k, name):
        seen.append((k, name))
        if k == 3:
            raise ValueError("no such class")
        fig = Figure(figsize=(1, 1))
        fig.subplots().plot([0, k])
        return [fig, f"class {k}"]

    controls = {"k": widgets.IntSlider(value=0, min=0, max=2, description="k"),
                "name": widgets.Dropdown(options=[("first", "a"), ("second", "b")], value="a",
                                         description="name")}
    return view, controls, seen


def test_panel_renders_once_per_setting_and_reports_errors():
    view, controls, seen = _view_and_controls()
    panel = nb.Panel(view, controls)
    assert panel.renders == 1  # interactive_output draws once on creation
    items = panel.render(k=0, name="a")
    assert panel.renders == 1 and items[0][:4] == b"\x89PNG" and items[1] == "class 0"
    assert panel.exercise() == 4 and panel.error is None
    assert panel.renders == 3  # (2, a) and (0, b) new; going back came from the cache
    panel.controls["k"].max = 3
    with pytest.raises(RuntimeError, match="no such class"):
        panel.exercise()


def test_static_copy_is_labelled_and_dropped_when_a_control_moves(monkeypatch):
    shown, updated = [], []
    monkeypatch.setattr(nb, "display", lambda obj, **kw: shown.append((obj, kw)))
    monkeypatch.setattr(nb, "update_display", lambda obj, **kw: updated.append((obj, kw)))
    monkeypatch.setattr(nb, "PANELS", [])
    view, controls, _ = _view_and_controls()
    panel = nb.explore(view, controls, title="demo")
    # the static copy (label, figure, text, each with a display id), then the live panel
    # (whose own first drawing goes to its Output widget, here to `display` too)
    static = [(o, kw) for o, kw in shown if "display_id" in kw]
    assert len(static) == 3 and shown[-1][0] is panel and nb.PANELS == [panel]
    label = static[0][0].data
    assert label == nb.STATIC_LABEL.format(values="k = 0, name = first")
    assert static[1][0].format == "png" and static[2][0].data == "class 0"
    ids = [kw["display_id"] for _, kw in static]
    assert len(set(ids)) == 3 and ids == panel.static_ids and panel.static_shown
    controls["name"].value = "b"  # a reader moves a control: the copy would now be stale
    assert [kw["display_id"] for _, kw in updated] == ids
    assert updated[0][0].data == nb.STATIC_GONE and all(o.data == "" for o, _ in updated[1:])
    assert not panel.static_shown
    controls["k"].value = 2       # once is enough
    assert len(updated) == 3
    assert "live panel: demo (k, name)" in panel._repr_mimebundle_()["text/plain"]
    quiet = nb.explore(view, dict(_view_and_controls()[1]), static=False)
    assert shown[-1][0] is quiet and not quiet.static_ids


def test_execute_script_selects_notebooks():
    sys.path.insert(0, str(NOTEBOOKS))
    try:
        import execute
    finally:
        sys.path.remove(str(NOTEBOOKS))
    with pytest.raises(SystemExit):
        execute.main(["99_nothing"])


# ---- the experiment text the notebooks show (experiments.stop_gradient) ------------

def test_describe_summary_reports_either_way():
    runs = [fake_run(v, s, 60 + s + d) for v, d in (("hfgd_nosg", 0), ("hfgd_sg", 3))
            for s in (0, 1, 2)]
    text_sg_better = describe_summary(summarize(runs))
    assert "helped" in text_sg_better and "+3.0" in text_sg_better
    assert "exactly 0" in text_sg_better and "C2 0.920 vs 0.900" in text_sg_better
    runs = [fake_run(v, s, 60 + s + (d if s != 1 else -d)) for v, d in
            (("hfgd_nosg", 0), ("hfgd_sg", 3)) for s in (0, 1, 2)]
    assert "no measurable effect" in describe_summary(summarize(runs))
    # every seed the same way, but 3 seeds give a wide t-interval (4.30 s / sqrt 3 = 0.6):
    # a 2-sigma rule would call +0.33 +- 0.25 an effect; the paired t-interval does not
    runs = [fake_run(v, s, 60 + s + (d * (0.1, 0.6, 0.3)[s])) for v, d in
            (("hfgd_nosg", 0), ("hfgd_sg", 1)) for s in (0, 1, 2)]
    small = describe_summary(summarize(runs))
    assert "no measurable effect" in small and "interval ±0.6" in small
    one = [fake_run(v, 0, 60) for v in ("hfgd_nosg", "hfgd_sg")]
    assert "one seed" in describe_summary(summarize(one)).lower()
    # the JSON form (lists, NaN CKA for SemanticFPN) reads the same
    data = json.loads(json.dumps(summarize(runs)))
    assert describe_summary(data) == describe_summary(summarize(runs))
    assert "| HFGD sg |" in markdown_table(data)


def test_stored_results_from_files_and_from_the_card(tmp_path, monkeypatch):
    write_fake_results(tmp_path / "docs" / "results", with_runs=False)
    (tmp_path / "docs" / "figures").mkdir()
    (tmp_path / "docs" / "figures" / "sg_fake_summary.png").write_bytes(b"\x89PNG")
    monkeypatch.setenv(sg.RESULTS_ENV, str(tmp_path / "docs" / "results"))
    [r] = stored_results()
    assert r["title"] == "fake regime (test)" and r["runs"] is None
    assert r["figure"].name == "sg_fake_summary.png"
    assert r["regime"].startswith("200 labelled scenes of 192 px, 400 iterations of batch 8")
    # no files: the default model's card carries the summary (mean/std per variant)
    folder = write_stand_ins(tmp_path / "w")
    card_path = folder / f"{zoo.DEFAULT_MODEL}.json"
    card = json.loads(card_path.read_text())
    runs = [fake_run(v, s, 60.0 + s) for v in ("hfgd_nosg", "hfgd_sg") for s in (0, 1)]
    card["sg_experiment"] = {"title": "from card", "seeds": 2, "variants": {
        v: {k: {"mean": row[k][0], "std": row[k][1]} for k in row
            if k not in ("seeds", "per_seed") and isinstance(row[k], (list, tuple))}
        for v, row in summarize(runs)["variants"].items()}}
    card_path.write_text(json.dumps(card))
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", folder)
    monkeypatch.setenv(sg.RESULTS_ENV, str(tmp_path / "empty"))
    [r] = stored_results()
    assert r["title"] == "from card" and f"card of {zoo.DEFAULT_MODEL}" in r["source"]
    assert "mean over 2 seeds" in describe_summary(r["summary"])
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path / "nothing")
    assert stored_results() == []


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


def test_class_areas_of_a_prediction():
    areas = class_areas(np.array([[0, 0, 1], [2, 255, 1]]), 3)
    np.testing.assert_allclose(areas, [0.4, 0.4, 0.2])
    assert math.isclose(areas.sum(), 1.0)


def test_a_notebook_past_its_deadline_stops_with_a_clear_error(tmp_path):
    """The wall-clock deadline covers what nbclient's per-cell timeout does not."""
    import time
    path = tmp_path / "sleepy.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import time\ntime.sleep(600)")]), path)
    start = time.monotonic()
    with pytest.raises(nb.NotebookTimeout, match=r"sleepy.ipynb: not finished after 20 s"):
        nb.execute_notebook(path, inplace=False, timeout=900, deadline=20)
    assert time.monotonic() - start < 120
