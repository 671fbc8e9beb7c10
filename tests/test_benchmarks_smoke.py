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


def test_bench_command_and_script_wrapper(capsys, tmp_path):
    from hfgd_lab.cli import main
    args = ["--size", "64", "--repeats", "1", "--warmup", "0", "--models", "hfgd_os8",
            "--variants", "native", "--quiet", "--json", str(tmp_path / "speed.json")]
    assert main(["bench", *args]) == 0
    assert "HFGD OS8" in capsys.readouterr().out
    recorded = json.loads((tmp_path / "speed.json").read_text())["environment"]["command"]
    assert recorded == " ".join(["hfgd-lab bench", *args])  # as typed, for the docs
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--num-classes" in out


# ---- training speed (issue 15): bench --train, the loader benchmark, gpu_check.sh ----------

def test_bench_train_smoke(tmp_path, capsys):
    """hfgd-lab bench --train: one table per size, every model's step split into its four
    parts, the ratio to smp FPN, peak memory; the JSON holds every timing."""
    from hfgd_lab.cli import main
    out = tmp_path / "train.json"
    args = ["--train", "--sizes", "2x64", "3x32", "--repeats", "2", "--warmup", "0",
            "--num-classes", "5", "--models", "hfgd_os4", "hfgd_os4_plain_loss", "smp_fpn",
            "--quiet", "--markdown", "--json", str(out)]
    assert main(["bench", *args]) == 0
    text = capsys.readouterr().out
    assert "batch 2 x 64x64" in text and "batch 3 x 32x32" in text
    assert "| HFGD OS4 | 1/4 |" in text and "| smp FPN | 1/4 |" in text
    assert "| HFGD OS4, straightforward loss | 1/4 |" in text
    data = json.loads(out.read_text())
    assert data["mode"] == "train" and data["environment"]["command"].startswith(
        "hfgd-lab bench --train")
    for size in ("2x64", "3x32"):
        rows = data["sizes"][size]["models"]
        assert set(rows) == {"hfgd_os4", "hfgd_os4_plain_loss", "smp_fpn"}
        assert rows["smp_fpn"]["wall"]["ratio"] == pytest.approx(1.0)
        for r in rows.values():
            for clock in ("wall", "cpu"):
                c = r[clock]
                assert len(c["step_times_ms"]) == 2 and c["step_ms"] > 0
                assert all(c[f"{part}_ms"] >= 0 for part in
                           ("forward", "loss", "backward", "optimizer"))
            # the four parts are the step: their medians add up to about its median
            parts = sum(r["wall"][f"{p}_ms"] for p in ("forward", "loss", "backward",
                                                       "optimizer"))
            assert parts == pytest.approx(r["wall"]["step_ms"], rel=0.5)
            assert r["peak_mb"] is None or r["peak_mb"] > 0


