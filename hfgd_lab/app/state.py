"""What the app keeps between requests: the user's options, and the models it may load.

- :class:`Options`: the inference options of a request (part of the analysis cache key),
  turned into the engine's :class:`~hfgd_lab.engine.InferenceOptions`.
- :class:`ModelStore`: the **allow-list** of models -- the bundled ones and, with
  ``--models-dir``, the checkpoints found in those folders at start-up -- loaded through
  :func:`hfgd_lab.engine.from_pretrained` on first use and kept in an
  :class:`hfgd_lab.analysis.LRU`. Arbitrary checkpoint paths are accepted only when the
  server was started with ``allow_paths`` (``--allow-checkpoint-paths``); otherwise a
  name outside the list is refused without touching the filesystem, and no message
  names a path outside the allowed folders.

No Gradio here: see :mod:`hfgd_lab.app.handlers` and :mod:`hfgd_lab.app.ui`.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..analysis import LRU
from ..engine import CheckpointError, InferenceOptions, LoadedModel, from_pretrained, read_card
from ..engine import zoo
from ..engine.checkpoint import checkpoint_paths

__all__ = ["AppError", "Options", "ModelStore", "short"]


class AppError(ValueError):
    """A problem the user can fix (bad image, unknown model, ...); the message says how."""


def short(text, limit: int = 60) -> str:
    """``text`` for a message: at most ``limit`` characters (a pasted novel as a model
    name is not echoed back whole)."""
    s = str(text)
    return s if len(s) <= limit else s[: limit - 1] + "…"


# ---- options -------------------------------------------------------------------------

@dataclass(frozen=True)
class Options:
    """Inference options; every field is part of the analysis cache key.

    Args:
        max_side: resolution cap, the image's longer side in pixels (never upscaled).
        sliding: sliding-window prediction with ``window``-pixel square windows
            (overlap 1/3); the features and attention still come from one whole pass.
        window: the sliding window's side in pixels.
        flip: add the horizontally flipped image (test-time augmentation).
    """

    max_side: int = 512
    sliding: bool = False
    window: int = 192
    flip: bool = False

    MIN_SIDE = 32
    MAX_SIDE = 2048
    MIN_WINDOW = 64

    @classmethod
    def parse(cls, max_side=None, sliding=False, flip=False, window=None) -> "Options":
        """Options from what a form or a client sent (numbers as numbers or strings).

        Raises:
            AppError: a value that is not a number or out of its range, naming it."""
        def number(value, what, default, lo, hi):
            if value is None or value == "":
                return default
            try:
                v = float(value)
                if v != v:  # NaN
                    raise ValueError
                v = int(round(v))
            except (TypeError, ValueError, OverflowError):
                raise AppError(f"{what} must be a number of pixels, got {short(value)!r}") \
                    from None
            if not lo <= v <= hi:
                raise AppError(f"{what} must be between {lo} and {hi} pixels, got {v}")
            return v
        side = number(max_side, "resolution cap", cls.max_side, cls.MIN_SIDE, cls.MAX_SIDE)
        win = number(window, "sliding window", cls.window, cls.MIN_WINDOW, cls.MAX_SIDE)
        return cls(side, bool(sliding), win, bool(flip))

    def key(self) -> tuple:
        # the window only matters when sliding
        return (self.max_side, self.sliding, self.window if self.sliding else None, self.flip)

    def inference(self) -> InferenceOptions:
        """The engine's options: whole image or sliding window, with or without flip."""
        if self.sliding:
            return InferenceOptions(mode="slide", crop_size=[self.window] * 2, flip=self.flip)
        return InferenceOptions(flip=self.flip)

    def describe(self) -> str:
        parts = [f"longest side ≤ {self.max_side} px"]
        if self.sliding:
            parts.append(f"sliding window {self.window} px")
        if self.flip:
            parts.append("flip TTA")
        return ", ".join(parts)


# ---- models --------------------------------------------------------------------------

def _folder_checkpoints(folder: Path) -> dict[str, Path]:
    """Checkpoints directly inside ``folder``: two-file checkpoints (``NAME.json`` +
    ``NAME.safetensors``, named NAME) and model / run folders (named by the folder),
    each with a readable hfgd-lab card. Read once, at start-up."""
    found = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        try:
            if p.is_dir():
                card = checkpoint_paths(p)["card"]
                name = p.name
            elif p.suffix == ".json" and p.with_suffix(".safetensors").is_file():
                card, name = p, p.stem
            else:
                continue
            read_card(card)
        except (CheckpointError, OSError, ValueError):
            continue
        found[name] = p
    return found


