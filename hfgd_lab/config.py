"""HFGDConfig: the whole model described as data, and the typed checks every config shares.

A plain dataclass so that a model is rebuilt from a YAML file, a checkpoint's JSON
card or a few keyword arguments, and so that every ablation of the paper is a field.
Every field is checked and coerced from its declared type at construction (pydantic
in lax mode: ``"1e-3"`` becomes ``0.001``, ``"8"`` becomes ``8``, ``"fast"`` for a
float is refused), then its value is checked; every failure is a one-line
:class:`ConfigError` naming the field, the value and what is expected.

The stop-gradient variants of the experiment (SemanticFPN, HFGD without / with /
with a partial stop-gradient) are defined here, once: :data:`VARIANTS`.
"""
from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional

import timm
import yaml
from pydantic import Strict, TypeAdapter, ValidationError
from timm.models import get_pretrained_cfg

from .data.preprocess import IMAGENET_MEAN, IMAGENET_STD

ARCHS = ("hfgd", "semantic_fpn")
OUTPUT_STRIDES = (8, 4, 2)
CLASSIFIERS = ("dot", "cosine")
POS_ENCODINGS = ("sine", "conv", "none")
HFG_INPUTS = ("c5", "c4c5")
LEVELS = ("C2", "C3", "C4", "C5")

Bool = Annotated[bool, Strict()]   # true/false only: "yes" or 1 for a switch is a typo

# The variants of the stop-gradient experiment: name -> (label, HFGDConfig switches).
# "partial" stops the gradient only at C5, F_high and the class tokens, so that C2-C4
# still learn from the upsampler's loss (the pilots' practitioner variant).
VARIANTS = {
    "semantic_fpn": ("SemanticFPN (no HFG branch)", {"arch": "semantic_fpn"}),
    "hfgd_nosg": ("HFGD, stop-gradient off", {"arch": "hfgd", "stop_gradient": False}),
    "hfgd_sg": ("HFGD, stop-gradient on", {"arch": "hfgd", "stop_gradient": True}),
    "hfgd_partial_sg": ("HFGD, partial stop-gradient (C5, F_high, tokens)",
                        {"arch": "hfgd", "stop_gradient": True, "sg_levels": ["C5"]}),
}


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


# ---- typed checks shared by every config dataclass ---------------------------------

@functools.lru_cache(maxsize=None)
def _adapter(tp) -> TypeAdapter:
    return TypeAdapter(tp)


_EXPECTED = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             dict: "a mapping", list: "a list"}


