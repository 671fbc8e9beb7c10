"""The design's dependency graph, checked on the source: data -> models -> engine ->
analysis -> viz -> app / notebook, with every import (function-level ones included)."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hfgd_lab"

# room -> rooms it must never import
FORBIDDEN = {
    "models": {"engine", "analysis", "viz", "app"},
    "data": {"models", "engine"},
    "engine": {"analysis", "viz", "app"},
    "analysis": {"viz", "app"},
    "viz": {"app"},
}
# where a function-level import of a project module is allowed: the command line's
# start-up cost (`hfgd-lab --help` must not import torch) -- nowhere else
LAZY_ALLOWED = ("cli.py", "commands/", "__init__.py")


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _dotted(path: Path) -> list[str]:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return parts


def _imports(path: Path):
    """(imported hfgd_lab module parts, line, at module level?) for every import."""
    tree = ast.parse(path.read_text())
    here = _dotted(path)
    package = here if path.name == "__init__.py" else here[:-1]
    top_level = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name.split(".") for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = base + (node.module.split(".") if node.module else [])
            else:
                mod = node.module.split(".") if node.module else []
            names = [mod + [a.name] for a in node.names]
        else:
            continue
        for parts in names:
            if parts and parts[0] == "hfgd_lab":
                out.append((parts, node.lineno, id(node) in top_level))
    return out


def _room(parts) -> str | None:
    return parts[1] if len(parts) > 1 else None


def test_no_forbidden_imports():
    bad = []
    for path in _modules():
        room = _room(_dotted(path))
        for parts, line, _ in _imports(path):
            target = _room(parts)
            if target in FORBIDDEN.get(room, ()):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({room} -> "
                           f"{'.'.join(parts)})")
    assert not bad, "forbidden imports:\n" + "\n".join(bad)


def test_project_imports_sit_at_module_top():
    lazy = []
    for path in _modules():
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(LAZY_ALLOWED) or rel in LAZY_ALLOWED:
            continue
        for parts, line, top in _imports(path):
            if not top:
                lazy.append(f"hfgd_lab/{rel}:{line} imports {'.'.join(parts)} in a function")
    assert not lazy, "function-level imports between project modules:\n" + "\n".join(lazy)


@pytest.mark.parametrize("room", ["data", "models", "engine", "analysis", "viz"])
def test_each_room_imports_alone(room):
    """A room imports cleanly in a fresh interpreter (no cycle hidden by import order)."""
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-c", f"import hfgd_lab.{room}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
