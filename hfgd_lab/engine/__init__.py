"""Training, evaluation, inference and checkpoints."""
from .checkpoint import CheckpointError, load_checkpoint, read_card, save_checkpoint
from .experiment import DataConfig, EvalConfig, ExperimentConfig, TrainConfig
from .inference import InferenceOptions, predict_probs

__all__ = ["CheckpointError", "load_checkpoint", "read_card", "save_checkpoint",
           "DataConfig", "EvalConfig", "ExperimentConfig", "TrainConfig",
           "InferenceOptions", "predict_probs"]