def _expected(tp) -> str:
    """Plain words for a type annotation (``Optional[list[int]]`` -> 'a list of
    integers or null')."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return _expected(args[0])
    if origin is typing.Union:
        inner = [a for a in args if a is not type(None)]
        text = " or ".join(_expected(a) for a in inner)
        return text + (" or null" if len(inner) < len(args) else "")
    if origin in (list, tuple) and args:
        item = _expected(args[0])
        item = {"an integer": "integers", "a number": "numbers", "a string": "strings"}.get(
            item, item)
        return f"a list of {item}"
    return _EXPECTED.get(origin or tp, getattr(tp, "__name__", str(tp)))


def check_types(obj, where: str) -> None:
    """Coerce every field of dataclass ``obj`` to its declared type, in place.

    Raises :class:`ConfigError` ``"<where>.<field>=<value>: expected <type>"`` on the
    first field that cannot be read as its type.
    """
    hints = typing.get_type_hints(type(obj), include_extras=True)
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        tp = hints[f.name]
        try:
            new = _adapter(tp).validate_python(value)
        except ValidationError:
            raise ConfigError(f"{where}.{f.name}={value!r}: expected {_expected(tp)}") \
                from None
        if isinstance(new, tuple):
            new = list(new)
        setattr(obj, f.name, new)


def fields_from_dict(klass, data, where: str) -> dict:
    """``data`` checked as the keyword arguments of dataclass ``klass``: a mapping whose
    keys are fields (else a :class:`ConfigError` naming the unknown keys)."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}={data!r}: expected a mapping of {klass.__name__} fields")
    known = {f.name for f in dataclasses.fields(klass)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; known: {sorted(known)}")
    return dict(data)


def backbone_normalization(backbone: str) -> tuple[list, list]:
    """``(mean, std)`` the backbone expects after pixels are scaled to [0, 1]: timm's
    ``pretrained_cfg`` of that model (ImageNet's constants when timm has none)."""
    cfg = get_pretrained_cfg(backbone)
    mean = getattr(cfg, "mean", None) or IMAGENET_MEAN
    std = getattr(cfg, "std", None) or IMAGENET_STD
    return [float(v) for v in mean], [float(v) for v in std]


@dataclass
class HFGDConfig:
    """Configuration of an HFGD model (or its SemanticFPN baseline).

    Args:
        backbone: any timm model name (``timm.list_models()``).
        num_classes: number of classes K.
        arch: ``"hfgd"`` or ``"semantic_fpn"`` (own classifier, no HFG branch, no sg).
        pretrained: pretrained weights by name: a packaged offline copy where one is
            installed (``hfgd-lab backbones``), else timm's hub (needs the network).
        backbone_weights: path of a local safetensors / torch weights file.
        backbone_kwargs: extra keyword arguments for ``timm.create_model``.
        image_mean / image_std: per-channel normalisation of [0, 1] pixels, RGB
            (``x = (pixel / 255 - mean) / std``); ``None``: timm's ``pretrained_cfg``
            of the backbone (0.5 / 0.5 for the ``tf_`` EfficientNets, ImageNet's
            constants for most others). Stored in every checkpoint card.
        norm_eval: keep the backbone's BatchNorm statistics frozen while training
            (mmsegmentation's ``norm_eval``; their affine weights still train), as
            fine-tuning a pretrained BN backbone at small batch needs.
        embed_dim: D, the width of F_high, F_up and the class tokens.
        hfg_input: ``"c5"`` or ``"c4c5"`` (C4 pooled to stride 32 and concatenated).
        cae_depth / cae_heads / cae_mlp_ratio / cae_dropout: the CAE transformer.
        pos_encoding: CAE positional encoding, resolution-agnostic:
            ``"sine"`` (2D sinusoids), ``"conv"`` (depthwise conv) or ``"none"``.
        output_stride: 8, 4 or 2 (2 adds a light stride-2 stem on the image).
        decoder_channels: width of the SemanticFPN head blocks (smp uses 128).
        stem_channels: width of the OS2 stem.
        refine_channels: width of the OS2 half-resolution refinement.
        classifier: ``"dot"`` or ``"cosine"`` (cosine has a learned temperature).
        dropout: dropout on F_up before classification.
        stop_gradient: master switch for all stop-gradient points.
        sg_backbone / sg_high / sg_tokens: each stop-gradient point on its own;
            ``None`` follows ``stop_gradient``.
        sg_levels: which backbone levels enter the upsampler detached when
            ``sg_backbone`` is on (default all of C2..C5; ``["C5"]`` is the partial
            variant, see :data:`VARIANTS`).
        loss_high_weight / loss_up_weight: loss = w_high * loss_high + λ * loss_up.
        class_weights: optional per-class cross-entropy weights (length K).
        ignore_index: label ignored by the loss and the metrics.
        pad_multiple: inputs are padded to a multiple of this inside the model.

    Raises:
        ConfigError: a field has the wrong type or an invalid value (one line naming it).
    """

    backbone: str = "convnext_atto"
    num_classes: int = 150
    arch: str = "hfgd"
    pretrained: Bool = False
    backbone_weights: Optional[str] = None
    backbone_kwargs: dict = field(default_factory=dict)
    image_mean: Optional[list[float]] = None
    image_std: Optional[list[float]] = None
    norm_eval: Bool = False
    embed_dim: int = 256
    hfg_input: str = "c5"
    cae_depth: int = 2
    cae_heads: int = 8
    cae_mlp_ratio: float = 4.0
    cae_dropout: float = 0.0
    pos_encoding: str = "sine"
    output_stride: int = 4
    decoder_channels: int = 128
    stem_channels: int = 32
    refine_channels: int = 64
    classifier: str = "dot"
    dropout: float = 0.1
    stop_gradient: Bool = True
    sg_backbone: Optional[Bool] = None
    sg_high: Optional[Bool] = None
    sg_tokens: Optional[Bool] = None
    sg_levels: list[str] = field(default_factory=lambda: list(LEVELS))
    loss_high_weight: float = 1.0
    loss_up_weight: float = 1.0
    class_weights: Optional[list[float]] = None
    ignore_index: int = 255
    pad_multiple: int = 32

    def __post_init__(self):
        check_types(self, "HFGDConfig")
        self.validate()

    # ---- input normalisation ------------------------------------------------------
    @property
    def normalization(self) -> tuple[list, list]:
        """``(mean, std)`` applied to [0, 1] pixels: ``image_mean`` / ``image_std`` when
        set, else the backbone's own (timm's ``pretrained_cfg``)."""
        mean, std = backbone_normalization(self.backbone)
        return list(self.image_mean or mean), list(self.image_std or std)

    def resolved(self) -> "HFGDConfig":
        """A copy with ``image_mean`` / ``image_std`` written out (what checkpoint cards
        store, so that a model never depends on timm's defaults of another version)."""
        mean, std = self.normalization
        return self.replace(image_mean=mean, image_std=std)

    # ---- the resolved stop-gradient switches -------------------------------------
    def _sg(self, value: Optional[bool]) -> bool:
        if self.arch == "semantic_fpn":
            return False
        return self.stop_gradient if value is None else bool(value)

    @property
    def sg_backbone_on(self) -> bool:
        """Backbone features (the levels in ``sg_levels``) enter the upsampler detached."""
        return self._sg(self.sg_backbone)

    @property
    def sg_high_on(self) -> bool:
        """F_high enters the upsampler detached."""
        return self._sg(self.sg_high)

    @property
    def sg_tokens_on(self) -> bool:
        """The upsampler's classifier uses detached class tokens."""
        return self._sg(self.sg_tokens)

    @property
    def variant(self) -> Optional[str]:
        """The :data:`VARIANTS` name these switches make, or None for another mix."""
        if self.arch == "semantic_fpn":
            return "semantic_fpn"
        if self.sg_high_on != self.sg_tokens_on:
            return None
        if not self.sg_high_on and not self.sg_backbone_on:
            return "hfgd_nosg"
        if self.sg_high_on and self.sg_backbone_on:
            levels = sorted(self.sg_levels)
            return {tuple(LEVELS): "hfgd_sg", ("C5",): "hfgd_partial_sg"}.get(tuple(levels))
        return None

    # ---- validation ---------------------------------------------------------------
    def validate(self) -> None:
        """Check values (types are checked at construction). Raises :class:`ConfigError`."""
        def fail(name, msg):
            raise ConfigError(f"HFGDConfig.{name}={getattr(self, name)!r}: {msg}")

        if not self.backbone:
            fail("backbone", "must be a timm model name")
        if not timm.is_model(self.backbone):
            close = timm.list_models(f"*{self.backbone.split('_')[0]}*")[:8]
            hint = f"; similar names: {', '.join(close)}" if close else ""
            fail("backbone", f"unknown timm model (see timm.list_models()){hint}")
        if self.arch not in ARCHS:
            fail("arch", f"must be one of {ARCHS}")
        if self.num_classes < 1:
            fail("num_classes", "must be a positive integer")
        if self.output_stride not in OUTPUT_STRIDES:
            fail("output_stride", f"must be one of {OUTPUT_STRIDES}")
        if self.cae_depth < 0:
            fail("cae_depth", "must be an integer >= 0")
        if self.cae_heads < 1:
            fail("cae_heads", "must be a positive integer")
        if self.embed_dim < 1:
            fail("embed_dim", "must be a positive integer")
        if self.embed_dim % self.cae_heads:
            fail("embed_dim", f"must be divisible by cae_heads={self.cae_heads}")
        if self.pos_encoding == "sine" and self.embed_dim % 4:
            fail("embed_dim", "must be divisible by 4 for pos_encoding='sine'")
        if self.cae_mlp_ratio <= 0:
            fail("cae_mlp_ratio", "must be > 0")
        for name in ("cae_dropout", "dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                fail(name, "must be in [0, 1)")
        if self.pos_encoding not in POS_ENCODINGS:
            fail("pos_encoding", f"must be one of {POS_ENCODINGS}")
        if self.hfg_input not in HFG_INPUTS:
            fail("hfg_input", f"must be one of {HFG_INPUTS}")
        if self.classifier not in CLASSIFIERS:
            fail("classifier", f"must be one of {CLASSIFIERS}")
        for name in ("decoder_channels", "stem_channels", "refine_channels", "pad_multiple"):
            if getattr(self, name) < 1:
                fail(name, "must be a positive integer")
        if self.pad_multiple % 32:
            fail("pad_multiple", "must be a multiple of 32 (the deepest stride)")
        for name in ("loss_high_weight", "loss_up_weight"):
            if getattr(self, name) < 0:
                fail(name, "must be >= 0")
        if self.class_weights is not None:
            if len(self.class_weights) != self.num_classes:
                fail("class_weights", f"must have num_classes={self.num_classes} entries")
            if any(w < 0 for w in self.class_weights):
                fail("class_weights", "must be >= 0")
        if not 0 <= self.ignore_index <= 65535:
            fail("ignore_index", "must be in [0, 65535]")
        if self.pretrained and self.backbone_weights:
            fail("backbone_weights", "give either pretrained=True or backbone_weights, not both")
        for name in ("image_mean", "image_std"):
            v = getattr(self, name)
            if v is not None and len(v) != 3:
                fail(name, "must be 3 numbers (R, G, B) for pixels scaled to [0, 1]")
        if self.image_std is not None and min(self.image_std) <= 0:
            fail("image_std", "must be > 0")
        bad = [lv for lv in self.sg_levels if lv not in LEVELS]
        if bad or not self.sg_levels:
            fail("sg_levels", f"must be a non-empty subset of {list(LEVELS)}")

    # ---- (de)serialisation --------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "HFGDConfig":
        return cls(**fields_from_dict(cls, data, "HFGDConfig"))

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_yaml(cls, path_or_text: str | Path) -> "HFGDConfig":
        """Load from a YAML file path, or YAML text; a ``model:`` section is accepted."""
        if isinstance(path_or_text, Path) or ("\n" not in str(path_or_text)
                                              and ":" not in str(path_or_text)):
            path = Path(path_or_text)
            if not path.is_file():
                raise ConfigError(f"HFGDConfig YAML file not found: {path}")
            text = path.read_text()
        else:
            text = str(path_or_text)
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"HFGDConfig: not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"HFGDConfig YAML must be a mapping, got {type(data).__name__}")
        if "model" in data and isinstance(data["model"], dict):
            data = data["model"]
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> "HFGDConfig":
        return dataclasses.replace(self, **changes)
