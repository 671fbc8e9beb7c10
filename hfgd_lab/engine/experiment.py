"""ExperimentConfig: one YAML file per experiment (model, data, train, eval sections).

No inheritance, no registry: a config file says everything a run does, and
``--set section.key=value`` changes one field from the command line. Every field is
checked and coerced from its declared type (:func:`hfgd_lab.config.check_types`), then
its value; a bad one is a one-line :class:`ConfigError` naming ``section.key``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from ..config import Bool, ConfigError, HFGDConfig, check_types, fields_from_dict


@dataclass
class DataConfig:
    """Which dataset, and how training samples are augmented.

    ``kwargs`` go to ``build_dataset`` for both splits; ``val_kwargs`` override them
    for validation (e.g. a different seed or size for the built-in scenes).
    """
    name: str = "scenes"
    root: Optional[str] = None
    train_split: str = "train"
    val_split: str = "val"
    kwargs: dict = field(default_factory=dict)
    val_kwargs: dict = field(default_factory=dict)
    crop_size: list[int] = field(default_factory=lambda: [512, 512])
    scale: list[float] = field(default_factory=lambda: [0.5, 2.0])
    base_size: Optional[list[int]] = None
    cat_max_ratio: float = 0.75
    flip: Bool = True
    photometric: Bool = True
    batch_size: int = 8
    num_workers: int = 0

    def __post_init__(self):
        check_types(self, "data")
        self.validate()

    def validate(self):
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size={self.batch_size}: must be >= 1")
        if len(self.crop_size) != 2 or min(self.crop_size) < 1:
            raise ConfigError(f"data.crop_size={self.crop_size}: must be [H, W] > 0")
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise ConfigError(f"data.scale={self.scale}: must be [min, max] with 0 < min <= max")
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers={self.num_workers}: must be >= 0")


@dataclass
class TrainConfig:
    """Optimisation: AdamW, linear warmup then poly decay, lower backbone lr."""
    iters: int = 1000
    lr: float = 1e-3
    backbone_lr_mult: float = 0.1
    layer_decay: Optional[float] = None
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_iters: int = 100
    warmup_ratio: float = 1e-3
    poly_power: float = 1.0
    min_lr: float = 0.0
    grad_clip: Optional[float] = 1.0
    accum_steps: int = 1
    amp: str = "auto"          # auto (on when CUDA), on, off
    seed: int = 0
    deterministic: Bool = False
    val_interval: int = 200
    log_interval: int = 10
    work_dir: str = "runs/default"
    device: str = "auto"       # auto, cpu, cuda

    def __post_init__(self):
        check_types(self, "train")
        self.validate()

    def validate(self):
        for name in ("iters", "accum_steps", "val_interval", "log_interval"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name}={getattr(self, name)}: must be >= 1")
        if self.lr <= 0:
            raise ConfigError(f"train.lr={self.lr}: must be > 0")
        if self.warmup_iters < 0:
            raise ConfigError(f"train.warmup_iters={self.warmup_iters}: must be >= 0")
        if self.amp not in ("auto", "on", "off"):
            raise ConfigError(f"train.amp={self.amp!r}: must be auto, on or off")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"train.grad_clip={self.grad_clip}: must be > 0 or null")
        if self.backbone_lr_mult < 0:
            raise ConfigError(f"train.backbone_lr_mult={self.backbone_lr_mult}: must be >= 0")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise ConfigError(f"train.layer_decay={self.layer_decay}: must be in (0, 1] or "
                              "null")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"train.betas={self.betas}: must be two numbers in [0, 1)")


@dataclass
class EvalConfig:
    """Inference for validation and ``hfgd-lab eval``."""
    mode: str = "whole"        # whole or slide
    crop_size: Optional[list[int]] = None
    stride: Optional[list[int]] = None
    scales: list[float] = field(default_factory=lambda: [1.0])
    flip: Bool = False
    batch_size: int = 1
    max_images: Optional[int] = None

    def __post_init__(self):
        check_types(self, "eval")
        self.validate()

    def validate(self):
        if self.mode not in ("whole", "slide"):
            raise ConfigError(f"eval.mode={self.mode!r}: must be whole or slide")
        if self.mode == "slide" and not self.crop_size:
            raise ConfigError("eval.crop_size: sliding-window inference needs [H, W]")
        if not self.scales or min(self.scales) <= 0:
            raise ConfigError(f"eval.scales={self.scales}: must be positive")
        for name in ("crop_size", "stride"):
            v = getattr(self, name)
            if v is not None and (len(v) != 2 or min(v) < 1):
                raise ConfigError(f"eval.{name}={v}: must be [H, W] > 0")
        if self.max_images is not None and self.max_images < 1:
            raise ConfigError(f"eval.max_images={self.max_images}: must be >= 1 or null")


SECTIONS = {"model": HFGDConfig, "data": DataConfig, "train": TrainConfig, "eval": EvalConfig}


@dataclass
class ExperimentConfig:
    """A whole run: the model, its data, the optimisation and the evaluation.

    Sections given as mappings are built into their dataclasses (unknown keys fail);
    anything else fails with a :class:`ConfigError` naming the section."""
    model: HFGDConfig = field(default_factory=HFGDConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        for name, klass in SECTIONS.items():
            value = getattr(self, name)
            if not isinstance(value, klass):
                setattr(self, name, klass(**fields_from_dict(klass, value, name)))
        self.validate()

    def validate(self):
        for part in (self.data, self.train, self.eval):
            part.validate()
        self.model.validate()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ExperimentConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"experiment config must be a mapping of sections "
                              f"{sorted(SECTIONS)}, got {type(data).__name__}")
        unknown = sorted(set(data) - set(SECTIONS))
        if unknown:
            raise ConfigError(f"unknown section(s) {unknown}; known: {sorted(SECTIONS)}")
        return cls(**{name: klass(**fields_from_dict(klass, data.get(name), name))
                      for name, klass in SECTIONS.items()})

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ExperimentConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: must be a mapping of sections")
        return cls.from_dict(data)

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text
