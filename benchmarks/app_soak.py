#!/usr/bin/env python
"""App soak: a few thousand mixed requests from concurrent clients against one server,
bounded in time, with the server's resident memory sampled throughout.

The app runs in a child process (``python -m hfgd_lab.app``, warm-up included) on the
bundled models, or on random-weight stand-ins of the same architecture when those are
not installed (memory and time do not depend on the weights' values). ``--clients``
threads then call the HTTP API (what the page and ``gradio_client`` use) with a fixed
mix: first results on images the server has not seen (so the analysis cache keeps
filling and evicting), repeats at other resolution caps, attention clicks, class tokens,
guidance, the ImageNet view, the three-model comparison, model loads, and bad inputs
(a text file, a truncated JPEG, a 20000 x 20000 PNG refused by the pixel cap). Every
``--sample-every`` seconds the server's RSS (VmRSS) is read from /proc.

The claim checked (issue 16): RSS levels off at or below idle + the analysis cache's
cap (``--cache-mb``) + 300 MB. "Idle" is the RSS after start-up and warm-up, before the
first request; "levels off" means the highest RSS of the last quarter of the requests
is within ``--plateau-mb`` of the highest of the second quarter.

    .venv/bin/python benchmarks/app_soak.py --requests 3000 --clients 16 --json soak.json
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hfgd_lab.app.testing import ServerProcess, huge_png  # noqa: E402
from hfgd_lab.data.samples import photo_sources, scene_samples  # noqa: E402
from hfgd_lab.engine import zoo  # noqa: E402

# action -> share of the requests
MIX = {"segment_new": 0.30, "segment_repeat": 0.15, "attention": 0.20, "class_tokens": 0.10,
       "guidance": 0.06, "imagenet": 0.06, "bad_input": 0.07, "load_model": 0.04,
       "compare": 0.02}
EXPECTED_ERRORS = {"bad_input"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", help="zoo folder (default: the bundled models, else "
                                     "random-weight stand-ins)")
    p.add_argument("--requests", type=int, default=3000, help="requests in all")
    p.add_argument("--seconds", type=float, default=1800, help="stop after this long anyway")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients")
    p.add_argument("--threads", type=int, default=1, help="server's torch/BLAS threads")
    p.add_argument("--cache-mb", type=float, default=256, help="server's analysis cache cap")
    p.add_argument("--cache-size", type=int, default=6, help="server's analysis cache entries")
    p.add_argument("--images", type=int, default=400, help="distinct images in the pool")
    p.add_argument("--sample-every", type=float, default=2.0, help="RSS sampling period, s")
    p.add_argument("--plateau-mb", type=float, default=100,
                   help="how much the last quarter's peak may exceed the second quarter's")
    p.add_argument("--only", nargs="+", choices=list(MIX), metavar="ACTION",
                   help="only these request types, in their mix's proportions (to find "
                        "which one makes memory grow); segment_new still runs until an "
                        f"image is seen. Types: {', '.join(MIX)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write every number here")
    return p.parse_args(argv)


def weights_folder(arg):
    if arg:
        return Path(arg), "given"
    if all(n in zoo.list_pretrained() for n in zoo.BUNDLED):
        return zoo.WEIGHTS_DIR, "bundled"
    folder = Path(tempfile.mkdtemp(prefix="hfgd-soak-weights-"))
    return zoo.write_stand_ins(folder), "random stand-ins (bundled models not installed)"


def encode(arr, fmt, **kw) -> bytes:
    b = io.BytesIO()
    Image.fromarray(arr).save(b, fmt, **kw)
    return b.getvalue()


def make_pool(n: int, rng: random.Random) -> list[tuple[str, bytes, tuple]]:
    """(name, file bytes, (W, H)): scenes of 128-384 px and crops/mirrors of the photos."""
    pool = []
    photos = [np.asarray(Image.open(p.path).convert("RGB")) for p in photo_sources()]
    sizes = (128, 160, 192, 256, 320, 384)
    scenes = scene_samples(n // 2, size=192, seed=7, split="soak")
    for i, s in enumerate(scenes):
        side = sizes[i % len(sizes)]
        img = np.asarray(Image.fromarray(s.image).resize((side, side)))
        pool.append((f"scene{i}.png", encode(img, "PNG"), (side, side)))
    for i in range(n - len(pool)):
        a = photos[i % len(photos)]
        if (i // len(photos)) % 2:
            a = a[:, ::-1]
        top = (i // (2 * len(photos))) % max(1, a.shape[0] // 4)
        a = np.ascontiguousarray(a[top:])
        pool.append((f"photo{i}.jpg", encode(a, "JPEG", quality=90), (a.shape[1], a.shape[0])))
    rng.shuffle(pool)
    return pool


class Api:
    """The server's REST API (upload, then call an endpoint and read its result)."""

    def __init__(self, url):
        self.url = url
        self.http = httpx.Client(timeout=900)

    def upload(self, name: str, data: bytes) -> dict:
        r = self.http.post(self.url + "gradio_api/upload", files={"files": (name, data)})
        r.raise_for_status()
        return {"path": r.json()[0], "orig_name": name, "meta": {"_type": "gradio.FileData"}}

    def call(self, endpoint: str, *data) -> str:
        """-> "ok" or "error" (the server answered the request either way)."""
        r = self.http.post(f"{self.url}gradio_api/call/{endpoint}", json={"data": list(data)})
        r.raise_for_status()
        eid = r.json()["event_id"]
        text = self.http.get(f"{self.url}gradio_api/call/{endpoint}/{eid}").text
        if "event: complete" in text:
            return "ok"
        if "event: error" in text:
            return "error"
        raise RuntimeError(f"/{endpoint}: no result: {text[-300:]}")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run(args) -> dict:
    rng = random.Random(args.seed)
    weights, source = weights_folder(args.weights)
    tmp = Path(tempfile.mkdtemp(prefix="hfgd-soak-"))
    pool = make_pool(args.images, rng)
    jpeg = encode(scene_samples(1, size=192, seed=9, split="soak-bad")[0].image, "JPEG")
    bad = [("notes.png", b"a text file, not an image"),
           ("cut.jpg", jpeg[: len(jpeg) // 3]),
           ("huge.png", huge_png(tmp / "huge.png").read_bytes())]
    server = ServerProcess(weights, threads=args.threads, log=tmp / "server.log",
                           args=["--cache-mb", args.cache_mb, "--cache-size", args.cache_size])
    samples, lock = [], threading.Lock()
    done = Counter()
    outcomes = Counter()
    latency = defaultdict(list)
    unexpected = []
    try:
        t_start = time.time()
        server.wait_ready(timeout=900)
        start_s = time.time() - t_start
        time.sleep(5)
        idle = rss_mb(server.proc.pid)
        api = Api(server.url)
        files = {}           # pool index -> uploaded FileData (uploaded on first use)
        seen = []            # pool indices analysed at least once
        bad_files = [api.upload(n, d) for n, d in bad]
        stop = threading.Event()
        t0 = time.time()

        def sampler():
            while not stop.is_set():
                with lock:
                    n = sum(done.values())
                samples.append((time.time() - t0, n, rss_mb(server.proc.pid)))
                stop.wait(args.sample_every)

        mix = {k: v for k, v in MIX.items() if not args.only or k in args.only}

        def next_action(r: random.Random) -> str:
            x, acc = r.random(), 0.0
            x *= sum(mix.values())
            for name, share in mix.items():
                acc += share
                if x < acc:
                    return name
            return "segment_new"

        def worker(k: int):
            r = random.Random(args.seed * 1000 + k)
            client = Api(server.url)
            while not stop.is_set():
                with lock:
                    if sum(done.values()) >= args.requests:
                        return
                if time.time() - t0 > args.seconds:
                    return
                action = next_action(r)
                with lock:
                    if action != "segment_new" and not seen:
                        action = "segment_new"
                    if action == "segment_new":
                        i = len(files) % len(pool)
                        files.setdefault(i, None)
                    elif action in EXPECTED_ERRORS:
                        i = None
                    else:
                        i = r.choice(seen)
                side = r.choice((128, 192, 256, 384, 512))
                t = time.perf_counter()
                try:
                    if i is not None and files.get(i) is None:
                        f = client.upload(pool[i][0], pool[i][1])
                        with lock:
                            files[i] = f
                    f = files.get(i) if i is not None else None
                    model = zoo.DEFAULT_MODEL
                    opts = (side, False, 192, False)
                    if action in ("segment_new", "segment_repeat"):
                        out = client.call("segment", f, model, *opts, 0.5)
                    elif action == "attention":
                        w, h = pool[i][2]
                        out = client.call("attention", f, model, *opts, r.randrange(w),
                                          r.randrange(h))
                    elif action == "class_tokens":
                        out = client.call("class_tokens", f, model, *opts,
                                          r.choice(["", "sky", "water", "grass"]))
                    elif action == "guidance":
                        out = client.call("guidance", f, model, *opts)
                    elif action == "imagenet":
                        out = client.call("imagenet", f, 5)
                    elif action == "compare":
                        out = client.call("compare", f, 192, False, 192, False, 0.5)
                    elif action == "load_model":
                        out = client.call("load_model", r.choice(list(zoo.BUNDLED)))
                    else:
                        out = client.call("segment", r.choice(bad_files), model, *opts, 0.5)
                except Exception as e:  # the server did not answer: that is a failure
                    out = f"failed: {type(e).__name__}: {e}"
                dt = time.perf_counter() - t
                with lock:
                    done[action] += 1
                    outcomes[(action, out if out in ("ok", "error") else "failed")] += 1
                    latency[action].append(dt)
                    if action == "segment_new" and out == "ok":
                        seen.append(i)
                    if (out == "error") != (action in EXPECTED_ERRORS):
                        unexpected.append(f"{action}: {out}")

        sampling = threading.Thread(target=sampler, daemon=True)
        sampling.start()
        workers = [threading.Thread(target=worker, args=(k,)) for k in range(args.clients)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.time() - t0
        stop.set()
        sampling.join()
        samples.append((elapsed, sum(done.values()), rss_mb(server.proc.pid)))
        final = server.memory()
        alive = server.alive()
    finally:
        server.stop()
    total = sum(done.values())
    rss = [s[2] for s in samples]

    def peak_in(lo, hi):
        vals = [s[2] for s in samples if lo * total <= s[1] <= hi * total]
        return max(vals) if vals else float("nan")

    bound = idle + args.cache_mb + 300
    q2, q4 = peak_in(0.25, 0.5), peak_in(0.75, 1.0)
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "argv": sys.argv[1:],
        "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "python": platform.python_version()},
        "weights": source, "clients": args.clients, "threads": args.threads,
        "cache_mb": args.cache_mb, "cache_size": args.cache_size, "images": len(pool),
        "server_start_s": start_s, "requests": total, "seconds": elapsed,
        "requests_per_s": total / elapsed, "by_action": dict(done),
        "outcomes": {f"{a}/{o}": n for (a, o), n in sorted(outcomes.items())},
        "unexpected": unexpected[:20], "unexpected_count": len(unexpected),
        "server_alive": alive,
        "rss_idle_mb": idle, "rss_peak_mb": max(rss), "rss_final_mb": final["rss"],
        "vmhwm_mb": final["peak"], "bound_mb": bound,
        "peak_second_quarter_mb": q2, "peak_last_quarter_mb": q4,
        "levels": [{"requests_from": int(f * total), "peak_rss_mb": peak_in(f, f + 0.1)}
                   for f in np.arange(0, 1.0, 0.1)],
        "latency": {a: {"median_s": statistics.median(v), "p90_s": sorted(v)[int(0.9 * (len(v) - 1))],
                        "n": len(v)} for a, v in latency.items()},
        "samples": samples,
    }
    result["within_bound"] = bool(max(rss) <= bound)
    result["levelled_off"] = bool(q4 - q2 <= args.plateau_mb)
    if source.startswith("random"):
        import shutil
        shutil.rmtree(weights, ignore_errors=True)
    return result


def _cpu() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def report(r: dict) -> str:
    lines = [f"# App soak ({r['date']}, {r['machine']['cpu']}, {r['machine']['cores']} cores, "
             f"weights: {r['weights']})",
             f"{r['requests']} requests from {r['clients']} clients in {r['seconds']:.0f} s "
             f"({r['requests_per_s']:.1f}/s); server alive: {r['server_alive']}; unexpected "
             f"answers: {r['unexpected_count']}",
             f"RSS idle {r['rss_idle_mb']:.0f} MB, peak {r['rss_peak_mb']:.0f} MB, final "
             f"{r['rss_final_mb']:.0f} MB; bound idle + cache cap ({r['cache_mb']:.0f} MB) + 300 "
             f"= {r['bound_mb']:.0f} MB: {'within' if r['within_bound'] else 'EXCEEDED'}",
             f"peak of the 2nd quarter {r['peak_second_quarter_mb']:.0f} MB, of the last "
             f"{r['peak_last_quarter_mb']:.0f} MB: "
             f"{'levelled off' if r['levelled_off'] else 'STILL GROWING'}",
             "| requests from | peak RSS (MB) |", "|---|---|"]
    lines += [f"| {lv['requests_from']} | {lv['peak_rss_mb']:.0f} |" for lv in r["levels"]]
    lines += ["| request | n | median s | p90 s |", "|---|---|---|---|"]
    lines += [f"| {a} | {v['n']} | {v['median_s']:.2f} | {v['p90_s']:.2f} |"
              for a, v in sorted(r["latency"].items())]
    lines.append("outcomes: " + ", ".join(f"{k} {v}" for k, v in r["outcomes"].items()))
    return "\n".join(lines)


def _stop_on_sigterm(signum, frame):
    # run()'s finally stops the server (no orphan server under `timeout`); a second
    # SIGTERM must not interrupt that
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv=None) -> dict:
    args = parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
    r = run(args)
    print(report(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))
    return r


if __name__ == "__main__":
    main()
