"""``--set key=value`` overrides, shared by the command line and the experiment scripts."""
from __future__ import annotations

import dataclasses

import yaml

from .config import ConfigError


def parse_override(item: str):
    """``"key=value"`` -> (key, value parsed as YAML: numbers, booleans, lists).

    Raises :class:`ConfigError` naming the key when the value is not valid YAML."""
    if "=" not in item:
        raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
    key, value = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {item!r}: the key before '=' is empty")
    try:
        return key, yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {key}={value!r}: not a valid value "
                          f"({str(e).splitlines()[0]})") from None


def apply_overrides(obj, items):
    """Return a copy of dataclass ``obj`` with ``key=value`` overrides (dotted keys reach
    nested dataclasses, e.g. ``model.output_stride=8``); each changed dataclass checks
    its fields again, so a wrong value fails naming its key."""
    for item in items or []:
        key, value = parse_override(item)
        obj = _set(obj, key.split("."), value, key)
    return obj


def _set(obj, path, value, full):
    names = {f.name for f in dataclasses.fields(obj)}
    if path[0] not in names:
        raise ConfigError(f"--set {full}: unknown key {path[0]!r}; known: {sorted(names)}")
    if len(path) == 1:
        return dataclasses.replace(obj, **{path[0]: value})
    child = getattr(obj, path[0])
    if dataclasses.is_dataclass(child):
        return dataclasses.replace(obj, **{path[0]: _set(child, path[1:], value, full)})
    if isinstance(child, dict):
        return dataclasses.replace(obj, **{path[0]: _set_in_dict(child, path[1:], value)})
    raise ConfigError(f"--set {full}: {path[0]!r} has no sub-keys")


def _set_in_dict(d: dict, path, value) -> dict:
    if len(path) == 1:
        return {**d, path[0]: value}
    child = d.get(path[0])
    return {**d, path[0]: _set_in_dict(child if isinstance(child, dict) else {}, path[1:],
                                       value)}
