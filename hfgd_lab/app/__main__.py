"""``python -m hfgd_lab.app [--port N ...]``: serve the app (same as ``hfgd-lab app``)."""
import sys

from .server import main

sys.exit(main())
