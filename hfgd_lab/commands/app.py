"""``hfgd-lab app``: serve the Gradio app (upload an image and see inside HFGD)."""
from __future__ import annotations


def add_arguments(p):
    from ..app import add_arguments as app_arguments  # argparse only: gradio loads in run
    app_arguments(p)


def run(args):
    from ..app.server import run as run_app
    return run_app(args)
