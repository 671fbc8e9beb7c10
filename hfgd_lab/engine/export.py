"""ONNX export: a model's inference graph with dynamic batch, height and width.

What the exported graph computes (:class:`InferenceGraph`) is exactly
``model.predict``: a **normalised** image batch ``image`` (B, 3, H, W) float32 -- RGB,
``(pixel / 255 - mean) / std`` with the model's own mean and std -- in; the upsampler's
logits resized to the input, ``logits`` (B, K, H, W) float32, out; optionally their
argmax ``labels`` (B, H, W) int64. Padding to a multiple of 32, the crop back to the
input's extent and the bilinear resize are inside the graph, so any H, W >= 1 works.

Exporter (measured on this project's model, torch 2.14, onnxruntime 1.32):

- ``torch.onnx.export(..., dynamo=True)`` (``torch.export`` + onnxscript), the one used.
  With ``Dim.AUTO`` on batch, height and width (traced at batch 2 so that no size is
  specialised to 1), the graph matches PyTorch at every size tried, from 1x1 to 256x300
  and batch 1 to 3 (max abs logit difference < 1e-6). The one change it needed in the
  model: ``HFGD._pad`` always pads while exporting (a Python branch on the input's size
  would otherwise be baked in); timm's TF-"SAME" convolutions pad by their constant
  while exporting (:func:`static_same_padding`, else the symbolic size arithmetic makes
  a Lite0 export take many minutes). Its cost is export time: tracing symbolic shapes
  takes ~30 s of CPU for a small model (``hfgd-lab export`` prints the time). PyTorch's
  ``backed_size_oblivious`` mode gave the same graphs for ~50% more CPU: not used.
- The legacy TorchScript exporter (``dynamo=False``, deprecated in torch 2.x) exports
  in seconds but bakes Python shape arithmetic into constants: a model exported at
  97x131 returned 33x132 logits for a 33x200 input. Not used.

Opset 18 (:data:`OPSET`): the lowest opset that exporter writes natively (lower ones go
through a version converter); onnxruntime >= 1.14 runs it.

Metadata: the ONNX model's ``metadata_props`` carry what a deployment needs beside the
graph, as strings (JSON where structured), all keys prefixed ``hfgd_lab.``: ``format``,
``version``, ``classes`` (K names), ``palette`` (K RGB triples), ``mean`` and ``std``,
``output_stride``, ``num_classes``, ``backbone``, ``source`` (what was exported) and
``card`` (the checkpoint's card without training state). :func:`read_onnx_metadata`
parses them back; :class:`OnnxSegmenter` runs the file with onnxruntime alone.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import tempfile
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from timm.layers import Conv2dSame
from torch import nn
from torch.export import Dim

from .. import __version__
from ..data.preprocess import as_uint8_image, normalize_array
from .loaded import LoadedModel, card_classes, from_pretrained

__all__ = ["OPSET", "FORMAT", "ExportError", "InferenceGraph", "ExportReport", "export_onnx",
           "onnx_metadata", "read_onnx_metadata", "OnnxSegmenter", "compare_onnx",
           "is_hfgd_onnx", "static_same_padding"]

OPSET = 18
FORMAT = "hfgd-lab/onnx/v1"
PREFIX = "hfgd_lab."
INPUT, LOGITS, LABELS = "image", "logits", "labels"
EXAMPLE_SIZE = (97, 131)     # odd on purpose: padding and cropping are traced, not skipped
TOLERANCE = 1e-4             # max abs logit difference export_onnx accepts when verifying


class ExportError(RuntimeError):
    """A model cannot be exported, or its exported graph does not match PyTorch."""


def _onnx():
    """``(onnx, onnxruntime)``: the optional ``export`` extra, imported where it is used so
    that the rest of hfgd-lab (``hfgd-lab bench`` included) works without it; a missing
    package is one :class:`ExportError` saying what to install."""
    try:
        import onnx
        import onnxruntime
        import onnxscript  # noqa: F401  (torch.onnx's dynamo exporter writes through it)
    except ImportError as e:
        raise ExportError(f"ONNX export needs the 'export' extra ({e.name} is missing): "
                          "pip install 'hfgd-lab[export]'") from None
    return onnx, onnxruntime


class InferenceGraph(nn.Module):
    """The exported computation: ``model.predict`` on normalised images.

    ``forward(image)``: (B, 3, H, W) float32 -> ``logits`` (B, K, H, W), or
    ``(logits, labels)`` with ``labels`` (B, H, W) int64 = ``logits.argmax(1)`` when
    built with ``labels=True``. The stride-``os`` logits are resized to their full
    extent (``ceil(H / os) * os``) and cropped to (H, W), as
    :func:`hfgd_lab.models.resize_logits` does, written without a branch on the size.
    """

    def __init__(self, model: nn.Module, labels: bool = False):
        super().__init__()
        self.model = model
        self.labels = labels

    def forward(self, image: torch.Tensor):
        h, w = image.shape[-2:]
        out = self.model(image, return_feat_up=False)
        s, low = out.output_stride, out.logits
        full = F.interpolate(low, size=(low.shape[-2] * s, low.shape[-1] * s),
                             mode="bilinear", align_corners=False)
        logits = full[..., :h, :w]
        return (logits, logits.argmax(1)) if self.labels else logits


# ---- metadata --------------------------------------------------------------------------

def onnx_metadata(loaded: LoadedModel, labels: bool = False) -> dict[str, str]:
    """The ``metadata_props`` written into an exported file (see the module docstring):
    ``{"hfgd_lab.<key>": string}``."""
    cfg = loaded.cfg
    mean, std = loaded.normalization
    card = {k: v for k, v in loaded.card.items() if k != "train_state"}
    outputs = f"{LOGITS}: (B, K, H, W) float32 logits at the input's size"
    if labels:
        outputs += f"; {LABELS}: (B, H, W) int64 argmax over K"
    meta = {
        "format": FORMAT,
        "version": __version__,
        "classes": json.dumps(list(loaded.classes)),
        "palette": json.dumps(np.asarray(loaded.palette).astype(int).tolist()),
        "mean": json.dumps([float(v) for v in mean]),
        "std": json.dumps([float(v) for v in std]),
        "input": f"{INPUT}: (B, 3, H, W) float32 RGB, (pixel / 255 - mean) / std; any H, W",
        "outputs": outputs,
        "output_stride": str(cfg.output_stride),
        "num_classes": str(cfg.num_classes),
        "backbone": cfg.backbone,
        "source": loaded.name,
        "card": json.dumps(card, default=str),
    }
    return {PREFIX + k: v for k, v in meta.items()}


_JSON_KEYS = ("classes", "palette", "mean", "std", "card")


def _parse_metadata(props: dict) -> dict:
    out = {}
    for key, value in props.items():
        if not key.startswith(PREFIX):
            continue
        key = key[len(PREFIX):]
        if key in _JSON_KEYS:
            value = json.loads(value)
        elif key in ("output_stride", "num_classes"):
            value = int(value)
        out[key] = value
    return out


def read_onnx_metadata(path: str | Path) -> dict:
    """The hfgd-lab metadata of an exported file, parsed: ``classes`` (list), ``palette``
    (K x 3 list), ``mean``/``std`` (3 floats), ``output_stride``/``num_classes`` (int),
    ``card`` (dict) and the strings ``format``, ``version``, ``backbone``, ``source``,
    ``input``, ``outputs``. Raises :class:`ExportError` when the file is not an ONNX
    model written by hfgd-lab."""
    onnx, _ = _onnx()
    path = Path(path)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # missing, not protobuf
        raise ExportError(f"{path}: not a readable ONNX model ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    meta = _parse_metadata({p.key: p.value for p in proto.metadata_props})
    if meta.get("format") != FORMAT:
        raise ExportError(f"{path}: an ONNX model without hfgd-lab metadata "
                          f"(format {meta.get('format')!r}, expected {FORMAT!r})")
    return meta


def is_hfgd_onnx(path: str | Path) -> bool:
    """True when ``path`` is an ONNX file that hfgd-lab wrote (its metadata says so)."""
    try:
        read_onnx_metadata(path)
        return True
    except ExportError:
        return False


# ---- export ----------------------------------------------------------------------------

def _static_same_conv(self, x):
    return F.conv2d(F.pad(x, self._export_pad), self.weight, self.bias, self.stride, 0,
                    self.dilation, self.groups)


@contextlib.contextmanager
def static_same_padding(model: nn.Module):
    """While exporting, timm's TF-"SAME" convolutions (``Conv2dSame``: the ``tf_``
    EfficientNets' stride-2 layers) pad by a constant instead of computing it from the
    input's size.

    ``Conv2dSame`` computes ``max((ceil(x / s) - 1) * s + (k - 1) * d + 1 - x, 0)`` in
    Python on every call; traced with symbolic sizes, the nested ceil/max of five such
    layers made exporting the bundled Lite0 take minutes of CPU (measured: its backbone
    alone 7 s with constant padding, over 2 minutes without, unfinished). Inside HFGD
    every input to these layers is a multiple of their stride (the image is padded to a
    multiple of 32 and they reach stride 32 at most), where that formula is the
    constant ``max((k - 1) * d + 1 - s, 0)``, split as TensorFlow does (the smaller half
    first). :func:`export_onnx`'s check against the model's own dynamic layers in
    PyTorch, at odd sizes, confirms the graph unchanged. Yields the number of layers."""
    layers = [m for m in model.modules() if isinstance(m, Conv2dSame)]
    try:
        for m in layers:
            pads = []
            for k, s, d in zip(m.weight.shape[-2:], m.stride, m.dilation):
                total = max((k - 1) * d + 1 - s, 0)
                pads.append((total // 2, total - total // 2))
            m._export_pad = (*pads[1], *pads[0])          # F.pad order: W, then H
            m.forward = types.MethodType(_static_same_conv, m)
        yield len(layers)
    finally:
        for m in layers:
            m.__dict__.pop("forward", None)
            m.__dict__.pop("_export_pad", None)


@dataclass
class ExportReport:
    """What :func:`export_onnx` did: the file, its size in bytes, the export time in
    seconds, and the check against PyTorch (one row per size: ``size``,
    ``max_abs_diff``, ``label_agreement``), empty when not verified."""

    path: Path
    bytes: int
    seconds: float
    checks: list = field(default_factory=list)


def _name_dims(proto) -> None:
    """Name the graph's symbolic dims ``batch``, ``height``, ``width`` on its input and
    outputs (the exporter writes its internal symbols and size expressions there)."""
    names = {INPUT: (0, 2, 3), LOGITS: (0, 2, 3), LABELS: (0, 1, 2)}
    for v in list(proto.graph.input) + list(proto.graph.output):
        dims = v.type.tensor_type.shape.dim
        for i, name in zip(names.get(v.name, ()), ("batch", "height", "width")):
            if not dims[i].HasField("dim_value"):
                dims[i].dim_param = name


def export_onnx(model, path: str | Path, *, labels: bool = False, opset: int = OPSET,
                example_size: Sequence[int] = EXAMPLE_SIZE, verify: bool = True,
                check_sizes: Sequence[Sequence[int]] = ((64, 64), (33, 75))) -> ExportReport:
    """Export ``model``'s inference graph (:class:`InferenceGraph`) to ONNX file ``path``.

    Args:
        model: a :class:`LoadedModel`, or anything :func:`from_pretrained` takes (a
            bundled name, a checkpoint, a model folder, a Hub repo id).
        path: the ``.onnx`` file to write (atomically: a failed export leaves no file
            and an existing one untouched).
        labels: add the ``labels`` output (argmax).
        opset: ONNX opset, >= 18 (see the module docstring).
        example_size: (H, W) of the example traced (batch 2); odd sizes keep the padding
            in the graph.
        verify: run the file with onnxruntime at ``example_size`` and ``check_sizes``
            against ``model.predict`` and fail when the max abs logit difference
            exceeds :data:`TOLERANCE` (1e-4).

    Returns:
        :class:`ExportReport`.

    Raises:
        ValueError: ``opset`` < 18. ExportError: the exporter fails, or the graph does
        not match PyTorch. CheckpointError: ``model`` cannot be loaded.
    """
    if int(opset) < OPSET:
        raise ValueError(f"opset {opset}: the exporter writes opset >= {OPSET}")
    onnx, _ = _onnx()
    loaded = model if isinstance(model, LoadedModel) else from_pretrained(model)
    net = loaded.model
    if next(net.parameters()).device.type != "cpu":
        net = copy.deepcopy(net).cpu()
    was_training = net.training
    net.eval()
    graph = InferenceGraph(net, labels).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, *example_size, generator=gen)
    path = Path(path)
    start = time.perf_counter()
    try:
        with torch.no_grad(), static_same_padding(net):
            program = torch.onnx.export(
                graph, (x,), dynamo=True, opset_version=int(opset), verbose=False,
                input_names=[INPUT], output_names=[LOGITS, LABELS] if labels else [LOGITS],
                dynamic_shapes={"image": {0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO}},
                optimize=True)
    except Exception as e:
        text = str(e).strip().splitlines()
        raise ExportError(f"cannot export {loaded.name!r} (backbone {loaded.cfg.backbone}) "
                          f"to ONNX: {type(e).__name__}: {text[0][:300] if text else ''}") \
            from None
    finally:
        net.train(was_training)
    seconds = time.perf_counter() - start
    proto = program.model_proto
    _name_dims(proto)
    proto.doc_string = (f"hfgd-lab {__version__}: {loaded.name} ({loaded.description()}), "
                        f"{loaded.num_classes} classes, backbone {loaded.cfg.backbone}")
    del proto.metadata_props[:]
    for key, value in onnx_metadata(loaded, labels).items():
        proto.metadata_props.add(key=key, value=value)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp.onnx", dir=path.parent)
    os.close(fd)
    try:
        onnx.save(proto, tmp)
        checks = []
        if verify:
            checks = compare_onnx(net, tmp, [tuple(example_size), *map(tuple, check_sizes)])
            worst = max(checks, key=lambda c: c["max_abs_diff"])
            if not worst["max_abs_diff"] <= TOLERANCE:
                raise ExportError(
                    f"the exported graph of {loaded.name!r} does not match PyTorch: max abs "
                    f"logit difference {worst['max_abs_diff']:.3g} at {worst['size']} "
                    f"(tolerance {TOLERANCE:g}); file not written")
            wrong = [c for c in checks if c["clear_mismatches"]]
            if wrong:
                raise ExportError(
                    f"the exported graph of {loaded.name!r} does not match PyTorch: "
                    f"{wrong[0]['clear_mismatches']} pixel label(s) differ at "
                    f"{wrong[0]['size']} where the logits are not near a tie; "
                    "file not written")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return ExportReport(path, path.stat().st_size, seconds, checks)


# ---- running and checking an exported file -----------------------------------------------

def _session(path, threads: Optional[int] = None):
    _, ort = _onnx()
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(session, x) -> dict[str, np.ndarray]:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"image must be (B, 3, H, W), got {x.shape}")
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {INPUT: x})))


class OnnxSegmenter:
    """An exported file run by onnxruntime alone (CPU), with its metadata.

    Args:
        path: a file written by :func:`export_onnx`.
        threads: onnxruntime intra-op threads (None: its default).

    Attributes:
        meta: :func:`read_onnx_metadata`. classes: K names. palette: (K, 3) uint8.
        mean / std: the normalisation of [0, 1] pixels the graph expects.
    """

    def __init__(self, path: str | Path, threads: Optional[int] = None):
        self.path = Path(path)
        self.meta = read_onnx_metadata(self.path)
        self.session = _session(self.path, threads)
        self.classes, self.palette = card_classes(
            {"classes": self.meta["classes"], "palette": self.meta["palette"]},
            self.meta["num_classes"])
        self.mean, self.std = self.meta["mean"], self.meta["std"]

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Normalised images (B, 3, H, W) float32 -> ``{"logits": (B, K, H, W)[,
        "labels": (B, H, W) int64]}``."""
        return _run(self.session, x)

    def segment(self, image) -> np.ndarray:
        """A uint8 RGB image (H, W, 3) (or PIL image) -> (H, W) int64 labels, normalised
        with the file's own mean and std (:func:`hfgd_lab.data.normalize_array`)."""
        x = normalize_array(as_uint8_image(image), self.mean, self.std)
        out = self.run(x.transpose(2, 0, 1)[None])
        labels = out.get(LABELS)
        return (labels if labels is not None else out[LOGITS].argmax(1))[0].astype(np.int64)


