"""Launching the app with the settings that make it safe to expose.

- **Models**: the bundled ones plus the checkpoints of ``--models-dir`` folders (an
  allow-list fixed at start-up); any checkpoint path only with
  ``--allow-checkpoint-paths`` (:class:`~.state.ModelStore`).
- **A private upload folder per server**: Gradio's default temporary folder
  (``$TMPDIR/gradio``) is shared by every Gradio app on the machine, and any of them
  serves a file another one received. :func:`private_folder` makes a folder only this
  process uses (mode 0700) and points ``GRADIO_TEMP_DIR`` (uploads and results) and
  ``GRADIO_EXAMPLES_CACHE`` at it before the Blocks exist; it is removed at exit. One
  server per process: Gradio reads these variables process-wide.
- **Bounded memory over time**: at most :data:`SESSIONS` Gradio sessions kept, at most 2
  malloc arenas, oneDNN's kernel cache capped, freed heap pages handed back after each
  analysis (see :data:`SESSIONS`, :func:`limit_malloc_arenas`, :func:`bound_kernel_cache`,
  ``benchmarks/app_soak.py``).
- **Bounded work per request**: uploads above ``MAX_FILE_SIZE`` are refused by the
  server; images above :data:`~.handlers.MAX_PIXELS` are refused from their header,
  before any pixel is decoded; a bounded queue, one heavy computation at a time.
"""
from __future__ import annotations

import argparse
import atexit
import ctypes
import ipaddress
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from ..data.samples import scene_samples
from . import add_arguments
from .examples import make_examples
from .handlers import App, MAX_PIXELS
from .state import AppError, ModelStore, Options
from .ui import build_demo
from .html import CSS

__all__ = ["main", "run", "serve", "create_app", "warm_up", "private_folder", "limit_threads",
           "limit_malloc_arenas", "bound_kernel_cache", "is_local", "paths_warning",
           "ServeError", "MAX_FILE_SIZE", "QUEUE_SIZE", "CONCURRENCY", "SESSIONS"]

MAX_FILE_SIZE = "10mb"      # uploads above this are refused by the server
QUEUE_SIZE = 64             # waiting requests beyond this are refused ("queue full")
CONCURRENCY = 1             # events of one listener (group) running at a time; decodes
                            # and forward passes are serialised anyway
SESSIONS = 128              # Gradio sessions whose state is kept (least recently used
# dropped). Gradio keeps a copy of the page's configuration per session (~0.26 MB fresh
# for this page's 142 blocks, more once outputs are stored in it), 10000 sessions by
# default, and every API call (/gradio_api/call/...) is a new session: a soak's RSS grew
# ~25 MB per 100 requests until this was capped. A dropped browser session falls back to
# the page's defaults for its gr.State (tab shown, model in use); its inputs are sent with
# every event anyway.


class ServeError(RuntimeError):
    """The server cannot start as asked (the message says why)."""


def is_local(host: str) -> bool:
    """True when ``host`` is reachable from this machine only (loopback)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def paths_warning(allow_paths: bool, host: str, share: bool) -> str | None:
    """What to tell the operator who opens checkpoint paths to clients beyond this
    machine (None when paths are off or the server is on loopback only)."""
    if not allow_paths or (is_local(host) and not share):
        return None
    where = "a public share link" if share else f"{host} (beyond this machine)"
    return (f"--allow-checkpoint-paths while serving on {where}: every client can load "
            "any checkpoint this server can read; use --models-dir DIR instead")


def private_folder() -> Path:
    """A new folder for this server's uploads, results and examples (mode 0700),
    removed at exit; Gradio is pointed at it (see the module docstring)."""
    folder = Path(tempfile.mkdtemp(prefix="hfgd-lab-app-"))
    folder.chmod(0o700)
    os.environ["GRADIO_TEMP_DIR"] = str(folder / "gradio")
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(folder / "examples-cache")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """At most ``arenas`` glibc malloc arenas (``mallopt(M_ARENA_MAX)``, what the
    ``MALLOC_ARENA_MAX`` environment variable sets). glibc gives each thread that
    allocates its own arena, up to 8 per core, and Gradio runs every request in a pool
    thread: freed memory then stays scattered over many arenas, and a soak of mixed
    requests grew the RSS by ~490 MB in 80 requests with the default against ~320 MB
    with 2 arenas (benchmarks/app_soak.py). Returns False where this is not glibc."""
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(-8, int(arenas)))  # M_ARENA_MAX = -8
    except (OSError, AttributeError):
        return False


def bound_kernel_cache(capacity: int = 16) -> str:
    """At most ``capacity`` compiled convolution kernels kept by oneDNN, the library
    behind PyTorch's CPU convolutions, unless ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` is set
    already. oneDNN compiles and keeps kernels per input shape (1024 by default); a
    server sees a new shape with nearly every image, and its RSS grew by ~500 MB over 60
    image sizes in one process (flat with a capacity of 8, for the same time per forward
    pass on a 384 px image). Read by oneDNN when it first runs, so this is called before
    any forward pass. Returns the capacity in force."""
    return os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(int(capacity)))


def limit_threads(threads=None) -> int:
    """torch and BLAS/OpenMP pools to ``threads`` (BLAS oversubscription made PCA 10x
    slower on a busy 2-core machine)."""
    n = int(threads or min(2, os.cpu_count() or 1))
    torch.set_num_threads(n)
    threadpool_limits(limits=n)
    return n


def create_app(device: str = "auto", models_dirs=(), allow_paths: bool = False,
               cache_size: int = 6, cache_mb: float = 512, examples_folder=None) -> tuple:
    """-> ``(App, examples)``; examples are written into ``examples_folder`` (none
    when it is None).

    Raises:
        ServeError: a models folder that is not a folder."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        store = ModelStore(device=device, models_dirs=models_dirs, allow_paths=allow_paths)
    except AppError as e:
        raise ServeError(str(e)) from None
    examples = make_examples(examples_folder) if examples_folder is not None else []
    app = App(store, examples=examples, cache_size=cache_size, cache_mb=cache_mb,
              max_pixels=MAX_PIXELS)
    return app, examples


