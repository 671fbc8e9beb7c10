#!/usr/bin/env python
"""App latency: first result, cached repeat and attention click, through the running
server (HTTP, as the page and ``gradio_client`` use it), in a real browser, and in
process; plus the server's peak memory on a 20000 x 20000 PNG and JPEG.

The app runs in a child process (``python -m hfgd_lab.app``) on the bundled models
(or, when they are not installed, random-weight stand-ins with the same architecture:
latency does not depend on the weights' values). Timed through HTTP:

* **upload**: ``POST /gradio_api/upload`` of the image file;
* **first result**: ``/segment`` on an image the server has not seen (read, one
  forward pass, the overlay encoded) -- the call and its streamed result, without
  downloading the overlay;
* **cached**: ``/segment`` again with another opacity (the cached pass, re-drawn);
* **click**: ``/attention`` with explicit x, y on the analysed image (what a click on
  the attention image does: attention maps, grid and rollout drawn and encoded).

In the browser (Debian's chromium, headless, Playwright): an example clicked until
its overlay is displayed, and a click on the attention image until the attention
panel shows the new pixel.

    .venv/bin/python benchmarks/app_latency.py --repeats 10 --json app_latency.json
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", help="zoo folder (default: the bundled models, else "
                                     "random-weight stand-ins)")
    p.add_argument("--repeats", type=int, default=10, help="images / clicks per measurement")
    p.add_argument("--threads", type=int, default=1, help="server's torch/BLAS threads")
    p.add_argument("--max-side", type=int, default=512, help="resolution cap for photos")
    p.add_argument("--no-browser", action="store_true", help="skip the chromium part")
    p.add_argument("--no-huge", action="store_true", help="skip the 20000 x 20000 images")
    p.add_argument("--json", help="write every number here")
    return p.parse_args(argv)


def stats(xs) -> dict:
    xs = sorted(xs)
    return {"median_ms": 1000 * statistics.median(xs), "min_ms": 1000 * xs[0],
            "p90_ms": 1000 * xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))],
            "n": len(xs)}


def weights_folder(arg):
    from hfgd_lab.engine import zoo
    if arg:
        return Path(arg), "given"
    if all(n in zoo.list_pretrained() for n in zoo.BUNDLED):
        return zoo.WEIGHTS_DIR, "bundled"
    folder = Path(tempfile.mkdtemp(prefix="hfgd-bench-weights-"))
    return zoo.write_stand_ins(folder), "random stand-ins (bundled models not installed)"


class Http:
    """The server's REST API: upload once, then call endpoints on the uploaded file."""

    def __init__(self, url, server=None):
        import httpx
        self.url = url
        self.server = server  # for the server's CPU time per call
        self.last_cpu = 0.0
        self.http = httpx.Client(timeout=600)

    def upload(self, data: bytes, name: str) -> tuple[dict, float]:
        t0 = time.perf_counter()
        r = self.http.post(self.url + "gradio_api/upload", files={"files": (name, data)})
        r.raise_for_status()
        dt = time.perf_counter() - t0
        return {"path": r.json()[0], "orig_name": name, "meta": {"_type": "gradio.FileData"}}, dt

    def call(self, endpoint: str, *data) -> tuple[list, float]:
        self.cpu0 = self.server.cpu_seconds() if self.server else 0.0
        t0 = time.perf_counter()
        r = self.http.post(f"{self.url}gradio_api/call/{endpoint}", json={"data": list(data)})
        r.raise_for_status()
        eid = r.json()["event_id"]
        text = self.http.get(f"{self.url}gradio_api/call/{endpoint}/{eid}").text
        dt = time.perf_counter() - t0
        self.last_cpu = (self.server.cpu_seconds() - self.cpu0) if self.server else 0.0
        if "event: complete" not in text:
            raise RuntimeError(f"/{endpoint} failed: {text[-500:]}")
        payload = text.split("event: complete", 1)[1].split("data:", 1)[1].strip()
        return json.loads(payload.splitlines()[0]), dt


def png_bytes(arr) -> bytes:
    from PIL import Image
    b = io.BytesIO()
    Image.fromarray(arr).save(b, "PNG")
    return b.getvalue()


def jpeg_bytes(arr) -> bytes:
    from PIL import Image
    b = io.BytesIO()
    Image.fromarray(arr).save(b, "JPEG", quality=90)
    return b.getvalue()