def compare_onnx(model: nn.Module, path: str | Path, sizes: Sequence[Sequence[int]],
                 batch: int = 1, seed: int = 0) -> list[dict]:
    """Run ``model.predict`` and the exported file on the same random normalised images
    at each (H, W) in ``sizes``; one row per size: ``size``, ``max_abs_diff`` (max abs
    logit difference), ``label_agreement`` (fraction of pixels whose argmax agrees, of
    the file's ``labels`` output when it has one), ``near_ties`` (fraction of pixels whose
    top-two PyTorch logits are within ``2 * max_abs_diff``: the only pixels where two
    graphs that far apart can pick different labels) and ``clear_mismatches`` (pixels
    whose labels differ outside those near ties: 0 unless the graph is wrong; an argmax
    of logits within ``max_abs_diff`` can only flip at a near tie, so this checks the
    file's ``labels`` output)."""
    session = _session(path)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for h, w in sizes:
        x = torch.randn(batch, 3, int(h), int(w), generator=gen)
        with torch.no_grad():
            ref = model.predict(x)
        out = _run(session, x.numpy())
        got = out[LOGITS]
        if got.shape != tuple(ref.shape):
            raise ExportError(f"{path}: logits {got.shape} for input {tuple(x.shape)}, "
                              f"PyTorch gives {tuple(ref.shape)}")
        labels = out.get(LABELS, got.argmax(1))
        diff = float(np.abs(got - ref.numpy()).max())
        top2 = ref.topk(min(2, ref.shape[1]), dim=1).values.numpy()
        tie = (top2[:, 0] - top2[:, -1] <= 2 * diff) if ref.shape[1] > 1 else \
            np.zeros(labels.shape, bool)
        agree = labels == ref.argmax(1).numpy()
        rows.append({"size": [int(h), int(w)], "max_abs_diff": diff,
                     "label_agreement": float(agree.mean()),
                     "near_ties": float(tie.mean()),
                     "clear_mismatches": int((~agree & ~tie).sum())})
    return rows
