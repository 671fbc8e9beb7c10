"""HFGD models: backbone, CAE, upsampler, classifier, wired in ``hfgd.py``."""
from .backbone import Backbone, WeightsError, load_backbone_weights, save_backbone_weights
from .hfgd import HFGD, HFGDOutput, build_model, resize_logits

__all__ = ["Backbone", "WeightsError", "load_backbone_weights", "save_backbone_weights",
           "HFGD", "HFGDOutput", "build_model", "resize_logits"]
