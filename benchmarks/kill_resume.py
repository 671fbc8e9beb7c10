"""Kill harness: a training run is killed at every numbered point of the save / resume
machinery -- before each file operation and half-way through each write -- then
resumed, and its final weights are compared bit for bit with an uninterrupted run.

How a kill is injected (no timing games): ``hfgd_lab.engine.checkpoint.fault_point``
numbers every point a run passes (each iteration, each log line half-written, each
create / half-written / fsync / rename / replace / remove of a save); with
``HFGD_LAB_KILL_AT=N`` the run ends at point N by ``os._exit`` (no cleanup, no
flushing: what ``kill -9`` leaves).

For each point N the harness (1) runs a tiny training to its kill at N, (2) runs
``hfgd-lab train --resume`` semantics (``train(cfg, resume=True)``; a fresh start when
no checkpoint survived, as a user would), and (3) checks: the final ``last``
weights equal the uninterrupted run's, tensor for tensor, bit for bit; ``best.json``
names the same iteration and metrics; ``log.jsonl`` holds exactly the uninterrupted
run's records (no duplicates, no torn line); no temporary file and no unreferenced
set is left. "Double kills" also kill the resuming run inside its own repair and log
truncation, then resume once more.

Runs are forked from one process that imported torch once (each ~1-2 s instead of
~10 s), with one torch thread each, ``--jobs`` cases at a time.

    python benchmarks/kill_resume.py --out docs/results/kill_resume.json --jobs 2
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch: forked children stay safe

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402

from hfgd_lab.engine import checkpoint as C  # noqa: E402
from hfgd_lab.engine.experiment import ExperimentConfig  # noqa: E402
from hfgd_lab.engine.train import train  # noqa: E402

TINY_MODEL = dict(embed_dim=32, cae_heads=4, decoder_channels=32, cae_depth=1,
                  backbone_kwargs=dict(dims=[16, 32, 64, 128], depths=[1, 1, 1, 1]))


def tiny_config(work_dir: Path, iters: int, val_interval: int) -> ExperimentConfig:
    """A run of a few seconds: a 0.6 M-parameter HFGD on 64-px scenes, batch 4."""
    return ExperimentConfig.from_dict({
        "model": {**TINY_MODEL, "num_classes": 10},
        "data": {"name": "scenes", "kwargs": {"num": 16, "size": 64, "seed": 0},
                 "val_kwargs": {"num": 4}, "crop_size": [64, 64], "scale": [0.75, 1.5],
                 "batch_size": 4, "num_workers": 0},
        "train": {"iters": iters, "val_interval": val_interval, "log_interval": 1,
                  "warmup_iters": 2, "lr": 2e-3, "work_dir": str(work_dir), "device": "cpu"},
    })


# ---- running a training in a forked child -------------------------------------------

def _in_child(fn, log: Path, env: dict) -> int:
    """Fork; the child sets ``env``, sends its output to ``log`` and runs ``fn``.
    Returns the child's exit code (``C.KILL_EXIT_CODE`` when a fault point killed it)."""
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            for k in (C.KILL_ENV, C.TRACE_ENV):
                os.environ.pop(k, None)
            os.environ.update(env)
            torch.set_num_threads(1)
            fn()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _run(work: Path, iters: int, val_interval: int, resume: bool):
    def fn():
        cfg = tiny_config(work, iters, val_interval)
        if resume:
            try:
                C.find_resume(True, work)
            except FileNotFoundError:  # nothing survived: start again, as a user would
                print("no checkpoint survived: starting afresh")
                train(cfg, progress=False)
                return
            train(cfg, resume=True, progress=False)
        else:
            train(cfg, progress=False)
    return fn


# ---- what a finished run left ---------------------------------------------------------

def _weights(path: Path) -> dict:
    with safe_open(str(path), framework="numpy") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def _log(path: Path) -> list:
    out = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)  # a torn line fails the case
        rec.pop("time", None)
        rec.pop("img_per_s", None)
        out.append(rec)
    return out


