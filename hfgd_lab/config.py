"""HFGDConfig: the whole model described as data.

A plain dataclass so that a model is rebuilt from a YAML file, a checkpoint's JSON
card or a few keyword arguments, and so that every ablation of the paper is a field.
Invalid values fail here, at construction, with a message naming the field.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

ARCHS = ("hfgd", "semantic_fpn")
OUTPUT_STRIDES = (8, 4, 2)
CLASSIFIERS = ("dot", "cosine")
POS_ENCODINGS = ("sine", "conv", "none")
HFG_INPUTS = ("c5", "c4c5")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


@dataclass
class HFGDConfig:
    """Configuration of an HFGD model (or its SemanticFPN baseline).

    Args:
        backbone: any timm model name (``timm.list_models()``).
        num_classes: number of classes K.
        arch: ``"hfgd"`` or ``"semantic_fpn"`` (own classifier, no HFG branch, no sg).
        pretrained: load timm's weights by name (needs a reachable hub).
        backbone_weights: path of a local safetensors / torch weights file.
        backbone_kwargs: extra keyword arguments for ``timm.create_model``.
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
        loss_high_weight / loss_up_weight: loss = w_high * loss_high + λ * loss_up.
        class_weights: optional per-class cross-entropy weights (length K).
        ignore_index: label ignored by the loss and the metrics.
        pad_multiple: inputs are padded to a multiple of this inside the model.
    """

    backbone: str = "convnext_atto"
    num_classes: int = 150
    arch: str = "hfgd"
    pretrained: bool = False
    backbone_weights: Optional[str] = None
    backbone_kwargs: dict = field(default_factory=dict)
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
    stop_gradient: bool = True
    sg_backbone: Optional[bool] = None
    sg_high: Optional[bool] = None
    sg_tokens: Optional[bool] = None
    loss_high_weight: float = 1.0
    loss_up_weight: float = 1.0
    class_weights: Optional[list] = None
    ignore_index: int = 255
    pad_multiple: int = 32

    def __post_init__(self):
        self.validate()

    # ---- the resolved stop-gradient switches -------------------------------------
    def _sg(self, value: Optional[bool]) -> bool:
        if self.arch == "semantic_fpn":
            return False
        return self.stop_gradient if value is None else bool(value)

    @property
    def sg_backbone_on(self) -> bool:
        """Backbone features enter the upsampler detached."""
        return self._sg(self.sg_backbone)

    @property
    def sg_high_on(self) -> bool:
        """F_high enters the upsampler detached."""
        return self._sg(self.sg_high)

    @property
    def sg_tokens_on(self) -> bool:
        """The upsampler's classifier uses detached class tokens."""
        return self._sg(self.sg_tokens)

    # ---- validation ---------------------------------------------------------------
    def validate(self) -> None:
        def fail(name, msg):
            raise ConfigError(f"HFGDConfig.{name}={getattr(self, name)!r}: {msg}")

        if not isinstance(self.backbone, str) or not self.backbone:
            fail("backbone", "must be a timm model name")
        import timm

        if not timm.is_model(self.backbone):
            close = timm.list_models(f"*{self.backbone.split('_')[0]}*")[:8]
            hint = f"; similar names: {', '.join(close)}" if close else ""
            fail("backbone", f"unknown timm model (see timm.list_models()){hint}")
        if self.arch not in ARCHS:
            fail("arch", f"must be one of {ARCHS}")
        if not isinstance(self.num_classes, int) or isinstance(self.num_classes, bool) \
                or self.num_classes < 1:
            fail("num_classes", "must be a positive integer")
        if self.output_stride not in OUTPUT_STRIDES:
            fail("output_stride", f"must be one of {OUTPUT_STRIDES}")
        if not isinstance(self.cae_depth, int) or self.cae_depth < 0:
            fail("cae_depth", "must be an integer >= 0")
        if not isinstance(self.cae_heads, int) or self.cae_heads < 1:
            fail("cae_heads", "must be a positive integer")
        if not isinstance(self.embed_dim, int) or self.embed_dim < 1:
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
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
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
        if not isinstance(self.backbone_kwargs, dict):
            fail("backbone_kwargs", "must be a mapping")
        for name in ("sg_backbone", "sg_high", "sg_tokens"):
            if getattr(self, name) not in (None, True, False):
                fail(name, "must be true, false or null")

    # ---- (de)serialisation --------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "HFGDConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"HFGDConfig: unknown field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

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
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"HFGDConfig YAML must be a mapping, got {type(data).__name__}")
        if "model" in data and isinstance(data["model"], dict):
            data = data["model"]
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> "HFGDConfig":
        return dataclasses.replace(self, **changes)
