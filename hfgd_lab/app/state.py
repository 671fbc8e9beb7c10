"""What the app keeps between requests: loaded models and a few analysed images.

- :class:`ModelStore` loads a bundled model by name or a checkpoint the user points to
  (only through :func:`~hfgd_lab.engine.checkpoint.load_checkpoint`: safetensors + JSON,
  never pickle) and keeps a handful of them.
- :class:`LRU` is a small thread-safe least-recently-used map; the app keys one by
  ``(model, image digest, options)`` so that every tab and every click reuse the one
  forward pass of an image.
- :class:`Options` are the user's inference options (part of that key).

No Gradio here: see :mod:`hfgd_lab.app.handlers` and :mod:`hfgd_lab.app.ui`.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..zoo import BUNDLED_VARIANTS

__all__ = ["AppError", "LRU", "Options", "ModelEntry", "ModelStore", "digest_file",
           "digest_bytes", "digest_array", "SCENE_VARIANTS"]

_VARIANT_LABELS = {"hfgd_sg": "HFGD, stop-gradient on", "hfgd_nosg": "HFGD, stop-gradient off",
                   "semantic_fpn": "SemanticFPN (no HFG branch)"}
# the bundled models of the stop-gradient comparison, in display order: name -> (variant, label)
SCENE_VARIANTS = {name: (variant, _VARIANT_LABELS[variant])
                  for name, (variant, _) in BUNDLED_VARIANTS.items()}


class AppError(ValueError):
    """A problem the user can fix (bad image, unknown model, ...); the message says how."""


# ---- a small LRU ---------------------------------------------------------------------

class LRU:
    """A thread-safe least-recently-used map of at most ``maxsize`` entries and, with
    ``max_bytes``, at most that many bytes by ``sizeof(value)`` (the newest entry is
    always kept, however large).

    :meth:`get_or_compute` runs ``compute`` at most once per key even when several
    threads ask at the same time (the others wait for it and share the result); computing
    is serialised by ``slots`` (a semaphore shared between caches), which bounds memory.
    """

    def __init__(self, maxsize: int, slots: Optional[threading.Semaphore] = None,
                 max_bytes: Optional[int] = None, sizeof: Callable = lambda v: 0):
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self.sizeof = sizeof
        self.slots = slots or threading.Semaphore(1)
        self._data: OrderedDict = OrderedDict()
        self._sizes: dict = {}
        self._lock = threading.Lock()
        self._key_locks: dict = {}

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(self._sizes.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def __contains__(self, key) -> bool:
        with self._lock:
            return key in self._data

    def keys(self) -> list:
        with self._lock:
            return list(self._data)

    def get(self, key, default=None):
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
            return default

    def put(self, key, value) -> None:
        size = int(self.sizeof(value)) if self.max_bytes else 0
        with self._lock:
            self._data[key] = value
            self._sizes[key] = size
            self._data.move_to_end(key)
            while len(self._data) > 1 and (
                    len(self._data) > self.maxsize
                    or (self.max_bytes and sum(self._sizes.values()) > self.max_bytes)):
                old, _ = self._data.popitem(last=False)
                self._sizes.pop(old, None)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._sizes.clear()

    def get_or_compute(self, key, compute: Callable[[], object]):
        sentinel = object()
        value = self.get(key, sentinel)
        if value is not sentinel:
            return value
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        try:
            with key_lock:  # one computation per key; later callers find it cached
                value = self.get(key, sentinel)
                if value is not sentinel:
                    return value
                with self.slots:
                    value = compute()
                self.put(key, value)
                return value
        finally:
            with self._lock:
                self._key_locks.pop(key, None)


def digest_bytes(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def digest_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def digest_array(arr: np.ndarray) -> str:
    a = np.ascontiguousarray(arr)
    h = hashlib.sha1(f"{a.shape}{a.dtype}".encode())
    h.update(a.data)
    return h.hexdigest()


# ---- options -------------------------------------------------------------------------

@dataclass(frozen=True)
class Options:
    """Inference options; every field is part of the analysis cache key.

    Args:
        max_side: resolution cap, the image's longer side in pixels (never upscaled).
        sliding: sliding-window prediction with ``window``-pixel square windows
            (overlap 1/3); the features and attention still come from one whole pass.
        window: the sliding window's side (the bundled models trained on 192 px).
        flip: add the horizontally flipped image (test-time augmentation).
    """

    max_side: int = 512
    sliding: bool = False
    window: int = 192
    flip: bool = False

    MIN_SIDE = 32
    MAX_SIDE = 2048

    @classmethod
    def parse(cls, max_side=None, sliding=False, flip=False, window=None) -> "Options":
        try:
            side = int(round(float(max_side))) if max_side not in (None, "") else cls.max_side
            win = int(round(float(window))) if window not in (None, "") else cls.window
        except (TypeError, ValueError):
            raise AppError(f"resolution cap and window must be numbers, got {max_side!r}, "
                           f"{window!r}") from None
        if not cls.MIN_SIDE <= side <= cls.MAX_SIDE:
            raise AppError(f"resolution cap must be between {cls.MIN_SIDE} and "
                           f"{cls.MAX_SIDE} pixels, got {side}")
        if not 64 <= win <= cls.MAX_SIDE:
            raise AppError(f"sliding window must be between 64 and {cls.MAX_SIDE} pixels, "
                           f"got {win}")
        return cls(side, bool(sliding), win, bool(flip))

    def key(self) -> tuple:
        # the window only matters when sliding
        return (self.max_side, self.sliding, self.window if self.sliding else None, self.flip)

    def describe(self) -> str:
        parts = [f"longest side ≤ {self.max_side} px"]
        if self.sliding:
            parts.append(f"sliding window {self.window} px")
        if self.flip:
            parts.append("flip TTA")
        return ", ".join(parts)


# ---- models --------------------------------------------------------------------------

@dataclass(eq=False)
class ModelEntry:
    """A loaded model with what the app shows beside it."""

    key: str            # bundled name, or the resolved card path of a user checkpoint
    label: str          # what the user sees
    model: object
    card: dict
    classes: tuple
    palette: np.ndarray
    bundled: bool

    @property
    def num_classes(self) -> int:
        return int(self.model.cfg.num_classes)

    @property
    def arch(self) -> str:
        return str(self.model.cfg.arch)

    @property
    def has_high(self) -> bool:
        return self.arch != "semantic_fpn"

    @property
    def trained_on(self) -> Optional[str]:
        t = self.card.get("trained_on")
        return str(t) if t else None

    @property
    def is_scenes_model(self) -> bool:
        """Trained on the built-in procedural scenes (by its card)."""
        from ..data.scenes import SCENE_CLASSES
        text = " ".join(str(self.card.get(k) or "") for k in ("trained_on", "dataset"))
        return tuple(self.classes) == tuple(SCENE_CLASSES) or "scene" in text.lower()

    @property
    def metrics(self) -> dict:
        m = self.card.get("metrics")
        return m if isinstance(m, dict) else {}

    def val_miou(self) -> Optional[float]:
        v = self.metrics.get("val_mIoU")
        try:
            v = float(v)
        except (TypeError, ValueError):
            return None
        return v if np.isfinite(v) else None

    def description(self) -> str:
        if self.key in SCENE_VARIANTS:
            return SCENE_VARIANTS[self.key][1]
        if not self.has_high:
            return "SemanticFPN baseline"
        sg = getattr(self.model.cfg, "sg_backbone_on", None)
        return "HFGD" + ("" if sg is None else f", stop-gradient {'on' if sg else 'off'}")


def _classes_and_palette(card: dict, k: int):
    from ..viz import default_palette
    names = [str(c) for c in (card.get("classes") or [])]
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


class ModelStore:
    """Bundled models by name and user checkpoints by path, loaded on first use.

    Args:
        device: where models run ("cpu", "cuda", ...).
        allow_paths: accept checkpoint paths (safetensors + JSON) besides bundled names.
        max_models: models kept loaded (least recently used ones are dropped).
    """

    def __init__(self, device: str = "cpu", allow_paths: bool = True, max_models: int = 5):
        self.device = device
        self.allow_paths = allow_paths
        self._models = LRU(max_models, threading.Semaphore(1))
        self._listing = None

    def bundled(self) -> list[str]:
        """Names of the bundled models (the default first); listed again only when the
        weights folder changes (listing reads every card)."""
        from .. import zoo
        folder = Path(zoo.WEIGHTS_DIR)
        try:
            stamp = (str(folder), folder.stat().st_mtime_ns)
        except OSError:
            stamp = (str(folder), None)
        if self._listing is None or self._listing[0] != stamp:
            self._listing = (stamp, zoo.list_pretrained())
        return list(self._listing[1])

    def default(self) -> Optional[str]:
        from .. import zoo
        names = self.bundled()
        return zoo.DEFAULT_MODEL if zoo.DEFAULT_MODEL in names else (names[0] if names else None)

    def resolve(self, spec) -> tuple[str, bool]:
        """``spec`` -> (cache key, bundled?) without loading anything."""
        from ..engine.checkpoint import CheckpointError, checkpoint_paths
        spec = str(spec or "").strip()
        if not spec:
            raise AppError("choose a model")
        if spec in self.bundled():
            return spec, True
        if not self.allow_paths:
            raise AppError(f"unknown model {spec!r}; choose one of: "
                           f"{', '.join(self.bundled()) or 'none installed'}")
        try:
            card = checkpoint_paths(Path(spec).expanduser())["card"]
        except CheckpointError as e:
            raise AppError(str(e)) from None
        except (OSError, ValueError) as e:
            raise AppError(f"not a checkpoint path: {spec!r} ({e})") from None
        if not card.is_file():
            bundled = ", ".join(self.bundled()) or "none installed"
            raise AppError(f"no model named {spec!r} and no checkpoint card at {card} "
                           f"(a checkpoint is NAME.safetensors + NAME.json); bundled models: "
                           f"{bundled}")
        return str(card.resolve()), False

    def get(self, spec) -> ModelEntry:
        key, bundled = self.resolve(spec)
        return self._models.get_or_compute(key, lambda: self._load(key, bundled))

    def _load(self, key: str, bundled: bool) -> ModelEntry:
        from .. import zoo
        from ..engine.checkpoint import CheckpointError, load_checkpoint
        try:
            if bundled:
                model, card = load_checkpoint(zoo.WEIGHTS_DIR / key, map_location=self.device)
            else:
                model, card = load_checkpoint(key, map_location=self.device)
        except CheckpointError as e:
            raise AppError(f"cannot load model: {e}") from None
        except Exception as e:  # a card with a config this version cannot build, etc.
            raise AppError(f"cannot load model {key}: {type(e).__name__}: {e}") from None
        classes, palette = _classes_and_palette(card, int(model.cfg.num_classes))
        label = key if bundled else Path(key).with_suffix("").name
        return ModelEntry(key=key, label=label, model=model.eval(), card=card,
                          classes=classes, palette=palette, bundled=bundled)
