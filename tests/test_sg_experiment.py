"""The stop-gradient experiment's plan, statistics, regime map and figures
(hfgd_lab.experiments.stop_gradient, hfgd_lab.viz.experiment)."""
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from hfgd_lab.config import VARIANTS, ConfigError
from hfgd_lab.engine import zoo
from hfgd_lab.experiments import stop_gradient as sg

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("C2", "C3", "C4", "C5")


def fake_run(variant, seed, miou, cka5=0.8, extra=None):
    """A result.json-shaped run with made-up numbers (no training)."""
    up = 0.0 if variant == "hfgd_sg" else 0.2
    norms = {f"backbone.{s}": {"loss_high": 0.0 if variant == "semantic_fpn" else 0.1 * (i + 1),
                               "loss_up": 0.0 if variant == "hfgd_sg" and True else up}
             for i, s in enumerate(STAGES)}
    if variant == "hfgd_partial_sg":
        norms["backbone.C5"]["loss_up"] = 0.0
    norms["upsampler"] = {"loss_high": 0.0, "loss_up": 0.3}
    return {"variant": variant, "seed": seed, "seconds": 120.0, "cpu_seconds": 60.0,
            "val": {"mIoU": miou, "mAcc": 50.0, "aAcc": 80.0, "IoU": [miou] * 10},
            "best_val": {"iteration": 30, "mIoU": miou},
            "history": [{"iter": i, "mIoU": miou - 10 + 5 * j} for j, i in enumerate((10, 20, 30))],
            "train_mIoU": miou + 5, "extra_val": extra or {},
            "cka": {"C2": 0.99, "C3": 0.97, "C4": 0.9, "C5": cka5},
            "grad_norms": [{"iter": i, "norms": norms} for i in (1, 10, 20, 30)],
            "loss_curve": [{"iter": i, "loss": 1.0 / i, "loss_high": 0.5 / i, "loss_up": 0.5 / i}
                           for i in (10, 20, 30)]}


def regime_runs(deltas, seeds=(0, 1, 2, 3, 4), base=80.0):
    """Runs whose val mIoU is base + seed offset + deltas[variant][seed]."""
    return [fake_run(v, s, base + s + d[s], cka5=0.75 + 0.02 * i)
            for i, (v, d) in enumerate(deltas.items()) for s in seeds]


def write_regime(folder, name, runs, order, config_sets=(), versus=None, title=None):
    from hfgd_lab.engine import ExperimentConfig
    from hfgd_lab.utils import apply_overrides
    cfg = apply_overrides(ExperimentConfig.from_yaml(ROOT / "configs/zoo/finetune.yaml"),
                          list(config_sets)).to_dict()
    data = {"meta": {"regime": name, "title": title or f"regime {name}",
                     "question": f"what {name} tests", "order": order, "date": "2026-01-01",
                     "machine": "test", "config": cfg,
                     "backbone_pretraining": {"source": "ImageNet-1k (test)"}},
            "summary": json.loads(json.dumps(sg.summarize(runs))), "runs": runs}
    if versus:
        data["versus"] = json.loads(json.dumps(versus))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"sg_{name}.json").write_text(json.dumps(data))


# ---- statistics -----------------------------------------------------------------------

def test_paired_stats_is_the_student_t_interval():
    diffs = [0.4, -0.2, 1.1, 0.3, 0.9]
    p = sg.paired_stats(diffs)
    lo, hi = stats.t.interval(0.95, len(diffs) - 1, loc=np.mean(diffs), scale=stats.sem(diffs))
    assert p["interval"][0] == pytest.approx(lo) and p["interval"][1] == pytest.approx(hi)
    assert p["ci95"] == pytest.approx((hi - lo) / 2)
    assert p["mean_std"][1] == pytest.approx(np.std(diffs, ddof=1))
    assert math.isnan(sg.paired_stats([1.0])["ci95"])