def snapshot(work: Path) -> dict:
    """What is compared between runs: final weights, best pointer, log, leftovers."""
    last, best = C.read_pointer(work / "last.json"), C.read_pointer(work / "best.json")
    sets = sorted(p.name for p in (work / C.SETS_DIR).iterdir())
    referenced = sorted({p.name for p in (last, best) if p is not None})
    leftovers = [str(p.relative_to(work)) for p in work.rglob("*")
                 if p.name.endswith(".tmp") or p.name.startswith((".tmp-", ".del-"))]
    best_card = json.loads((best / C.CARD_NAME).read_text())
    return {"weights": _weights(last / C.WEIGHTS_NAME),
            "last_iteration": json.loads((work / "last.json").read_text())["iteration"],
            "best_metrics": {k: best_card["metrics"][k] for k in ("mIoU", "mAcc", "aAcc",
                                                                  "iteration")},
            "log": _log(work / "log.jsonl"),
            "extra_sets": sorted(set(sets) - set(referenced)), "leftovers": leftovers}


def compare(ref: dict, got: dict) -> list[str]:
    """Differences between a recovered run and the uninterrupted one (empty: identical)."""
    problems = []
    if set(ref["weights"]) != set(got["weights"]):
        problems.append("weight names differ")
    else:
        bad = [k for k, v in ref["weights"].items()
               if v.dtype != got["weights"][k].dtype or v.shape != got["weights"][k].shape
               or v.tobytes() != got["weights"][k].tobytes()]
        if bad:
            problems.append(f"{len(bad)} tensors differ (e.g. {bad[0]})")
    for key in ("last_iteration", "best_metrics", "log"):
        if ref[key] != got[key]:
            problems.append(f"{key} differs")
    for key in ("extra_sets", "leftovers"):
        if got[key]:
            problems.append(f"{key}: {got[key][:3]}")
    return problems


# ---- one case --------------------------------------------------------------------------

def run_case(case: dict, base: Path, ref: dict, iters: int, val_interval: int) -> dict:
    """Kill at ``case["kills"]`` (one point per run; the last run goes to the end)."""
    work = base / case["name"]
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    out = {**case, "runs": []}
    t0 = time.perf_counter()
    kills = list(case["kills"]) + [None]
    for i, point in enumerate(kills):
        env = {C.KILL_ENV: str(point)} if point is not None else {}
        code = _in_child(_run(work, iters, val_interval, resume=i > 0), work / "output.txt", env)
        out["runs"].append(code)
        expected = C.KILL_EXIT_CODE if point is not None else 0
        if code != expected:
            out["problems"] = [f"run {i + 1} exited {code}, expected {expected}: "
                               + (work / "output.txt").read_text()[-600:]]
            break
    else:
        try:
            out["problems"] = compare(ref, snapshot(work))
        except Exception as e:  # noqa: BLE001 -- a broken run folder is a failed case
            out["problems"] = [f"cannot read the run folder: {type(e).__name__}: {e}"]
    text = (work / "output.txt").read_text() if (work / "output.txt").is_file() else ""
    out["fallback_note"] = "newest complete set" in text
    out["fresh_start"] = "starting afresh" in text
    out["seconds"] = round(time.perf_counter() - t0, 2)
    out["bit_identical"] = not out["problems"]
    if out["bit_identical"]:
        shutil.rmtree(work, ignore_errors=True)
    return out


def run_cases(cases, base, ref, iters, val_interval, jobs) -> list[dict]:
    """Each case in a forked process of its own, ``jobs`` at a time."""
    results, running, queue = {}, {}, list(cases)
    while queue or running:
        while queue and len(running) < jobs:
            case = queue.pop(0)
            res_file = base / f"{case['name']}.json"
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    res = run_case(case, base, ref, iters, val_interval)
                    res_file.write_text(json.dumps(res))
                except BaseException:
                    traceback.print_exc()
                    code = 1
                finally:
                    os._exit(code)
            running[pid] = (case, res_file)
        pid, _ = os.wait()
        case, res_file = running.pop(pid)
        if res_file.is_file():
            results[case["name"]] = json.loads(res_file.read_text())
        else:
            results[case["name"]] = {**case, "bit_identical": False,
                                     "problems": ["case runner crashed"]}
        r = results[case["name"]]
        print(f"{case['name']:<14} {'ok' if r['bit_identical'] else 'FAIL'} "
              f"{' '.join(case['labels'])[:90]}", flush=True)
    return [results[c["name"]] for c in cases]


