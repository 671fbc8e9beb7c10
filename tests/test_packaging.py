"""The project's entry points agree with each other: README, run.sh, CI, conda env."""
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("```", 2)[1]
    commands = [line.split("#")[0].strip() for line in quick.splitlines() if line.strip()
                and not line.startswith(("bash", "#"))]
    assert commands == ["./run.sh app", "./run.sh test"]
    ci = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()
          if line.strip() and not line.startswith("#") and not line.startswith(("set ", "cd "))]
    assert ci == ["./run.sh test"]


def _names(reqs):
    return {re.split(r"[<>=!~\[ ]", r, 1)[0].lower().replace("_", "-") for r in reqs}


def test_environment_yml_mirrors_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _names(project["dependencies"])
    for extra, reqs in project["optional-dependencies"].items():
        if extra != "all":
            wanted |= _names(reqs)
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    have = _names([r for r in pip if not r.startswith("-e")])
    assert wanted == have, (wanted ^ have)


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "hfgd_lab.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "train" in out and "predict" in out
