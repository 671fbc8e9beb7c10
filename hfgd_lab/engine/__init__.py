"""Engine: running models -- training, evaluation, inference, checkpoints, loading.

- :mod:`.loaded`: :class:`LoadedModel` (model + card + classes + palette + normalisation)
  and :func:`from_pretrained`, the one resolver from a name, path or repo id;
- :mod:`.inference`: :func:`infer` (whole / sliding window, scales, flip) for every path;
- :mod:`.checkpoint`: safetensors + JSON cards, never unpickled;
- :mod:`.train`, :mod:`.evaluate`, :mod:`.pretrain`, :mod:`.experiment` (configs);
- :mod:`.zoo`: the bundled models.
"""
from .checkpoint import CheckpointError, load_checkpoint, read_card, save_checkpoint
from .experiment import DataConfig, EvalConfig, ExperimentConfig, TrainConfig
from .inference import InferenceOptions, InferenceResult, infer, predict_probs
from .loaded import LoadedModel, card_classes, from_pretrained, load_pretrained
from .zoo import DEFAULT_MODEL, list_pretrained

__all__ = ["CheckpointError", "load_checkpoint", "read_card", "save_checkpoint",
           "DataConfig", "EvalConfig", "ExperimentConfig", "TrainConfig",
           "InferenceOptions", "InferenceResult", "infer", "predict_probs",
           "LoadedModel", "card_classes", "from_pretrained", "load_pretrained",
           "DEFAULT_MODEL", "list_pretrained"]