def warm_up(app: App, model=None) -> None:
    """One small pass through every view, so the first user does not pay for imports
    (scikit-learn's PCA alone takes seconds the first time) and model loading."""
    img = np.ascontiguousarray(scene_samples(1, size=96, seed=0, split="warmup")[0].image)
    o = Options(max_side=96)
    app.segment(img, model, o)
    app.class_tokens(img, model, o)
    app.guidance(img, model, o)
    app.attention(img, model, o)
    app.imagenet(img)
    app.analyses.clear()
    app.images.clear()
    app.pretrained.clear()


def serve(host: str = "127.0.0.1", port: int = 7860, share: bool = False, model=None,
          models_dirs=(), allow_paths: bool = False, max_side: int = 512,
          device: str = "auto", threads=None, cache_size: int = 6, cache_mb: float = 512,
          warmup: bool = True, block: bool = True):
    """Build and launch the app. Returns ``(demo, local_url)`` when ``block`` is False.

    Raises:
        ServeError: a --models-dir that is not a folder, or a start-up model that is
            not allowed or does not load.
    """
    bound_kernel_cache()
    limit_malloc_arenas()
    n = limit_threads(threads)
    warning = paths_warning(allow_paths, host, share)
    if warning:
        print(f"hfgd-lab app: WARNING: {warning}", file=sys.stderr)
    max_side = int(min(max(max_side, Options.MIN_SIDE), Options.MAX_SIDE))
    # everything that can refuse to start is checked before anything is written
    app, _ = create_app(device, models_dirs, allow_paths, cache_size, cache_mb)
    default = model or app.store.default()
    if default is None:
        raise ServeError("no model to serve: no bundled model is installed and no "
                         "--models-dir holds a checkpoint")
    try:
        app.model(default)  # fail now, with its message, rather than on the first request
    except AppError as e:
        raise ServeError(str(e)) from None
    folder = private_folder()
    examples = make_examples(folder / "examples")
    app.examples = {e.digest: e for e in examples}
    if warmup:
        warm_up(app, default)
    for skipped in app.store.skipped:
        print(f"hfgd-lab app: not offered: {skipped}", file=sys.stderr)
    demo = build_demo(app, examples, default_model=default, max_side=max_side)
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY)
    print(f"hfgd-lab app: {len(examples)} examples, device {app.store.device}, {n} threads, "
          f"model {default}; models: {', '.join(app.store.names())}; checkpoint paths "
          f"{'ALLOWED' if allow_paths else 'off'}; uploads in {folder}", flush=True)
    _, url, _ = demo.launch(
        server_name=host, server_port=port, share=share, max_file_size=MAX_FILE_SIZE,
        prevent_thread_lock=True, show_error=False, quiet=False, css=CSS,
        state_session_capacity=SESSIONS,
        footer_links=["api"], allowed_paths=None)
    demo.app_state = app  # for in-process tests
    if not block:
        return demo, url

    def _stop(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        # SIGTERM shuts down like Ctrl-C: Gradio deletes what it wrote, and the private
        # folder is removed at exit
        signal.signal(signal.SIGTERM, _stop)
    try:
        demo.block_thread()
    except (KeyboardInterrupt, OSError):
        pass
    finally:
        demo.close()


def main(argv=None) -> int:
    """``python -m hfgd_lab.app`` / ``python app.py``: parse ``argv`` and serve."""
    p = argparse.ArgumentParser(prog="hfgd-lab app",
                                description="Serve the Gradio app: see inside HFGD.")
    add_arguments(p)
    return run(p.parse_args(argv))


def run(args) -> int:
    """Serve the app as ``args`` (from :func:`hfgd_lab.app.add_arguments`) say; blocks
    until stopped. Returns 0, or 2 with a one-line message when it cannot start."""
    logging.basicConfig(level=logging.WARNING)
    try:
        serve(host=args.host, port=args.port, share=args.share, model=args.model,
              models_dirs=args.models_dir, allow_paths=args.allow_checkpoint_paths,
              max_side=args.max_side, device=args.device, threads=args.threads,
              cache_size=args.cache_size, cache_mb=args.cache_mb, warmup=not args.no_warmup)
    except ServeError as e:
        print(f"hfgd-lab app: error: {e}", file=sys.stderr)
        return 2
    return 0