def _kind(label: str) -> str:
    """'create .tmp..', 'write x (half written)', ... -> the operation's kind."""
    if label.startswith("write ") and label.endswith("(half written)"):
        return "half-written write"
    if label.startswith("log line"):
        return "half-written log line"
    if label.endswith("(half removed)"):
        return "half-done removal"
    return label.split(" ", 1)[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--work", help="scratch folder (default: a temporary one)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--iters", type=int, default=6)
    ap.add_argument("--val-interval", type=int, default=2)
    ap.add_argument("--every", type=int, default=1,
                    help="kill at every N-th point only (1: all of them)")
    ap.add_argument("--double", type=int, default=6,
                    help="double-kill cases: kill the resuming run at its first N points")
    args = ap.parse_args(argv)
    t_start, load_start = time.perf_counter(), os.getloadavg()[0]
    torch.set_num_threads(1)
    base = Path(args.work or tempfile.mkdtemp(prefix="kill-resume-"))
    base.mkdir(parents=True, exist_ok=True)

    # the uninterrupted run, with every point it passes listed
    trace, ref_dir = base / "trace.tsv", base / "reference"
    shutil.rmtree(ref_dir, ignore_errors=True)
    trace.unlink(missing_ok=True)
    t0 = time.perf_counter()
    code = _in_child(_run(ref_dir, args.iters, args.val_interval, False),
                     base / "reference.txt", {C.TRACE_ENV: str(trace)})
    ref_seconds = time.perf_counter() - t0
    if code != 0:
        print((base / "reference.txt").read_text()[-3000:])
        return 1
    points = [line.split("\t", 1) for line in trace.read_text().splitlines()]
    ref = snapshot(ref_dir)
    assert not ref["extra_sets"] and not ref["leftovers"], ref

    cases = [{"name": f"kill{int(n):03d}", "kills": [int(n)], "labels": [label]}
             for n, label in points[::args.every]]
    # double kills: first killed where the resuming run has to mend something (a set
    # renamed but not yet pointed at, a half-removed old set, a torn log line), then
    # killed again at each of its own first points (pointer repair, clean-up, log
    # truncation), then resumed once more
    def nth(prefix, k):
        hits = [int(n) for n, label in points if label.startswith(prefix)]
        return hits[min(k, len(hits) - 1)]
    firsts = sorted({nth("fsync folder checkpoints", 1), nth("remove ", 0),
                     nth("log line", len(points))})
    for first in firsts:
        for second in range(1, args.double + 1):
            cases.append({"name": f"kill{first:03d}+{second}", "kills": [first, second],
                          "labels": [points[first - 1][1], f"resume point {second}"]})
    results = run_cases(cases, base, ref, args.iters, args.val_interval, args.jobs)

    kinds = {}
    for r in results:
        if len(r["kills"]) == 1:
            k = _kind(r["labels"][0])
            kinds.setdefault(k, [0, 0])
            kinds[k][0] += 1
            kinds[k][1] += bool(r["bit_identical"])
    ok = sum(r["bit_identical"] for r in results)
    summary = {
        "what": "kill at every numbered point of a tiny training run (6 iterations, a "
                "checkpoint set every 2), resume, compare with the uninterrupted run",
        "command": "python benchmarks/kill_resume.py " + " ".join(argv or sys.argv[1:]),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "points_in_run": len(points),
        "cases": len(results), "bit_identical": ok,
        "double_kill_cases": sum(len(r["kills"]) > 1 for r in results),
        "fresh_starts": sum(bool(r.get("fresh_start")) for r in results),
        "fallbacks_said": sum(bool(r.get("fallback_note")) for r in results),
        "by_kind": {k: {"cases": v[0], "bit_identical": v[1]} for k, v in sorted(kinds.items())},
        "reference_run_s": round(ref_seconds, 2),
        "total_s": round(time.perf_counter() - t_start, 1),
        # CPU seconds of all runs (independent of what else the machine was doing),
        # and the machine's 1-minute load average at start and end
        "cpu_s": round(sum(getattr(resource.getrusage(resource.RUSAGE_CHILDREN), f)
                           for f in ("ru_utime", "ru_stime")), 1),
        "load_average": [round(load_start, 1), round(os.getloadavg()[0], 1)],
        "jobs": args.jobs,
        "failures": [r for r in results if not r["bit_identical"]],
        "trace": [f"{n}\t{label}" for n, label in points],
    }
    print(f"{ok}/{len(results)} cases bit-identical ({summary['double_kill_cases']} double "
          f"kills, {len(points)} points in the run) in {summary['total_s']} s "
          f"({summary['cpu_s']} CPU s, load average {summary['load_average']})")
    for k, v in summary["by_kind"].items():
        print(f"  {k:<22} {v['bit_identical']}/{v['cases']}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=1))
    if not args.work:
        shutil.rmtree(base, ignore_errors=True)
    return 0 if ok == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
