"""hfgd-lab: HFGD (High-level Feature Guided Decoder) for semantic segmentation,
with tools to see inside it."""
from .config import ConfigError, HFGDConfig
from .models import HFGD, HFGDOutput, build_model
from .zoo import list_pretrained, load_pretrained

__version__ = "0.1.0"
__all__ = ["HFGDConfig", "ConfigError", "HFGD", "HFGDOutput", "build_model",
           "load_pretrained", "list_pretrained", "__version__"]
