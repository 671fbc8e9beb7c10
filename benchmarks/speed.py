#!/usr/bin/env python
"""Model speed against smp, from a checkout: the same as ``hfgd-lab bench``.

    python benchmarks/speed.py --threads 1 --repeats 30 --markdown --json speed.json

The benchmark itself lives in ``hfgd_lab/bench.py`` so the installed command has it.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hfgd_lab.bench import main  # noqa: E402

if __name__ == "__main__":
    main()
