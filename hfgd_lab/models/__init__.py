"""HFGD models: backbone, CAE, upsampler, classifier, wired in ``hfgd.py``."""
from .backbone import Backbone, load_backbone_weights, save_backbone_weights
from .weights import PACKAGED, WeightsError, offline_backbones
from .hfgd import HFGD, HFGDOutput, build_model, resize_logits

__all__ = ["Backbone", "WeightsError", "PACKAGED", "offline_backbones", "load_backbone_weights", "save_backbone_weights",
           "HFGD", "HFGDOutput", "build_model", "resize_logits"]
