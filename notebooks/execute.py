"""Re-execute the notebooks in place, so that the stored outputs (what GitHub shows) come
from the current bundled models and results.

    python notebooks/execute.py                # all four, full teaching size
    python notebooks/execute.py 01 04          # some of them (by number or name)
    python notebooks/execute.py --fast         # CI size (quick check, do not commit)
    python notebooks/execute.py --out /tmp/nb  # write executed copies elsewhere

Run it with the project's environment (``./run.sh python notebooks/execute.py``): the
kernel is the ``python3`` kernelspec of the interpreter running this script.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from hfgd_lab.engine.zoo import write_stand_ins  # noqa: E402
from hfgd_lab.notebook import NOTEBOOKS, execute_notebook  # noqa: E402

LIMIT_MB = 1.5


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", help="notebooks to run (default: all); '01' is enough")
    p.add_argument("--fast", action="store_true", help="HFGD_LAB_FAST=1 (CI size)")
    p.add_argument("--out", help="write executed copies into this folder instead of in place")
    p.add_argument("--stand-ins", metavar="DIR",
                   help="development only: make random-weight stand-ins of the bundled "
                        "models in DIR and use them (HFGD_LAB_WEIGHTS_DIR)")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = p.parse_args(argv)

    chosen = [n for n in NOTEBOOKS
              if not args.names or any(n == a or n.startswith(a) for a in args.names)]
    if not chosen:
        p.error(f"no notebook matches {args.names}; have {', '.join(NOTEBOOKS)}")
    env = {}
    if args.stand_ins:
        env["HFGD_LAB_WEIGHTS_DIR"] = str(write_stand_ins(args.stand_ins))
    status = 0
    for name in chosen:
        src = HERE / name
        target = src
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            target = Path(args.out) / name
            shutil.copyfile(src, target)
        t0 = time.perf_counter()
        execute_notebook(target, fast=args.fast, env=env, timeout=args.timeout)
        mb = target.stat().st_size / 1e6
        flag = f"  (over {LIMIT_MB} MB: fewer or smaller figures)" if mb > LIMIT_MB else ""
        status |= bool(flag)
        print(f"{name}: {time.perf_counter() - t0:.0f} s, {mb:.2f} MB -> {target}{flag}",
              flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