def test_summarize_pairs_every_variant_with_intervals_stages_and_extra_sets():
    runs = [fake_run(v, s, 70 + s + i, extra={"same_look": 90.0 + i})
            for i, v in enumerate(VARIANTS) for s in range(3)]
    summary = sg.summarize(runs)
    assert list(summary["variants"]) == list(VARIANTS)
    assert set(summary["paired"]) == {f"{a} - {b}" for a, b in sg.PAIRS}
    p = summary["paired"]["hfgd_partial_sg - hfgd_nosg"]
    assert p["per_seed"] == [2.0, 2.0, 2.0] and p["seeds"] == [0, 1, 2] and p["ci95"] == 0
    row = summary["variants"]["hfgd_partial_sg"]
    assert row["grad_loss_up_C5"][0] == 0.0 and row["grad_loss_up_C2"][0] == pytest.approx(0.2)
    assert row["grad_loss_high_C5"][0] == pytest.approx(0.4)
    assert row["val_mIoU_same_look"][0] == pytest.approx(93.0)
    assert row["cpu_minutes"][0] == pytest.approx(1.0) and row["minutes"][0] == 2.0
    assert row["per_seed"] == {"0": 73.0, "1": 74.0, "2": 75.0}
    sgrow = summary["variants"]["hfgd_sg"]
    assert all(sgrow[f"grad_loss_up_{s}"][0] == 0 for s in STAGES)
    table = sg.markdown_table(summary)
    assert "| HFGD partial sg |" in table and "val mIoU (same_look)" in table
    assert "| HFGD partial sg − HFGD no-sg | 2.0 ± 0.0 | [+2.0, +2.0] | +2.0, +2.0, +2.0 |" \
        in table
    grads = sg.gradient_table(summary)
    assert "| HFGD sg | loss_up | 0 exactly | 0 exactly | 0 exactly | 0 exactly |" in grads
    assert "| SemanticFPN | loss_high" not in grads
    text = sg.describe_summary(json.loads(json.dumps(summary)))
    assert "partial sg" in text and "ahead" in text


def test_compare_regimes_pairs_by_variant_and_seed():
    ref = regime_runs({"hfgd_sg": [0] * 5, "hfgd_nosg": [0] * 5})
    new = regime_runs({"hfgd_sg": [1, 2, 1, 2, 1], "hfgd_nosg": [0, 0, 0, 0, 0]})
    out = sg.compare_regimes(new, ref)
    assert out["hfgd_sg"]["per_seed"] == [1, 2, 1, 2, 1] and out["hfgd_sg"]["ci95"] > 0
    assert out["hfgd_nosg"]["mean_std"][0] == 0
    assert "semantic_fpn" not in out
    table = sg.versus_table(out, "lr 1x", "lr 0.1x")
    assert "| HFGD sg | 1.4 ± 0.5 |" in table


def test_compact_run_keeps_per_seed_values_and_backbone_probes_only():
    r = {**fake_run("hfgd_sg", 0, 70), "config": {"big": 1}}
    c = sg.compact_run(r)
    assert "config" not in c and c["val"]["mIoU"] == 70 and c["cpu_seconds"] == 60
    assert all(m.startswith("backbone") for g in c["grad_norms"] for m in g["norms"])
    assert sg.mean_grad(c, "backbone", "loss_high") == sg.mean_grad(r, "backbone", "loss_high")


# ---- verdicts and the regime map ---------------------------------------------------------

def test_verdict_says_whichever_way_it_came_out():
    ahead = sg.paired_stats([1.0, 1.5, 0.8, 1.2, 1.1])
    assert sg.verdict(ahead, "sg", "no-sg").startswith("sg ahead of no-sg by 1.1 [")
    assert "on every one of 5 seeds" in sg.verdict(ahead, "sg", "no-sg")
    behind = sg.paired_stats([-1.0, -1.5, -0.8, -1.2, -1.1])
    assert sg.verdict(behind, "sg", "no-sg").startswith("no-sg ahead of sg by 1.1")
    mixed = sg.paired_stats([2.0, 2.5, 1.8, 2.2, -0.1])
    assert "not on every seed" in sg.verdict(mixed, "a", "b")
    null = sg.paired_stats([0.5, -0.6, 0.2, -0.3, 0.1])
    assert "no measurable difference over 5 seeds" in sg.verdict(null, "a", "b")
    assert "one seed" in sg.verdict(sg.paired_stats([0.4]), "a", "b")
    assert "not measured" in sg.verdict(None, "a", "b")
    # the JSON form (lists) reads the same
    assert sg.verdict(json.loads(json.dumps(ahead)), "sg", "no-sg") == \
        sg.verdict(ahead, "sg", "no-sg")


