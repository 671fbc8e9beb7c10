"""The Gradio app: upload an image and see inside HFGD.

``python app.py`` or ``hfgd-lab app`` serves it on http://127.0.0.1:7860 with the
bundled default model. Layout:

- :mod:`.state`: model store, LRU cache, options (no Gradio);
- :mod:`.handlers`: :class:`App`, every function of the app as plain Python (no Gradio);
- :mod:`.render`: small pictures composed from :mod:`hfgd_lab.viz` arrays;
- :mod:`.examples`: example images (procedural scenes, photos from installed packages);
- :mod:`.ui`: the Gradio Blocks, wiring only;
- :mod:`.testing`: helpers for the app's tests and benchmark.

``create_app(...)`` builds the pieces; ``serve(...)`` launches them with the safety
settings (upload cap, bounded queue, no extra file access); ``main(argv)`` is the
command line.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

__all__ = ["main", "serve", "create_app", "add_arguments", "MAX_FILE_SIZE"]

MAX_FILE_SIZE = "10mb"      # uploads above this are refused by the server
QUEUE_SIZE = 64             # waiting requests beyond this are refused ("queue full")
CONCURRENCY = 1             # events of one listener (one function) running at a time;
                            # decodes and forward passes are serialised anyway


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--share", action="store_true",
                   help="also open a temporary public gradio.live link (off by default)")
    p.add_argument("--model", default=None,
                   help="model selected at start: a bundled name (default: the bundled "
                        "default) or a checkpoint path")
    p.add_argument("--max-side", type=int, default=512,
                   help="default resolution cap, longest side in pixels")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda if "
                                                    "available)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch and BLAS (default: min(2, cores))")
    p.add_argument("--no-checkpoint-paths", action="store_true",
                   help="offer only the bundled models (no checkpoint paths typed by users)")
    p.add_argument("--cache-size", type=int, default=6,
                   help="analysed (model, image, options) entries kept in memory")
    p.add_argument("--cache-mb", type=float, default=1024,
                   help="memory those entries may take (MB; the newest is always kept)")
    p.add_argument("--no-warmup", action="store_true",
                   help="skip the warm-up pass at start (first request is then slower)")


def limit_threads(threads=None) -> int:
    """torch and BLAS/OpenMP pools to ``threads`` (BLAS oversubscription made PCA 10x
    slower on a busy 2-core machine)."""
    import torch
    n = int(threads or min(2, os.cpu_count() or 1))
    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=n)
    except ImportError:  # threadpoolctl comes with scikit-learn; without it, env vars only
        pass
    return n


def create_app(device: str = "auto", allow_paths: bool = True, cache_size: int = 6,
               examples: bool = True, cache_mb: float = 1024):
    """-> (App, examples list)."""
    import torch

    from .examples import make_examples
    from .handlers import App
    from .state import ModelStore
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    ex = []
    if examples:
        import atexit
        import shutil
        import tempfile
        folder = tempfile.mkdtemp(prefix="hfgd-lab-examples-")  # Gradio serves temp files
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        ex = make_examples(folder)
    app = App(ModelStore(device=device, allow_paths=allow_paths), examples=ex,
              cache_size=cache_size, cache_mb=cache_mb)
    return app, ex


def warm_up(app, model=None) -> None:
    """One small pass through every view, so the first user does not pay for imports
    (scikit-learn's PCA alone takes seconds the first time) and model loading."""
    import numpy as np

    from .state import Options
    from ..data.scenes import SceneDataset
    img, _ = SceneDataset(num=1, size=96, seed=0, split="warmup").load(0)
    img = np.ascontiguousarray(img)
    o = Options(max_side=96)
    app.segment(img, model, o)
    app.class_tokens(img, model, o)
    app.guidance(img, model, o)
    app.attention(img, model, o)
    app.analyses.clear()
    app.images.clear()


def serve(host: str = "127.0.0.1", port: int = 7860, share: bool = False, model=None,
          max_side: int = 512, device: str = "auto", threads=None, allow_paths: bool = True,
          cache_size: int = 6, warmup: bool = True, block: bool = True,
          cache_mb: float = 1024):
    """Build and launch the app. Returns ``(demo, local_url)`` when ``block`` is False."""
    n = limit_threads(threads)
    from .state import AppError, Options
    from .ui import CSS, build_demo
    max_side = int(min(max(max_side, Options.MIN_SIDE), Options.MAX_SIDE))
    app, ex = create_app(device, allow_paths, cache_size, cache_mb=cache_mb)
    default = model or app.store.default()
    if default is None:
        print("hfgd-lab app: no bundled model found in the weights folder and no --model "
              "given; the app starts, but pick a checkpoint path to use it", file=sys.stderr)
    elif warmup:
        try:
            warm_up(app, default)
        except AppError as e:
            print(f"hfgd-lab app: warning: {e}", file=sys.stderr)
    demo = build_demo(app, ex, default_model=default, max_side=max_side)
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY)
    print(f"hfgd-lab app: {len(ex)} examples, device {app.store.device}, {n} threads, "
          f"model {default}", flush=True)
    _, url, _ = demo.launch(
        server_name=host, server_port=port, share=share, max_file_size=MAX_FILE_SIZE,
        prevent_thread_lock=True, show_error=False, quiet=False, css=CSS,
        footer_links=["api"], allowed_paths=None)
    demo.app_state = app  # for in-process tests
    if not block:
        return demo, url
    import signal
    import threading

    def _stop(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        # SIGTERM shuts down like Ctrl-C: Gradio deletes the uploads and results it
        # wrote, and the example folder is removed at exit
        signal.signal(signal.SIGTERM, _stop)
    try:
        demo.block_thread()
    except (KeyboardInterrupt, OSError):
        pass
    finally:
        demo.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="hfgd-lab app",
                                description="Serve the Gradio app: see inside HFGD.")
    add_arguments(p)
    args = p.parse_args(argv)
    return run(args)


def run(args) -> int:
    logging.basicConfig(level=logging.WARNING)
    serve(host=args.host, port=args.port, share=args.share, model=args.model,
          max_side=args.max_side, device=args.device, threads=args.threads,
          allow_paths=not args.no_checkpoint_paths, cache_size=args.cache_size,
          warmup=not args.no_warmup, cache_mb=args.cache_mb)
    return 0
