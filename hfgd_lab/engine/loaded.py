"""One loaded-model type and one resolver from a name or a path to it.

:func:`from_pretrained` takes what a user types -- a bundled model's name, a checkpoint
(stem, ``.json``, ``.safetensors``), a run folder, a Hub-style model folder, or a
Hugging Face Hub repo id -- and returns a :class:`LoadedModel`: the model with its card,
class names, palette and input normalisation. ``predict``, ``eval``, the app and the
notebooks all load through it, read cards through :func:`card_classes`, and
preprocess through :meth:`LoadedModel.preprocess` (the backbone's normalisation).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..config import VARIANTS
from ..data.classes import default_palette
from ..data.preprocess import as_uint8_image, prepare_image, resize_labels
from ..data.scenes import SCENE_CLASSES
from . import zoo
from .checkpoint import CheckpointError, load_checkpoint, resolve
from .hub import push_to_hub, save_pretrained, snapshot_folder
from .inference import InferenceOptions, InferenceResult, infer

__all__ = ["LoadedModel", "from_pretrained", "load_pretrained", "card_classes"]


def card_classes(card: dict, k: int) -> tuple[tuple, np.ndarray]:
    """``(class names, (k, 3) uint8 palette)`` from a card, for a ``k``-class model.

    Missing names (or a ``classes`` entry that is not a list) become ``"class i"``; a
    missing or malformed palette becomes
    :func:`hfgd_lab.data.default_palette` (the one fallback of the project)."""
    names = card.get("classes")
    names = [str(c) for c in names] if isinstance(names, (list, tuple)) else []
    names = names[:k] + [f"class {i}" for i in range(len(names), k)]
    pal = card.get("palette")
    try:
        pal = np.asarray(pal, dtype=np.int64)
        if pal.ndim != 2 or pal.shape[1] != 3 or len(pal) < k:
            raise ValueError
        pal = np.clip(pal[:k], 0, 255).astype(np.uint8)
    except (TypeError, ValueError):
        pal = default_palette(k)
    return tuple(names), pal


@dataclass(eq=False)
class LoadedModel:
    """A model with what every path needs beside its weights.

    Attributes:
        model: the :class:`hfgd_lab.models.HFGD` (eval mode).
        card: the checkpoint's card (config, classes, palette, metrics, provenance).
        name: what to call it (a bundled name, or the checkpoint's name).
        key: unique and stable (a bundled name, or the resolved card path).
        source: ``"bundled"``, ``"checkpoint"`` or ``"hub"``.
        classes: K class names. palette: (K, 3) uint8 colours.
        output_stem: where per-model outputs go by default (e.g. ``eval`` JSON).

    ``model, classes, palette = load_pretrained(...)`` unpacks it.
    """

    model: torch.nn.Module
    card: dict
    name: str
    key: str
    source: str
    classes: tuple
    palette: np.ndarray
    output_stem: Path

    def __iter__(self):  # model, classes, palette = load_pretrained(...)
        return iter((self.model, self.classes, self.palette))

    # ---- facts ------------------------------------------------------------------------
    @property
    def cfg(self):
        return self.model.cfg

    @property
    def num_classes(self) -> int:
        return int(self.cfg.num_classes)

    @property
    def has_high(self) -> bool:
        """False for the SemanticFPN baseline (no HFG branch)."""
        return self.cfg.arch != "semantic_fpn"

    @property
    def normalization(self) -> tuple[list, list]:
        """``(mean, std)`` of [0, 1] pixels this model's backbone expects."""
        return self.cfg.normalization

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def metrics(self) -> dict:
        m = self.card.get("metrics")
        return m if isinstance(m, dict) else {}

    def val_miou(self) -> Optional[float]:
        """The validation mIoU its card records (one trained model), or None: ``val_mIoU``
        of a model-zoo card, or ``mIoU`` of a training run's (its validation at the
        checkpoint's iteration)."""
        m = self.metrics
        try:
            v = float(m.get("val_mIoU", m.get("mIoU")))
        except (TypeError, ValueError):
            return None
        return v if np.isfinite(v) else None

    @property
    def trained_on(self) -> Optional[str]:
        t = self.card.get("trained_on")
        return str(t) if t else None

    @property
    def is_scenes_model(self) -> bool:
        """Trained on the built-in procedural scenes: by its card, or by its classes
        being exactly the scenes' (e.g. a model trained on ``make-scenes`` folders)."""
        text = " ".join(str(self.card.get(k) or "") for k in ("trained_on", "dataset"))
        return "scene" in text.lower() or tuple(self.classes) == tuple(SCENE_CLASSES)

    def description(self) -> str:
        """A short label: the stop-gradient variant (``VARIANTS``) or the architecture."""
        v = self.cfg.variant
        if v is not None:
            return VARIANTS[v][0]
        return "HFGD (a custom mix of stop-gradient switches)"

    def describe(self) -> str:
        """A markdown paragraph for people: what the model is, what it was trained on,
        its backbone's pretraining and its validation mIoU (one trained model)."""
        cfg, card = self.cfg, self.card
        parts = [f"**`{self.name}`**: {self.description()}, {self.num_classes} classes, "
                 f"backbone `{cfg.backbone}`, output stride {cfg.output_stride}."]
        if card.get("stand_in"):
            parts.append("⚠️ A **random-weight stand-in** (tests / development), not a "
                         "trained model: its predictions mean nothing.")
        if self.trained_on:
            parts.append(f"Trained on: {self.trained_on.rstrip('.')}.")
        else:
            parts.append("Its card does not say what it was trained on.")
        bb = card.get("backbone_pretraining")
        if isinstance(bb, dict) and bb.get("source"):
            lic = f", licence {bb['license']}" if bb.get("license") else ""
            parts.append(f"Backbone pretrained on: {bb['source']}{lic}.")
        miou = self.val_miou()
        if miou is not None and not card.get("stand_in"):
            n = self.metrics.get("val_images")
            parts.append(f"Validation mIoU of this model: **{miou:.1f}**"
                         + (f" on {n} held-out images" if n else "") + ".")
        return " ".join(parts)

    # ---- preprocessing and inference ---------------------------------------------------
    def preprocess(self, image, max_side: Optional[int] = None):
        """uint8 image -> ``(x, pixels)``: the normalised (1, 3, h, w) tensor on this
        model's device and the (h, w, 3) uint8 pixels, downscaled to ``max_side``."""
        mean, std = self.normalization
        x, pixels = prepare_image(image, mean, std, max_side)
        return x.to(self.device), pixels

    def infer(self, image, options: Optional[InferenceOptions] = None,
              max_side: Optional[int] = None, keep_outputs: bool = False) -> InferenceResult:
        """Probabilities (and, with ``keep_outputs``, the whole-image pass's outputs) of
        a uint8 image at its ``max_side``-capped size; see :func:`.inference.infer`."""
        x, pixels = self.preprocess(image, max_side)
        result = infer(self.model, x, options, keep_outputs=keep_outputs)
        result.pixels = pixels
        return result

    def segment(self, image, options: Optional[InferenceOptions] = None,
                max_side: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
        """``(labels, confidence)`` at the *input's* size: inference runs at the
        ``max_side``-capped size and the labels are resized back (nearest), so there is
        one label per input pixel. labels (H, W) int64, confidence (H, W) float32."""
        img = as_uint8_image(image)  # the pixels the labels are for (a PIL image upright)
        r = self.infer(img, options, max_side)
        conf, labels = r.probs[0].max(0)
        labels, conf = labels.cpu().numpy(), conf.float().cpu().numpy()
        if labels.shape != img.shape[:2]:
            labels = resize_labels(labels, img.shape[:2])
            conf = resize_labels(conf, img.shape[:2])
        return labels.astype(np.int64), conf

    # ---- sharing ------------------------------------------------------------------------
    def save_pretrained(self, folder, dtype: Optional[torch.dtype] = None,
                        overwrite: bool = False) -> Path:
        """Write this model as a Hub-style folder (``model.safetensors``, ``config.json``
        = its card without training state, a generated ``README.md``) that
        :func:`from_pretrained` loads back to identical logits; see
        :func:`.hub.save_pretrained` (errors too). Returns the folder."""
        return save_pretrained(self.model, folder, classes=self.classes,
                               palette=self.palette, card=self.card, dtype=dtype,
                               overwrite=overwrite)

    def push_to_hub(self, repo_id: str, private: Optional[bool] = None,
                    token: Optional[str] = None, commit_message: Optional[str] = None) -> str:
        """Upload this model to Hugging Face Hub repo ``repo_id`` as a model folder
        (:func:`.hub.push_to_hub`); returns the commit's URL."""
        return push_to_hub(self.model, repo_id, classes=self.classes, palette=self.palette,
                           card=self.card, private=private, token=token,
                           commit_message=commit_message)


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def _hub_repo_id(spec: str) -> bool:
    """``owner/name`` that is not a local path (a local checkpoint always wins)."""
    return bool(_REPO_ID.match(spec)) and not spec.endswith((".json", ".safetensors"))


def from_pretrained(spec, device="cpu", allow_paths: bool = True) -> LoadedModel:
    """Load a model by what a user types: a bundled name (:func:`zoo.list_pretrained`),
    a checkpoint path (stem, ``.json``, ``.safetensors``, run folder or model folder),
    or a Hugging Face Hub repo id (``owner/name``, from the local cache when offline).

    Args:
        spec: the name, path or repo id.
        device: where the model goes.
        allow_paths: False accepts bundled names only.

    Returns:
        :class:`LoadedModel` in eval mode.

    Raises:
        CheckpointError: unknown name, missing or invalid checkpoint (the message lists
            the bundled models).
    """
    spec = str(spec or "").strip() or zoo.DEFAULT_MODEL
    bundled = zoo.list_pretrained()
    if spec in bundled:
        model, card = load_checkpoint(zoo.WEIGHTS_DIR / spec, map_location=device)
        classes, palette = card_classes(card, int(model.cfg.num_classes))
        return LoadedModel(model, card, spec, spec, "bundled", classes, palette, Path(spec))
    if not allow_paths:
        raise CheckpointError(f"unknown model {spec!r}; bundled models: "
                              f"{', '.join(bundled) or 'none installed'}")
    path = Path(spec).expanduser()
    ref = resolve(path)
    source, name, output_stem = "checkpoint", ref.name, ref.stem
    if not ref.card.is_file() and _hub_repo_id(spec):
        try:
            ref = resolve(snapshot_folder(spec))
        except CheckpointError as e:
            raise CheckpointError(f"no bundled model named {spec!r}, no checkpoint at "
                                  f"{path}, and {e}") from None
        # outputs about a Hub model go to the working folder, never into the Hub cache
        source, name, output_stem = "hub", spec, Path(spec.replace("/", "--"))
    if not ref.card.is_file():
        raise CheckpointError(
            f"no bundled model named {spec!r} and no checkpoint at {ref.card} (a "
            f"checkpoint is a model folder, a run folder, or NAME.safetensors + NAME.json); "
            f"bundled models: {', '.join(bundled) or 'none installed'}")
    model, card = load_checkpoint(ref, map_location=device)
    classes, palette = card_classes(card, int(model.cfg.num_classes))
    # the key names the card's own path (a Hub snapshot's file is a link into blobs/)
    key = str(ref.card.parent.resolve() / ref.card.name)
    return LoadedModel(model, card, name, key, source, classes, palette, output_stem)


load_pretrained = from_pretrained
