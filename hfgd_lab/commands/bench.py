"""``hfgd-lab bench``: HFGD (OS8/4/2) and SemanticFPN vs smp FPN / UPerNet, side by side."""
from __future__ import annotations


def add_arguments(p):
    from ..bench import add_arguments as add
    add(p)


def run(args):
    from ..bench import check_args, run_benchmark
    argv = args._argv[args._argv.index("bench") + 1:]
    run_benchmark(check_args(args, argv))
