"""The Gradio app: upload an image and see inside HFGD.

``python app.py`` or ``hfgd-lab app`` serves it on http://127.0.0.1:7860 with the
bundled default model. Layout:

- :mod:`.state`: the user's options and the allow-list of models (no Gradio);
- :mod:`.handlers`: :class:`~.handlers.App`, every view of the app as plain Python:
  an image is read, analysed once, and each view drawn from that pass (no Gradio);
- :mod:`.html`: legends, colour bars and captioned tile grids as page text;
- :mod:`.examples`: the example images (:mod:`hfgd_lab.data.samples`) on disk;
- :mod:`.ui`: the Gradio Blocks, wiring only (the page's listeners and the API's);
- :mod:`.server`: launching with the safety settings (private upload folder, upload
  and pixel caps, bounded queue, the model allow-list);
- :mod:`.testing`: helpers for the app's tests and benchmarks.

This module holds only the command-line arguments (argparse), so that ``hfgd-lab app
--help`` does not import Gradio (~2.8 s on a 2-core machine); :func:`.server.main` and
:func:`.server.run` serve.
"""
from __future__ import annotations

import argparse

__all__ = ["add_arguments"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1: this machine only; "
                        "0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--share", action="store_true",
                   help="also open a temporary public gradio.live link (off by default)")
    p.add_argument("--model", default=None,
                   help="model selected at start: a bundled name (default: the bundled "
                        "default), a checkpoint of --models-dir, or (with "
                        "--allow-checkpoint-paths) a checkpoint path")
    p.add_argument("--models-dir", action="append", default=[], metavar="DIR",
                   help="also offer the checkpoints in DIR (two-file checkpoints, model "
                        "folders and run folders directly inside it); repeatable")
    p.add_argument("--allow-checkpoint-paths", action="store_true",
                   help="let users type ANY checkpoint path on this machine (off by "
                        "default; meant for a server on 127.0.0.1 -- beyond it, every "
                        "client could load any checkpoint the server can read)")
    p.add_argument("--max-side", type=int, default=512,
                   help="default resolution cap, longest side in pixels")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda if "
                                                    "available)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch and BLAS (default: min(2, cores))")
    p.add_argument("--cache-size", type=int, default=6,
                   help="analysed (model, image, options) entries kept in memory")
    p.add_argument("--cache-mb", type=float, default=512,
                   help="memory those entries may take (MB; the newest is always kept)")
    p.add_argument("--no-warmup", action="store_true",
                   help="skip the warm-up pass at start (first request is then slower)")