def test_regime_map_from_stored_files(tmp_path):
    folder = tmp_path / "docs" / "results"
    main = regime_runs({"semantic_fpn": [0] * 5, "hfgd_nosg": [0.1, -0.2, 0.3, 0, 0.1],
                        "hfgd_sg": [-0.9, -1.2, -0.8, -1.1, -1.0],
                        "hfgd_partial_sg": [0.2, -0.1, 0.1, -0.3, 0.4]})
    shift = regime_runs({"semantic_fpn": [0] * 5, "hfgd_nosg": [2, 2.5, 1.8, 2.2, 2.1],
                         "hfgd_sg": [2.9, 3.1, 2.5, 3.4, 2.8]}, base=60)
    lr1 = regime_runs({"semantic_fpn": [1] * 5, "hfgd_nosg": [1] * 5, "hfgd_sg": [1] * 5})
    write_regime(folder, "shift", shift, 2, ["data.kwargs.variation=0.25",
                                             "data.val_kwargs.variation=1.0"])
    write_regime(folder, "main", main, 0, title="main regime")
    write_regime(folder, "main_lr1", lr1, 3, ["train.backbone_lr_mult=1.0",
                                              "train.layer_decay=0.65"],
                 versus={"reference": "main", "reference_title": "main regime",
                         "variants": sg.compare_regimes(lr1, main)})
    stored = sg.stored_results(folder)
    assert [r["name"] for r in stored] == ["main", "shift", "main_lr1"]  # plan order
    assert stored[0]["question"] == "what main tests" and stored[0]["runs"]
    assert "appearance variation 0.25 in the labelled scenes and 1.0 in validation" in \
        stored[1]["regime"]
    assert "with layer-wise decay 0.65 per stage" in stored[2]["regime"]
    assert "backbone pretrained on ImageNet-1k (test)" in stored[0]["regime"]
    rows = sg.regime_map(stored)
    assert rows[0]["best"] == "hfgd_partial_sg" or rows[0]["best"] == "hfgd_nosg"
    assert "no measurable difference" in rows[0]["best_lead"]
    assert rows[0]["verdicts"]["hfgd_sg - hfgd_nosg"].startswith("HFGD no-sg ahead of HFGD sg")
    # the interval is the winner's lead, positive like the lead itself
    assert re.search(r"ahead of HFGD sg by [\d.]+ \[\+[\d.]+, \+[\d.]+\]",
                     rows[0]["verdicts"]["hfgd_sg - hfgd_nosg"])
    assert rows[1]["best"] == "hfgd_sg"
    assert rows[1]["best_lead"].startswith("HFGD sg ahead of HFGD no-sg by 0.8")
    assert rows[1]["cka_C5"]["hfgd_sg"] == pytest.approx(0.79)
    table = sg.regime_map_markdown(stored)
    assert table.count("\n") == 4 and "| main regime | 5 |" in table
    assert "| – |" in table  # shift has no partial sg
    words = sg.describe_regime_map(stored)
    lines = words.splitlines()
    assert len(lines) == 4 and lines[0].startswith("- **main regime** (what main tests)")
    assert "HFGD no-sg ahead of HFGD sg" in lines[0]
    assert "HFGD sg ahead of HFGD no-sg" in lines[1]
    for line in lines:  # the lead's pair is said once, not again among the pairs
        sentences = [x.strip() for x in line.split(". ") if x.strip()]
        assert len(sentences) == len(set(sentences)), line
    assert "Change against main regime (same variant and seed): SemanticFPN +1.0 " \
        "[+1.0, +1.0] (beyond the noise); HFGD no-sg +0.9" in lines[2]
    # across regimes: main all below zero, shift all above, main_lr1 all equal
    assert lines[3].startswith("- **Across the 3 regimes** (HFGD sg − HFGD no-sg, every "
                               "paired seed): below zero on 5 of 15, above on 5, equal on 5")
    assert lines[3].endswith("p = 1: no consistent direction beyond chance.")


