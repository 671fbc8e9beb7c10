"""Predictor: a model plus its classes and palette, from RGB uint8 to label maps."""
from __future__ import annotations

import numpy as np
import torch

from .inference import InferenceOptions, predict_probs


def to_input_tensor(image: np.ndarray, device="cpu") -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> normalised float (1, 3, H, W), as the datasets produce."""
    from ..analysis.image import normalize_image
    return normalize_image(image).to(device)


class Predictor:
    def __init__(self, model, card: dict, device="cpu"):
        self.model = model.eval()
        self.device = device
        k = model.cfg.num_classes
        self.classes = tuple(card.get("classes") or [f"class {i}" for i in range(k)])
        palette = card.get("palette")
        if palette is None:
            rng = np.random.default_rng(0)
            palette = rng.integers(0, 256, (k, 3))
        self.palette = np.asarray(palette, dtype=np.uint8)
        self.num_classes = k

    def segment(self, image: np.ndarray, opts: InferenceOptions | None = None):
        """Label map (H, W) int64 and class probabilities (K, H, W) float32."""
        probs = predict_probs(self.model, to_input_tensor(image, self.device), opts)[0]
        return probs.argmax(0).cpu().numpy(), probs.cpu().numpy()

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        from ..viz import colorize
        return colorize(labels, self.palette)

    def overlay(self, image: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        from ..viz import overlay
        return overlay(image, labels, self.palette, alpha)
