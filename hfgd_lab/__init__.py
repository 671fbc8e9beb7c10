"""hfgd-lab: HFGD (High-level Feature Guided Decoder) for semantic segmentation,
with tools to see inside it."""
from .config import ConfigError, HFGDConfig
from .models import HFGD, HFGDOutput, build_model

__version__ = "0.1.0"
__all__ = ["HFGDConfig", "ConfigError", "HFGD", "HFGDOutput", "build_model", "__version__"]