def test_across_regimes_counts_signs_with_an_exact_sign_test():
    """The sign test is the exact binomial one (scipy's binomtest gives the same p);
    one regime alone gives no across-regimes line."""
    def stored_with(*per_regime):
        out = []
        for i, ds in enumerate(per_regime):
            runs = regime_runs({"hfgd_nosg": [0] * len(ds), "hfgd_sg": list(ds)},
                               seeds=tuple(range(len(ds))))
            out.append({"name": f"r{i}", "title": f"r{i}", "question": "",
                        "summary": json.loads(json.dumps(sg.summarize(runs)))})
        return out
    stored = stored_with([-0.5, -0.2, 0.3, -0.7, -0.1], [-1.0, -0.4, -0.6], [0.2, -0.3])
    a = sg.across_regimes(stored)
    assert (a["seeds"], a["below"], a["above"], a["zero"]) == (10, 8, 2, 0)
    assert a["sign_p"] == pytest.approx(stats.binomtest(2, 10, 0.5).pvalue)
    assert a["mean"] == pytest.approx(-3.3 / 10) and a["min"] == pytest.approx(-1.0)
    assert a["regimes"] == ["r0", "r1", "r2"]
    assert "HFGD sg is lower than HFGD no-sg" not in sg._across_words(a)  # p = 0.11
    a = sg.across_regimes(stored_with([-0.5] * 5, [-0.2] * 4))
    assert a["sign_p"] == pytest.approx(2 / 2 ** 9)
    assert "HFGD sg is lower than HFGD no-sg more often than chance" in sg._across_words(a)
    assert sg.across_regimes(stored_with([-0.5] * 5)) is None
    assert sg.describe_regime_map(stored_with([-0.5] * 5)).count("Across") == 0


def test_stored_results_fall_back_to_the_default_card(tmp_path, monkeypatch):
    folder = zoo.write_stand_ins(tmp_path / "w")
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", folder)
    [r] = sg.stored_results(tmp_path / "empty")
    assert r["source"] == f"card of {zoo.DEFAULT_MODEL}" and r["name"] == "card"
    assert "| HFGD sg | 52.0 ± 1.0 |" in sg.markdown_table(r["summary"])  # stand-in numbers
    assert sg.regime_map([r])[0]["best"] == "hfgd_sg"


# ---- the plan -----------------------------------------------------------------------------

def test_the_shipped_plan_covers_every_regime_variant_and_seed():
    plan = sg.load_plan(ROOT / "configs/sg/regimes.yaml")
    assert {"main", "n16", "shift", "main_lr1", "main_ld"} <= set(plan.regimes)
    assert plan.variants == list(VARIANTS) and len(plan.seeds) >= 5
    runs = plan.runs()
    assert len(runs) == len(set(runs)) == len(plan.regimes) * 4 * len(plan.seeds)
    # useful results first: the bundled variants of the main regime, seed 0
    assert {(r, v, s) for _, r, v, s in runs[:3]} == {("main", v, 0) for v in zoo.BUNDLED.values()}
    assert plan.bundle == {"regime": "main", "seed": 0}
    main, n16, shift = (plan.config(r) for r in ("main", "n16", "shift"))
    assert main.data.kwargs["num"] == 200 and n16.data.kwargs["num"] == 16
    assert main.model.backbone == "tf_efficientnet_lite0" and main.model.norm_eval
    assert main.train.backbone_lr_mult == 0.1 and main.train.iters == 400
    assert shift.data.kwargs["variation"] == 0.25 and shift.data.val_kwargs["variation"] == 1.0
    assert plan.regimes["shift"].extra_val == {"same_look": {"variation": 0.25}}
    assert plan.config("main_lr1").train.backbone_lr_mult == 1.0
    assert plan.config("main_ld").train.layer_decay == 0.65
    assert plan.regimes["main_lr1"].compare_to == "main"
    # the selection filters
    only = plan.runs(regimes=["n16"], variants=["hfgd_sg"], seeds=[0, 1])
    assert [(r, v, s) for _, r, v, s in only] == [("n16", "hfgd_sg", 0), ("n16", "hfgd_sg", 1)]