def inputs(repeats: int):
    """(scenes, photos): distinct images, so that each first request misses the cache."""
    from PIL import Image

    from hfgd_lab.data.samples import photo_sources, scene_samples
    scenes = [png_bytes(s.image) for s in scene_samples(repeats, size=192, seed=11,
                                                         split="bench")]
    photos = []
    srcs = [np.asarray(Image.open(p.path).convert("RGB")) for p in photo_sources()]
    for i in range(repeats):
        a = srcs[i % len(srcs)]
        if (i // len(srcs)) % 2:
            a = a[:, ::-1]
        a = a[i // (2 * len(srcs)):]  # a different crop: a different file
        photos.append(jpeg_bytes(np.ascontiguousarray(a)))
    return scenes, photos


def api_part(http, scenes, photos, max_side, model, rng) -> dict:
    out = {}
    for kind, images, side in (("scene 192 px", scenes, 256), (f"photo, cap {max_side}",
                                                                 photos, max_side)):
        ups, firsts, cached, clicks = [], [], [], []
        cpu = {"first_result": [], "cached_segment": [], "click": []}
        for i, data in enumerate(images):
            f, dt = http.upload(data, f"img{i}.{'png' if kind.startswith('scene') else 'jpg'}")
            ups.append(dt)
            res, dt = http.call("segment", f, model, side, False, 192, False, 0.5)
            firsts.append(dt)
            cpu["first_result"].append(http.last_cpu)
            _, dt = http.call("segment", f, model, side, False, 192, False, 0.3)
            cached.append(dt)
            cpu["cached_segment"].append(http.last_cpu)
            w, h = (192, 192) if kind.startswith("scene") else (None, None)
            if w is None:
                from PIL import Image
                w, h = Image.open(io.BytesIO(data)).size
            for _ in range(2):
                x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
                _, dt = http.call("attention", f, model, side, False, 192, False, x, y)
                clicks.append(dt)
                cpu["click"].append(http.last_cpu)
        out[kind] = {"upload": stats(ups), "first_result": stats(firsts),
                     "cached_segment": stats(cached), "click": stats(clicks),
                     "server_cpu": {k: stats(v) for k, v in cpu.items()}}
    return out


def browser_part(url, repeats, rng) -> dict:
    from playwright.sync_api import sync_playwright

    from hfgd_lab.app.testing import CHROMIUM_ARGS, ensure_chromium
    exe = ensure_chromium()
    out = {}
    grid = "() => { const g = document.querySelector('#attention-grid .hfgd-tiles');" \
           " return g ? g.innerHTML : null; }"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(300_000)
        t0 = time.perf_counter()
        page.goto(url, wait_until="domcontentloaded")
        page.wait_for_selector("#examples img")
        out["page_load_ms"] = 1000 * (time.perf_counter() - t0)
        firsts = []
        for name in ("scene 5, 256 px", "scene 7, 384 px", "china"):
            before = page.locator("#seg-overlay img").get_attribute("src") \
                if page.locator("#seg-overlay img").count() else None
            t0 = time.perf_counter()
            page.locator("#examples .thumbnail-item", has_text=name).click()
            page.wait_for_function(
                "(b) => { const i = document.querySelector('#seg-overlay img');"
                " return i && i.src !== b && i.complete && i.naturalWidth > 0; }", arg=before)
            firsts.append(time.perf_counter() - t0)
        out["example_to_overlay"] = stats(firsts)
        page.get_by_role("tab", name="CAE attention").click()
        page.wait_for_function("() => { const e = document.querySelector('#attention-caption');"
                               " return e && e.innerText.includes('Query pixel'); }")
        time.sleep(2)
        img = page.locator("#attention-image img")
        clicks = []
        for _ in range(repeats):
            box = img.bounding_box()
            fx, fy = rng.uniform(0.05, 0.95, 2)
            before = page.evaluate(grid)
            t0 = time.perf_counter()
            page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
            page.wait_for_function(f"(b) => ({grid})() !== b", arg=before)
            clicks.append(time.perf_counter() - t0)
        out["click_to_attention_panel"] = stats(clicks)
        browser.close()
    return out


def huge_part(server, http, model) -> dict:
    """A 20000 x 20000 JPEG (decoded at 1/8 scale: 6 MP, under the app's 40 MP cap) and a
    one-colour PNG of the same size (400 MP: refused from its header)."""
    from PIL import Image

    from hfgd_lab.app.testing import huge_png
    folder = Path(tempfile.mkdtemp(prefix="hfgd-bench-huge-"))
    png, jpg = folder / "solid_20000.png", folder / "solid_20000.jpg"
    huge_png(png)
    Image.new("RGB", (20000, 20000), (90, 140, 200)).save(jpg, quality=50)
    out = {"before": server.memory()}
    for name, path in (("jpeg", jpg), ("png", png)):
        f, up = http.upload(path.read_bytes(), path.name)
        try:
            _, dt = http.call("segment", f, model, 512, False, 192, False, 0.5)
            answer = "segmented"
        except RuntimeError as e:
            dt, answer = float("nan"), str(e).split("data:", 1)[-1].strip()[:160]
        out[name] = {"file_mb": path.stat().st_size / 2 ** 20, "seconds": dt,
                     "answer": answer, "memory": server.memory()}
    for p in (png, jpg):
        p.unlink()
    folder.rmdir()
    return out


def in_process_part(weights, scenes, photos, max_side, rng) -> dict:
    from hfgd_lab.app.handlers import App
    from hfgd_lab.app.server import warm_up
    from hfgd_lab.app.state import ModelStore, Options
    from hfgd_lab.engine import zoo
    model = zoo.DEFAULT_MODEL
    previous, zoo.WEIGHTS_DIR = zoo.WEIGHTS_DIR, Path(weights)
    try:
        app = App(ModelStore("cpu"), cache_size=len(photos) + 2)
        app.model(model)  # loaded now: the store reads the folder only here
    finally:
        zoo.WEIGHTS_DIR = previous
    warm_up(app, model)
    out = {}
    for kind, images, side in (("scene 192 px", scenes, 256), (f"photo, cap {max_side}",
                                                                 photos, max_side)):
        first, click, first_cpu, click_cpu = [], [], [], []
        for data in images:
            t0, c0 = time.perf_counter(), time.process_time()
            app.segment(data, model, Options(max_side=side))
            first.append(time.perf_counter() - t0)
            first_cpu.append(time.process_time() - c0)
            h, w = app.analysed(data, model, Options(max_side=side)).analysis.input_size
            for _ in range(2):
                t0, c0 = time.perf_counter(), time.process_time()
                app.attention(data, model, Options(max_side=side),
                              float(rng.uniform(0, w)), float(rng.uniform(0, h)),
                              space="analysed")
                click.append(time.perf_counter() - t0)
                click_cpu.append(time.process_time() - c0)
        out[kind] = {"first_result": stats(first), "click": stats(click),
                     "first_result_cpu": stats(first_cpu), "click_cpu": stats(click_cpu)}
    return out


def fmt(s: dict) -> str:
    return f"{s['median_ms']:.0f} ms (p90 {s['p90_ms']:.0f}, n={s['n']})"


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    from hfgd_lab.app.server import limit_threads
    from hfgd_lab.app.testing import ServerProcess
    from hfgd_lab.engine.zoo import DEFAULT_MODEL
    limit_threads(args.threads)
    weights, source = weights_folder(args.weights)
    rng = np.random.default_rng(0)
    scenes, photos = inputs(args.repeats)
    result = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
              "argv": sys.argv[1:] if argv is None else list(argv),
              "machine": {"cpu": platform.processor() or platform.machine(),
                          "cores": os.cpu_count(), "python": platform.python_version(),
                          "torch": torch.__version__},
              "weights": source, "threads": args.threads}
    import gradio
    result["machine"]["gradio"] = gradio.__version__
    try:
        result["machine"]["cpu"] = next(line.split(":", 1)[1].strip() for line in
                                        open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass

    t0 = time.perf_counter()
    server = ServerProcess(weights, threads=args.threads)
    try:
        server.wait_ready(timeout=300)
        result["server_start_s"] = time.perf_counter() - t0
        result["server_memory_idle"] = server.memory()
        http = Http(server.url, server)
        result["api"] = api_part(http, scenes, photos, args.max_side, DEFAULT_MODEL, rng)
        if not args.no_browser:
            result["browser"] = browser_part(server.url, args.repeats, rng)
        if not args.no_huge:
            result["huge"] = huge_part(server, http, DEFAULT_MODEL)
    finally:
        server.stop()
    result["in_process"] = in_process_part(weights, scenes, photos, args.max_side, rng)
    if source.startswith("random"):
        import shutil
        shutil.rmtree(weights, ignore_errors=True)

    print(f"# App latency ({result['date']}, {result['machine']['cpu']}, "
          f"{args.threads} thread(s), weights: {source})")
    print(f"server start (with warm-up): {result['server_start_s']:.1f} s; idle RSS "
          f"{result['server_memory_idle']['rss']:.0f} MB")
    print("| input | upload | first result | cached /segment | click (/attention) | "
          "in process: first | in process: click |")
    print("|---|---|---|---|---|---|---|")
    for kind, r in result["api"].items():
        ip = result["in_process"][kind]
        print(f"| {kind} | {fmt(r['upload'])} | {fmt(r['first_result'])} | "
              f"{fmt(r['cached_segment'])} | {fmt(r['click'])} | {fmt(ip['first_result'])} | "
              f"{fmt(ip['click'])} |")
    print("in process, CPU time: " + "; ".join(
        f"{kind}: first result {fmt(r['first_result_cpu'])}, click {fmt(r['click_cpu'])}"
        for kind, r in result["in_process"].items()))
    print("server CPU time per call (user + system, all threads; load-independent):")
    for kind, r in result["api"].items():
        c = r["server_cpu"]
        print(f"  {kind}: first result {fmt(c['first_result'])}, cached "
              f"{fmt(c['cached_segment'])}, click {fmt(c['click'])}")
    if "browser" in result:
        b = result["browser"]
        print(f"browser: page load {b['page_load_ms']:.0f} ms; example -> overlay shown "
              f"{fmt(b['example_to_overlay'])}; click -> attention panel "
              f"{fmt(b['click_to_attention_panel'])}")
    if "huge" in result:
        h = result["huge"]
        for k in ("jpeg", "png"):
            print(f"20000x20000 {k.upper()} ({h[k]['file_mb']:.1f} MB file): {h[k]['answer']}; "
                  f"/segment {h[k]['seconds']:.1f} s, server peak RSS "
                  f"{h[k]['memory']['peak']:.0f} MB (before {h['before']['peak']:.0f} MB), RSS "
                  f"after {h[k]['memory']['rss']:.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