def test_bench_train_refuses_bad_options_in_one_line(capsys):
    from hfgd_lab.cli import main
    for argv, msg in ((["--train", "--sizes", "2y64"], "--sizes '2y64': expected BATCHxSIDE"),
                      (["--train", "--sizes", "1x64"], "need batch >= 2"),
                      (["--train", "--device", "cuda"], "CUDA is not available"),
                      (["--train", "--device", "tpu"], "expected cpu or cuda"),
                      (["--models", "hfgd_os4_plain_loss"], "only with --train")):
        if argv[-1] == "cuda" and _cuda():
            continue
        assert main(["bench", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("hfgd-lab bench: error: ") and msg in err, err
        assert len(err.strip().splitlines()) == 1, err


def _tiny_loader_configs(tmp_path):
    import yaml
    model = {"backbone": "convnext_atto", "num_classes": 10, "embed_dim": 32,
             "decoder_channels": 32, "cae_depth": 1, "cae_heads": 2}
    data = {"crop_size": [64, 64], "scale": [1.0, 1.0], "batch_size": 2}
    train = {"iters": 2, "warmup_iters": 0}
    scenes = {"model": model, "train": train,
              "data": {**data, "name": "scenes", "kwargs": {"num": 4, "size": 64}}}
    folder = {"model": model, "train": train,
              "data": {**data, "name": "folder", "root": "unused"}}
    paths = [tmp_path / "scenes.yaml", tmp_path / "folder.yaml"]
    for path, cfg in zip(paths, (scenes, folder)):
        path.write_text(yaml.safe_dump(cfg))
    return paths


def test_loader_benchmark_smoke(tmp_path, capsys):
    """benchmarks/train_speed.py --loader: for a scenes and a folder config (the folder is
    written from scenes), the loader alone, the step alone, and both together per
    num_workers; without --loader it is bench --train."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import train_speed

    cfgs = _tiny_loader_configs(tmp_path)
    out = tmp_path / "loader.json"
    res = train_speed.main(["--loader", "--configs", *map(str, cfgs), "--workers", "0", "1",
                            "--rounds", "1", "--iters", "2", "--warmup", "0", "--threads",
                            "1", "--folder-images", "4", "--quiet", "--json", str(out)])
    text = capsys.readouterr().out
    assert "(scenes): batch 2 x 64x64" in text and "(folder): batch 2 x 64x64" in text
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(res))
    for path in map(str, cfgs):
        r = data["configs"][path]
        assert r["step_alone_ms"] > 0 and set(r["workers"]) == {"0", "1"}
        for w in r["workers"].values():
            assert w["loader_alone_ms"] > 0 and w["iteration_ms"] > 0
            assert 0 <= w["wait_ms"] <= w["iteration_ms"]
            assert len(w["iteration_ms_times"]) == 2
    assert data["configs"][str(cfgs[1])]["data"] == "folder"
    # without --loader: the training-step table
    train_speed.main(["--sizes", "2x32", "--repeats", "1", "--warmup", "0", "--models",
                      "hfgd_os8", "smp_fpn", "--num-classes", "3", "--quiet"])
    assert "HFGD OS8" in capsys.readouterr().out


def test_gpu_check_script_dry_run_on_cpu(tmp_path):
    """benchmarks/gpu_check.sh --cpu runs every step of the GPU check at tiny sizes: the
    three training-step tables (fp32, AMP, AMP + channels-last), the 2-process DDP step
    (gloo) with its checks, and the summary. No GPU is lent to this project's tests, so
    this is as far as the script is tested here; without CUDA the GPU mode refuses."""
    script = ROOT / "benchmarks" / "gpu_check.sh"
    run = subprocess.run(["bash", str(script), "--cpu", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for variant in ("fp32", "amp", "amp_cl"):
        r = json.loads((tmp_path / f"speed_train_cpu_{variant}.json").read_text())
        assert r["settings"]["amp"] == (variant != "fp32")
        assert r["settings"]["channels_last"] == (variant == "amp_cl")
        assert set(r["sizes"]["2x64"]["models"]) == {"hfgd_os4", "smp_fpn"}
    ddp = json.loads((tmp_path / "ddp_step_cpu.json").read_text())
    assert ddp["ok"] and ddp["world_size"] == 2 and ddp["backend"] == "gloo"
    assert ddp["grad_rel_error_vs_one_process"] < 1e-4
    summary = (tmp_path / "gpu_check_summary_cpu.md").read_text()
    assert "amp_cl, batch 2x64: HFGD OS4" in summary and "weights equal: True" in summary
    assert "done in" in (tmp_path / "gpu_check_cpu.log").read_text()
    if not _cuda():
        run = subprocess.run(["bash", str(script), "--out", str(tmp_path / "gpu")],
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 2 and "no CUDA device visible" in run.stderr
        assert not (tmp_path / "gpu").exists()


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


TINY_PLAN = """
base: tiny.yaml
variants: [semantic_fpn, hfgd_nosg, hfgd_sg]
seeds: [0, 1]
regimes:
  a: {title: "regime a", question: "the reference", set: []}
  b:
    title: "regime b"
    question: "fewer labels, plainer training scenes"
    set: [data.kwargs.num=2, data.kwargs.variation=0.25, data.val_kwargs.variation=1.0]
    extra_val: {same_look: {variation: 0.25}}
    compare_to: a
bundle: {regime: a, seed: 0}
schedule:
  - {regimes: [a], seeds: [0]}
  - {regimes: [a, b], variants: [hfgd_nosg, hfgd_sg]}
"""


def _tiny_plan(tmp_path):
    """configs/sg-style plan at a tiny size: the real finetune config shrunk (64 px,
    2 iterations of batch 2, 4 labelled and 3 validation scenes), two regimes, 2 seeds."""
    import yaml
    cfg = yaml.safe_load((ROOT / "configs/zoo/finetune.yaml").read_text())
    cfg["model"].update(embed_dim=32, decoder_channels=32, cae_depth=1, cae_heads=2)
    cfg["data"].update(kwargs={"num": 4, "size": 64, "seed": 1}, val_kwargs={"num": 3},
                       crop_size=[64, 64], batch_size=2)
    cfg["train"].update(iters=2, warmup_iters=1, val_interval=2, log_interval=1)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "plan.yaml").write_text(TINY_PLAN)
    return tmp_path / "plan.yaml"


def test_stop_gradient_plan_end_to_end(tmp_path, monkeypatch, capsys):
    """benchmarks/stop_gradient.py over a tiny plan: every scheduled run, per-regime JSON
    (seeds, per-seed values, backbone source and licence, recipe, command, machine,
    paired t-intervals, the recipe comparison), figures, the regime map, a bundle that
    load_pretrained reads with a reproducible subset mIoU; then reuse (nothing reruns,
    nothing is rewritten) and a refused reuse when the config changed."""
    from hfgd_lab.data import build_dataset
    from hfgd_lab.data.transforms import build_eval_transform
    from hfgd_lab.engine import zoo
    from hfgd_lab.engine.evaluate import evaluate
    from hfgd_lab.experiments.stop_gradient import stored_results

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import stop_gradient as script

    plan = _tiny_plan(tmp_path)
    runs, docs, bundle = tmp_path / "runs", tmp_path / "docs", tmp_path / "weights"
    argv = ["--plan", str(plan), "--runs", str(runs), "--jobs", "1", "--probe-every", "1",
            "--docs", str(docs), "--bundle", str(bundle), "--subset", "2"]
    assert script.main(argv) == 0
    printed = capsys.readouterr().out
    assert "9 to run" in printed and "| HFGD sg |" in printed
    assert printed.index("schedule step 0 complete: a") < printed.index("schedule step 1")
    assert "bundled hfgd_lite0_sg" in printed
    # the runs the schedule asked for, and no others
    made = sorted(str(p.relative_to(runs)) for p in runs.glob("*/*/result.json"))
    assert made == sorted([f"a/{v}_seed0/result.json" for v in
                           ("semantic_fpn", "hfgd_nosg", "hfgd_sg")]
                          + [f"{r}/{v}_seed{s}/result.json" for r in "ab"
                             for v in ("hfgd_nosg", "hfgd_sg") for s in (0, 1)
                             if (r, s) != ("a", 0)])
    b = json.loads((docs / "results" / "sg_b.json").read_text())
    meta = b["meta"]
    assert meta["seeds"] == [0, 1] and meta["regime"] == "b" and meta["order"] == 1
    assert meta["backbone_pretraining"]["license"] == "Apache-2.0"
    assert "ImageNet-1k" in meta["backbone_pretraining"]["source"]
    assert "backbone lr × 0.1" in meta["recipe"] and "frozen" in meta["recipe"]
    assert meta["command"].startswith("python") and "--plan" in meta["command"]
    assert meta["machine"] and meta["date"] and meta["config"]["data"]["kwargs"]["num"] == 2
    pair = b["summary"]["paired"]["hfgd_sg - hfgd_nosg"]
    assert len(pair["per_seed"]) == 2 and pair["ci95"] > 0
    assert set(b["summary"]["variants"]["hfgd_sg"]["per_seed"]) == {"0", "1"}
    assert "val_mIoU_same_look" in b["summary"]["variants"]["hfgd_sg"]
    assert b["summary"]["variants"]["hfgd_sg"]["grad_up_backbone"][0] == 0.0
    assert b["summary"]["variants"]["hfgd_nosg"]["grad_up_backbone"][0] > 0.0
    assert b["versus"]["reference"] == "a" and set(b["versus"]["variants"]) == {
        "hfgd_nosg", "hfgd_sg"}
    assert len(b["runs"]) == 4 and all("config" not in r for r in b["runs"])
    for name in ("a", "b"):
        for fig in ("summary", "val_curves", "gradient_flow", "drift", "stage_gradients",
                    "paired"):
            assert (docs / "figures" / f"sg_{name}_{fig}.png").is_file(), (name, fig)
    assert (docs / "figures" / "sg_regime_map.png").is_file()
    stored = stored_results(docs / "results")
    assert [r["name"] for r in stored] == ["a", "b"]
    assert "appearance variation 0.25 in the labelled scenes and 1.0 in validation" in \
        stored[1]["regime"]

    # the bundle: seed 0 of regime a, summary over the seeds done
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", bundle)
    assert zoo.list_pretrained()[0] == zoo.DEFAULT_MODEL
    assert set(zoo.list_pretrained()) == set(zoo.BUNDLED)
    p = zoo.bundled_path("hfgd_lite0_sg")
    from hfgd_lab import load_pretrained
    loaded = load_pretrained("hfgd_lite0_sg")
    assert loaded.card["variant"] == "hfgd_sg" and loaded.model.cfg.stop_gradient
    assert loaded.card["sg_experiment"]["seeds_per_variant"] == {
        "semantic_fpn": 1, "hfgd_nosg": 2, "hfgd_sg": 2}
    d = loaded.card["experiment"]["data"]
    val = build_dataset("scenes", None, "val",
                        transform=build_eval_transform(*loaded.model.cfg.normalization),
                        **{**d["kwargs"], **d["val_kwargs"]})
    again = evaluate(loaded.model, val, max_images=2, progress=False)["mIoU"]
    assert abs(again - loaded.card["metrics"]["subset_mIoU"]) < 1e-6
    assert not list(runs.glob("a/*.fp16*"))  # temporary fp16 copies cleaned up

    # reuse: nothing reruns, no result is rewritten
    stamps = {q: q.stat().st_mtime_ns for q in runs.glob("*/*/result.json")}
    assert script.main(argv) == 0
    assert "9 finished, 0 to run" in capsys.readouterr().out
    assert stamps == {q: q.stat().st_mtime_ns for q in runs.glob("*/*/result.json")}
    assert p.with_suffix(".json").is_file()
    # runs moved to another folder are reused and still bundle (read from --runs, not from
    # the work_dir their configs recorded)
    import shutil
    moved = tmp_path / "moved"
    shutil.move(runs, moved)
    shutil.rmtree(bundle)
    assert script.main([*argv[:2], "--runs", str(moved), *argv[4:]]) == 0
    assert "9 finished, 0 to run" in capsys.readouterr().out
    assert zoo.bundled_path("hfgd_lite0_sg").with_suffix(".json").is_file()
    shutil.move(moved, runs)
    # a changed config never reuses the old runs: one line naming the folder and the key
    with pytest.raises(SystemExit) as e:
        script.main(argv + ["--set", "train.iters=3"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "holds a finished run with another config (train.iters: 2 vs 3)" in err
    assert "Traceback" not in err


def test_stop_gradient_plan_errors_are_one_line(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import stop_gradient as script

    plan = _tiny_plan(tmp_path)
    for extra, msg in ((["--only", "zzz"], "--only zzz: no such regime"),
                       (["--seeds", "7"], "nothing to run"),
                       (["--set", "train.nope=1"], "unknown key 'nope'")):
        with pytest.raises(SystemExit) as e:
            script.main(["--plan", str(plan), "--runs", str(tmp_path / "r"), *extra])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1, err
    assert script.main(["--plan", str(plan), "--runs", str(tmp_path / "r"), "--dry-run",
                        "--only", "b"]) == 0
    out = capsys.readouterr().out
    assert "4 runs in the plan selection, 0 finished, 4 to run" in out
    assert "step 1: b/hfgd_sg_seed1" in out and "a/" not in out


def test_app_soak_only_takes_request_types_from_its_mix(capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import app_soak

    args = app_soak.parse_args(["--only", "imagenet", "compare"])
    assert args.only == ["imagenet", "compare"]
    with pytest.raises(SystemExit):
        app_soak.parse_args(["--only", "everything"])
    assert "invalid choice: 'everything'" in capsys.readouterr().err
