"""`hfgd-lab --help`, `--version` and argument errors answer in well under a second: the
command line imports argparse only, and a command's module only its own light parts."""
import subprocess
import sys
import time

import pytest

from hfgd_lab.cli import COMMANDS

# bench's add_arguments reads hfgd_lab.bench, which imports torch at its top (the speed
# helper's module); `hfgd-lab bench --help` pays that, no other command does
HEAVY_PARSERS = {"bench"}


def _run(code_or_args, module=True):
    cmd = [sys.executable, "-m", "hfgd_lab.cli", *code_or_args] if module else \
        [sys.executable, "-c", code_or_args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    return time.perf_counter() - t0, proc


def test_importing_the_cli_and_light_command_parsers_imports_no_torch():
    names = sorted(set(COMMANDS) - HEAVY_PARSERS)
    code = ("import argparse, importlib, sys\n"
            "import hfgd_lab.cli as cli\n"
            "assert 'torch' not in sys.modules, 'hfgd_lab.cli imported torch'\n"
            f"for name in {names!r}:\n"
            "    p = argparse.ArgumentParser()\n"
            "    importlib.import_module(cli.COMMANDS[name][0]).add_arguments(p)\n"
            "    heavy = [m for m in ('torch', 'timm', 'numpy', 'gradio') if m in sys.modules]\n"
            "    assert not heavy, f'{name}: add_arguments imported {heavy}'\n"
            "print('ok')\n")
    _, proc = _run(code, module=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["predict", "--help"],
                                  ["predict", "m", "x.png", "--out", "o", "--opacity", "2"]])
def test_help_version_and_argument_errors_are_fast(argv):
    """Best of three (the machine is shared), against a bare interpreter start in the
    same moment: torch alone takes 3-5 s to import here."""
    base = min(_run("pass", module=False)[0] for _ in range(3))
    runs = [_run(argv) for _ in range(3)]
    elapsed = min(t for t, _ in runs)
    proc = runs[0][1]
    assert elapsed < 1.5, f"hfgd-lab {' '.join(argv)} took {elapsed:.2f} s " \
                          f"(python -c pass: {base:.2f} s)"
    if argv[-1] == "2":  # an argument error: one line, exit 2, no traceback
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "--opacity" in lines[0] and "[0, 1]" in lines[0], lines
    else:
        assert proc.returncode == 0 and proc.stdout.strip()
        assert "Traceback" not in proc.stderr


def test_every_command_has_help():
    """Each command's --help (in process: the slow-start check is above)."""
    from hfgd_lab.cli import main
    for name in COMMANDS:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0, name