@pytest.mark.parametrize("edit, message", [
    (lambda p: p.update(variants=["hfgd_nope"]), "unknown variant 'hfgd_nope'"),
    (lambda p: p["schedule"].append({"regimes": ["zzz"]}), "names regime 'zzz', which is not"),
    (lambda p: p["regimes"]["main"].update(set=["train.nope=1"]),
     "regime 'main': --set train.nope: unknown key 'nope'"),
    (lambda p: p["regimes"]["main"].update(sets=["x=1"]), "regime 'main' has unknown keys"),
    (lambda p: p["regimes"]["main_lr1"].update(compare_to="zzz"), "compares to 'zzz'"),
    (lambda p: p.update(bundle={"regime": "zzz"}), "bundle regime 'zzz'"),
])
def test_plan_mistakes_fail_in_one_line(tmp_path, edit, message):
    data = yaml.safe_load((ROOT / "configs/sg/regimes.yaml").read_text())
    data["base"] = str(ROOT / "configs/zoo/finetune.yaml")
    edit(data)
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=message) as e:
        sg.load_plan(path)
    assert "\n" not in str(e.value)


def test_finished_runs_are_reused_only_with_the_same_config(tmp_path):
    plan = sg.load_plan(ROOT / "configs/sg/regimes.yaml")
    cfg = plan.config("main")
    wd = sg.run_dir(tmp_path, "main", "hfgd_sg", 0)
    assert sg.finished_run(wd, sg.variant_config(cfg, "hfgd_sg", 0, wd)) is None
    wd.mkdir(parents=True)
    run_cfg = sg.variant_config(cfg, "hfgd_sg", 0, "elsewhere").to_dict()  # work_dir ignored
    (wd / "result.json").write_text(json.dumps({**fake_run("hfgd_sg", 0, 70),
                                                "config": run_cfg}))
    assert sg.finished_run(wd, sg.variant_config(cfg, "hfgd_sg", 0, wd))["val"]["mIoU"] == 70
    other = sg.variant_config(plan.config("n16"), "hfgd_sg", 0, wd)
    with pytest.raises(ConfigError, match=r"holds a finished run with another config "
                                          r"\(data.kwargs.num: 200 vs 16\)"):
        sg.finished_run(wd, other)
    seed = sg.variant_config(cfg, "hfgd_sg", 1, wd)
    with pytest.raises(ConfigError, match="train.seed: 0 vs 1"):
        sg.finished_run(wd, seed)


def test_run_jobs_in_separate_processes_collects_results_and_failures(tmp_path):
    """jobs > 1: every run in its own process (this checkout first on its path); a run
    that fails comes back as an error with its folder, the others still finish."""
    from hfgd_lab.engine import ExperimentConfig
    cfg = ExperimentConfig.from_yaml(ROOT / "configs/zoo/finetune.yaml").to_dict()
    cfg["model"].update(embed_dim=16, decoder_channels=16, cae_depth=1, cae_heads=2)
    cfg["data"].update(kwargs={"num": 2, "size": 64, "seed": 1}, val_kwargs={"num": 2},
                       crop_size=[64, 64], batch_size=2)
    cfg["train"].update(iters=1, warmup_iters=0, val_interval=1, log_interval=1)
    good = (cfg, "hfgd_sg", 0, str(tmp_path / "good"), None, {"probe_every": 1}, 1)
    bad = (cfg, "hfgd_nope", 0, str(tmp_path / "bad"), None, {}, 1)
    seen = []
    out = sg.run_jobs([bad, good], jobs=2, on_result=seen.append, progress=False)
    assert len(out) == len(seen) == 2
    errors = [r for r in out if "error" in r]
    assert len(errors) == 1 and "unknown variant 'hfgd_nope'" in errors[0]["error"]
    assert errors[0]["work_dir"] == str(tmp_path / "bad")
    assert (tmp_path / "bad" / "error.json").is_file()
    [ok] = [r for r in out if "error" not in r]
    assert ok["variant"] == "hfgd_sg" and (tmp_path / "good" / "result.json").is_file()
    assert ok["backbone_pretraining"]["license"] == "Apache-2.0"
    assert ok["cpu_seconds"] > 0