class ModelStore:
    """The models the app may load, and the ones it has loaded.

    Args:
        device: where models run ("cpu", "cuda", ...).
        models_dirs: folders whose checkpoints are offered besides the bundled models
            (listed once, here: the allow-list is fixed while the server runs).
        allow_paths: also accept any checkpoint path or Hub repo id typed by a user
            (only for a server on this machine, by the operator's explicit choice).
        max_models: loaded models kept (least recently used ones are dropped).
    """

    def __init__(self, device: str = "cpu", models_dirs: Sequence = (),
                 allow_paths: bool = False, max_models: int = 4):
        self.device = device
        self.allow_paths = bool(allow_paths)
        self.models_dirs = [Path(d).expanduser().resolve() for d in models_dirs]
        for d in self.models_dirs:
            if not d.is_dir():
                raise AppError(f"--models-dir {d}: not a folder")
        self._models = LRU(max_models, threading.Semaphore(1))
        # name -> what from_pretrained loads (a bundled name or a path in a models dir)
        self.allowed: dict[str, str] = {n: n for n in zoo.list_pretrained()}
        self.skipped: list[str] = []
        for d in self.models_dirs:
            for name, path in _folder_checkpoints(d).items():
                if name in self.allowed:
                    self.skipped.append(f"{d.name}/{name} (the name is taken)")
                    continue
                self.allowed[name] = str(path)

    def names(self) -> list[str]:
        """The names offered in the model list: the default model first, then the other
        bundled ones, then the checkpoints of the models folders."""
        return list(self.allowed)

    def default(self) -> Optional[str]:
        names = self.names()
        return zoo.DEFAULT_MODEL if zoo.DEFAULT_MODEL in names else (names[0] if names else None)

    def cards(self) -> dict[str, dict]:
        """The card of every listed model (for class lists), without loading weights;
        unreadable cards are left out."""
        out = {}
        for name, target in self.allowed.items():
            path = zoo.WEIGHTS_DIR / name if target == name else Path(target)
            try:
                out[name] = read_card(path)
            except (CheckpointError, OSError, ValueError):
                continue
        return out

    def _target(self, spec) -> str:
        spec = str(spec or "").strip() or (self.default() or "")
        if not spec:
            raise AppError("no model is installed: start the app with --models-dir DIR")
        if spec in self.allowed:
            return self.allowed[spec]
        if self.allow_paths:
            return spec
        # no filesystem access for a name outside the list: the answer is the same
        # whether or not such a file or folder exists
        raise AppError(f"unknown model {short(spec)!r}; choose one of: "
                       f"{', '.join(self.names()) or 'none installed'}")

    def get(self, spec) -> LoadedModel:
        """The loaded model ``spec`` names (loaded on first use).

        Raises:
            AppError: a name outside the allow-list (or, with ``allow_paths``, a path
                holding no valid checkpoint), with a message that names no folder
                outside the allowed ones."""
        target = self._target(spec)
        return self._models.get_or_compute(target, lambda: self._load(target))

    def _load(self, target: str) -> LoadedModel:
        try:
            return from_pretrained(target, device=self.device, allow_paths=True)
        except CheckpointError as e:
            raise AppError(f"cannot load model: {self._hide_folders(str(e))}") from None
        except Exception as e:  # a card this version cannot build, etc.
            raise AppError(f"cannot load model {short(self._hide_folders(target))!r} "
                           f"({type(e).__name__}: {short(self._hide_folders(str(e)), 200)})") \
                from None

    def _hide_folders(self, text: str) -> str:
        """Absolute paths of the allowed folders replaced by their names, so a message
        says which checkpoint failed without describing the machine."""
        out = text
        folders = [(d, d.name) for d in self.models_dirs]
        folders.append((Path(zoo.WEIGHTS_DIR).resolve(), "bundled"))
        folders.append((Path(zoo.WEIGHTS_DIR), "bundled"))
        for d, label in sorted(folders, key=lambda f: -len(str(f[0]))):
            out = out.replace(str(d) + "/", f"{label}/").replace(str(d), label)
        return out
