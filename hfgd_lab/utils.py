"""Small helpers shared by the command line and the engine."""
from __future__ import annotations

import dataclasses

import yaml


def parse_override(item: str):
    """``"key=value"`` -> (key, value parsed as YAML: numbers, booleans, lists)."""
    if "=" not in item:
        raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
    key, value = item.split("=", 1)
    return key.strip(), yaml.safe_load(value) if value.strip() else None


def apply_overrides(obj, items):
    """Return a copy of dataclass ``obj`` with ``key=value`` overrides (dotted keys reach
    nested dataclasses, e.g. ``model.output_stride=8``)."""
    for item in items or []:
        key, value = parse_override(item)
        obj = _set(obj, key.split("."), value, key)
    return obj


def _set(obj, path, value, full):
    names = {f.name for f in dataclasses.fields(obj)}
    if path[0] not in names:
        raise ValueError(f"--set {full}: unknown key {path[0]!r}; known: {sorted(names)}")
    if len(path) == 1:
        return dataclasses.replace(obj, **{path[0]: value})
    child = getattr(obj, path[0])
    if dataclasses.is_dataclass(child):
        return dataclasses.replace(obj, **{path[0]: _set(child, path[1:], value, full)})
    if isinstance(child, dict):
        return dataclasses.replace(obj, **{path[0]: {**child, path[1]: value}})
    raise ValueError(f"--set {full}: {path[0]!r} has no sub-keys")