# ---- figures ----------------------------------------------------------------------------

def test_regime_figures(tmp_path):
    from hfgd_lab.viz.experiment import (plot_paired, plot_regime_map, plot_stage_gradients,
                                         save_experiment_figures)
    runs = regime_runs({v: [0.1 * i] * 5 for i, v in enumerate(VARIANTS)})
    fig = plot_stage_gradients(runs)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "HFGD sg: loss_up" in labels and "SemanticFPN: loss_high" not in labels
    assert "0" in [t.get_text() for t in fig.axes[0].texts]  # the exact zero is labelled
    summary = sg.summarize(runs)
    ax = plot_paired(summary).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()][-1] == "HFGD sg − HFGD no-sg"
    stored = [{"title": "a", "summary": summary}, {"title": "b", "summary": summary}]
    ax = plot_regime_map(stored).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["b", "a"]
    assert len(ax.get_legend().get_texts()) == 4
    # a long regime title wraps instead of running off the figure's left edge
    long = "recipe: layer-wise decay 0.65 from backbone lr 1x (main regime otherwise)"
    fig = plot_regime_map([{"title": long, "summary": summary}])
    [tick] = fig.axes[0].get_yticklabels()
    assert tick.get_text().replace("\n", " ") == long
    assert max(len(line) for line in tick.get_text().splitlines()) <= 32
    fig.draw_without_rendering()
    assert tick.get_window_extent().x0 >= 0  # inside the figure
    paths = save_experiment_figures(runs, tmp_path, prefix="sg_x_")
    assert {p.name for p in paths} == {f"sg_x_{n}.png" for n in (
        "summary", "val_curves", "gradient_flow", "drift", "stage_gradients", "paired")}
    one = [r for r in runs if r["seed"] == 0]
    names = {p.name for p in save_experiment_figures(one, tmp_path / "one")}
    assert "paired.png" not in names  # no interval from one seed


def test_the_doc_shows_the_stored_results():
    """docs/stop_gradient.md carries each stored regime's tables and the regime map as
    the library computes them from docs/results/sg_*.json (so the doc cannot drift)."""
    doc = (ROOT / "docs" / "stop_gradient.md").read_text()
    stored = sg.stored_results()
    assert stored and all(Path(r["source"]).parent.name == "results" for r in stored)
    for r in stored:
        assert sg.markdown_table(r["summary"]) in doc, r["name"]
        assert sg.gradient_table(r["summary"]) in doc, r["name"]
        assert r["summary"]["variants"]["hfgd_sg"]["seeds"], r["name"]
        vs = r["versus"]
        if vs and vs.get("variants"):  # a recipe change against its reference regime
            assert sg.versus_table(vs["variants"], "this recipe",
                                   vs.get("reference_title", vs["reference"])) in doc, r["name"]
    by = {r["name"]: r for r in stored}
    if "main_ld" in by and "main_lr1" in by:  # layer-wise decay against flat 1x, same seeds
        assert sg.versus_table(sg.compare_regimes(by["main_ld"]["runs"], by["main_lr1"]["runs"]),
                               "layer-wise decay", "flat 1×") in doc
    assert sg.regime_map_markdown(stored) in doc
    assert sg.describe_regime_map(stored) in doc
    assert (ROOT / "docs" / "figures" / "sg_regime_map.png").is_file()
