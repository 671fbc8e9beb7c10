"""hfgd-lab: HFGD (High-level Feature Guided Decoder) for semantic segmentation,
with tools to see inside it.

The public names below load on first use (PEP 562): ``import hfgd_lab`` alone does not
import torch or timm, so that ``hfgd-lab --help``, ``--version`` and argument errors
answer in well under a second (measured: ~0.1 s against ~4.5 s with eager imports).
"""
from __future__ import annotations

import importlib

__version__ = "0.2.0"

# public name -> module that defines it
_EXPORTS = {
    "HFGDConfig": "hfgd_lab.config", "ConfigError": "hfgd_lab.config",
    "VARIANTS": "hfgd_lab.config",
    "HFGD": "hfgd_lab.models", "HFGDOutput": "hfgd_lab.models",
    "build_model": "hfgd_lab.models",
    "LoadedModel": "hfgd_lab.engine.loaded", "from_pretrained": "hfgd_lab.engine.loaded",
    "load_pretrained": "hfgd_lab.engine.loaded",
    "list_pretrained": "hfgd_lab.engine.zoo", "save_pretrained": "hfgd_lab.engine.hub",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hfgd_lab' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
