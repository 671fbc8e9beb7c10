"""Checkpoints as safetensors + a JSON card, written atomically, read without pickle.

A checkpoint ``NAME`` is two files: ``NAME.safetensors`` (model weights) and
``NAME.json`` (the card: model config, classes, palette, metrics, provenance). A
training checkpoint adds ``NAME.train.safetensors`` (optimizer and RNG tensors); the
non-tensor half of that state lives in the card under ``"train_state"``. Every file
is written to a temporary name and moved into place, the card last, and the card
carries a ``save_id`` that the tensor files repeat, so a crash mid-save never leaves
a card pointing at half-written weights: the previous checkpoint stays intact.
"""
from __future__ import annotations

import json
import os
import random
import uuid
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..config import ConfigError, HFGDConfig
from ..data.preprocess import IMAGENET_MEAN, IMAGENET_STD
from ..models import build_model

FORMAT = "hfgd-lab/checkpoint/v1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or does not fit the model."""


def checkpoint_paths(path: str | Path) -> dict[str, Path]:
    """``runs/x/best``, ``best.json`` or ``best.safetensors`` -> the files of checkpoint
    ``best``; a directory means its ``best`` (else ``last``) checkpoint."""
    p = Path(path)
    if p.is_dir():
        for name in ("best", "last"):
            if (p / f"{name}.json").is_file():
                p = p / name
                break
        else:
            raise CheckpointError(f"no checkpoint (best.json / last.json) in directory {p}")
    stem = str(p)
    for suffix in (".train.safetensors", ".safetensors", ".json"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return {"card": Path(stem + ".json"), "weights": Path(stem + ".safetensors"),
            "train": Path(stem + ".train.safetensors")}


def _atomic_write(path: Path, write) -> Path:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    write(tmp)
    return tmp


def _flatten_optimizer(state: dict):
    """Optimizer state_dict -> (tensors, json-able rest)."""
    tensors, rest = {}, {"param_groups": state["param_groups"], "state": {}}
    for pid, st in state["state"].items():
        rest["state"][str(pid)] = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                rest["state"][str(pid)][k] = v
    return tensors, rest


def _unflatten_optimizer(tensors: dict, rest: dict) -> dict:
    state = {}
    for pid, st in rest["state"].items():
        state[int(pid)] = dict(st)
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, pid, k = key.split(".", 2)
            state.setdefault(int(pid), {})[k] = v
    return {"state": state, "param_groups": rest["param_groups"]}


def rng_state() -> tuple[dict, dict]:
    """Every RNG the training loop touches: (tensors, json-able)."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    py = random.getstate()
    np_state = np.random.get_state()
    return tensors, {"python": [py[0], list(py[1]), py[2]],
                     "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}


def set_rng_state(tensors: dict, data: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    py = data["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npv = data["numpy"]
    np.random.set_state((npv[0], np.array(npv[1], dtype=np.uint32), *npv[2:]))


def save_checkpoint(path: str | Path, model: torch.nn.Module, *, classes=None, palette=None,
                    metrics: dict | None = None, extra: dict | None = None,
                    optimizer: torch.optim.Optimizer | None = None,
                    train_state: dict | None = None, scaler=None, dtype=None) -> Path:
    """Write checkpoint ``path`` (a stem; suffixes are added). Returns the card path.

    ``optimizer``/``train_state`` make it resumable (RNG states are added here);
    ``dtype=torch.float16`` stores floating weights at half size (bundled models).
    """
    paths = checkpoint_paths(Path(str(path)))
    paths["card"].parent.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)  # unwrap DDP
    save_id = uuid.uuid4().hex
    weights = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        # a copy of its own: timm models may share tensors between modules (CoaT), which
        # safetensors refuses to write
        weights[k] = v.clone().contiguous()
    card = {
        "format": FORMAT,
        "save_id": save_id,
        "config": model.cfg.resolved().to_dict(),
        "classes": list(classes) if classes is not None else None,
        "palette": np.asarray(palette).astype(int).tolist() if palette is not None else None,
        "metrics": metrics or {},
        **(extra or {}),
    }
    meta = {"format": FORMAT, "save_id": save_id}
    tmps = [(_atomic_write(paths["weights"], lambda t: save_file(weights, str(t), metadata=meta)),
             paths["weights"])]
    if optimizer is not None or train_state is not None:
        tensors, rng_json = rng_state()
        state = dict(train_state or {})
        state["rng"] = rng_json
        if optimizer is not None:
            opt_tensors, opt_rest = _flatten_optimizer(optimizer.state_dict())
            tensors.update(opt_tensors)
            state["optimizer"] = opt_rest
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        card["train_state"] = state
        tmps.append((_atomic_write(paths["train"],
                                   lambda t: save_file(tensors, str(t), metadata=meta)),
                     paths["train"]))
    text = json.dumps(card, indent=1, default=_json_default)
    tmps.append((_atomic_write(paths["card"], lambda t: t.write_text(text)), paths["card"]))
    for tmp, final in tmps:  # card last: it is what readers look for
        os.replace(tmp, final)
    return paths["card"]


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if torch.is_tensor(o):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_card(path: str | Path) -> dict:
    paths = checkpoint_paths(path)
    if not paths["card"].is_file():
        raise CheckpointError(f"checkpoint card not found: {paths['card']}")
    try:
        card = json.loads(paths["card"].read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint card {paths['card']} is not valid JSON: {e}") from None
    if not isinstance(card, dict) or "config" not in card:
        raise CheckpointError(f"{paths['card']} is not an hfgd-lab checkpoint card (no 'config')")
    return card


def _read_tensors(path: Path, save_id: str | None) -> dict:
    if not path.is_file():
        raise CheckpointError(f"checkpoint weights not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise CheckpointError(f"cannot read {path}: {type(e).__name__}: {e}") from None
    if save_id and meta.get("save_id") not in (None, save_id):
        raise CheckpointError(f"{path} does not belong to its card (save_id differs): "
                              "the checkpoint was overwritten half-way; use another one")
    return tensors


def load_checkpoint(path: str | Path, map_location="cpu", build=True):
    """Load a checkpoint: returns ``(model, card)`` (model in eval mode).

    The model is rebuilt from the card's config (``backbone_weights`` and
    ``pretrained`` are dropped: the checkpoint holds the weights) and loaded strictly.
    """
    paths = checkpoint_paths(path)
    card = read_card(path)
    cfg_dict = dict(card["config"])
    cfg_dict.update(backbone_weights=None, pretrained=False)
    # cards written before the normalisation was stored: every model then used ImageNet's
    cfg_dict.setdefault("image_mean", list(IMAGENET_MEAN))
    cfg_dict.setdefault("image_std", list(IMAGENET_STD))
    try:
        cfg = HFGDConfig.from_dict(cfg_dict)
    except ConfigError as e:
        raise CheckpointError(f"{paths['card']}: invalid model config: {e}") from None
    tensors = _read_tensors(paths["weights"], card.get("save_id"))
    model = build_model(cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = [f"{k}: {tuple(tensors[k].shape)} vs {tuple(v.shape)}"
              for k, v in expected.items() if k in tensors and tensors[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise CheckpointError(f"{paths['weights']} does not fit its config: missing {missing[:8]}, "
                              f"unexpected {unexpected[:8]}, shape mismatches {shapes[:8]}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})
    model.to(map_location).eval()
    return model, card


def load_train_state(path: str | Path) -> tuple[dict, dict, dict]:
    """(card, train tensors, train_state) of a resumable checkpoint."""
    paths = checkpoint_paths(path)
    card = read_card(path)
    if "train_state" not in card:
        raise CheckpointError(f"{paths['card']} holds no training state (not resumable)")
    tensors = _read_tensors(paths["train"], card.get("save_id"))
    return card, tensors, card["train_state"]


def restore_optimizer(optimizer, tensors: dict, train_state: dict) -> None:
    optimizer.load_state_dict(_unflatten_optimizer(tensors, train_state["optimizer"]))
