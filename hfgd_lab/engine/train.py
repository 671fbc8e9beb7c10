"""The training loop, readable top to bottom.

AdamW with a lower backbone learning rate, linear warmup then poly decay (computed
from the iteration, so resuming needs no scheduler state), gradient accumulation
and clipping, AMP on CUDA, periodic validation, ``last``/``best`` checkpoints and a
JSONL log. Under ``torchrun`` it runs DDP; rank 0 logs and saves.

Each validation saves one resumable checkpoint set, atomic as a whole
(:func:`.checkpoint.save_training_set`: ``WORK/checkpoints/iter<N>-<id>/`` plus the
``last.json`` / ``best.json`` pointers), so a kill at any instant leaves a run that
``--resume`` continues bit for bit; resuming truncates ``log.jsonl`` to the resumed
iteration.
"""
from __future__ import annotations

import json
import math
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .. import __version__
from ..config import ConfigError
from ..data import build_dataset
from ..data.transforms import build_eval_transform, build_train_transform
from ..models import PACKAGED, build_model
from .checkpoint import (fault_point, find_resume, load_checkpoint,
                         load_train_state, new_set_name, repair_run_folder, restore_optimizer,
                         save_training_set, set_rng_state, truncate_log)
from .distributed import DistInfo, barrier, cleanup, init_distributed
from .evaluate import evaluate
from .experiment import ExperimentConfig
from .inference import InferenceOptions
from .sampling import InfiniteSampler, SeededDataset


def lr_factor(it: int, cfg) -> float:
    """Multiplier of the base lr at iteration ``it``: linear warmup, then poly decay."""
    if it < cfg.warmup_iters:
        return cfg.warmup_ratio + (1 - cfg.warmup_ratio) * it / cfg.warmup_iters
    progress = min(1.0, (it - cfg.warmup_iters) / max(1, cfg.iters - cfg.warmup_iters))
    floor = cfg.min_lr / cfg.lr
    return floor + (1 - floor) * (1 - progress) ** cfg.poly_power


def build_optimizer(model, cfg) -> torch.optim.AdamW:
    """AdamW; the backbone at ``lr * backbone_lr_mult``; no weight decay on norms/biases.

    With ``cfg.layer_decay = d`` each backbone stage gets a further ``d ** (L - level)``
    (level 0 the stem, L the last stage; BEiT's layer-wise decay applied per stage), so
    early, generic layers move least. Groups are named (``head``, ``backbone``,
    ``backbone_L2``, ... with ``_no_decay`` variants), which the log shows."""
    groups = []

    def add(name, params, mult):
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        for ps, wd in ((decay, cfg.weight_decay), (no_decay, 0.0)):
            if ps:
                groups.append({"params": ps, "lr": cfg.lr * mult, "lr_mult": mult,
                               "weight_decay": wd, "name": f"{name}{'' if wd else '_no_decay'}"})

    split = model.param_groups()
    if cfg.layer_decay is None:
        add("backbone", split["backbone"], cfg.backbone_lr_mult)
    else:
        trainable = {id(p) for p in split["backbone"]}
        by_level = {}
        for _, p, level in model.backbone.param_levels():
            if id(p) in trainable:
                by_level.setdefault(level, []).append(p)
        top = max(by_level, default=0)
        for level, params in sorted(by_level.items()):
            add(f"backbone_L{level}", params,
                cfg.backbone_lr_mult * cfg.layer_decay ** (top - level))
    add("head", split["head"], 1.0)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


def group_lrs(optimizer) -> dict:
    """``{group name: current lr}`` (one entry per name; no-decay twins share it)."""
    out = {}
    for g in optimizer.param_groups:
        out.setdefault(g["name"].removesuffix("_no_decay"), g["lr"])
    return out


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def resolve_device(kind: str, info: DistInfo) -> torch.device:
    if kind == "cpu" or (kind == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if kind in ("cuda", "auto"):
        return torch.device("cuda", info.local_rank)
    return torch.device(kind)


def build_datasets(cfg: ExperimentConfig):
    """(train, val) datasets of ``cfg.data``, normalised with the model's backbone
    normalisation (``cfg.model.normalization``)."""
    d = cfg.data
    mean, std = cfg.model.normalization
    train_tf = build_train_transform(tuple(d.crop_size), scale=tuple(d.scale),
                                     base_size=tuple(d.base_size) if d.base_size else None,
                                     cat_max_ratio=d.cat_max_ratio, flip=d.flip,
                                     photometric=d.photometric, mean=mean, std=std)
    train_ds = build_dataset(d.name, d.root, d.train_split, transform=train_tf, **d.kwargs)
    val_ds = build_dataset(d.name, d.root, d.val_split,
                           transform=build_eval_transform(mean, std),
                           **{**d.kwargs, **d.val_kwargs})
    return train_ds, val_ds


def build_train_loader(train_ds, cfg: ExperimentConfig, info: DistInfo,
                       device: torch.device, start: int = 0) -> DataLoader:
    """The endless training batches: ``data.batch_size`` samples from this rank's shard of
    the seeded stream (:mod:`.sampling`), starting at sample ``start``, loaded by
    ``data.num_workers`` worker processes (0: in this process; each worker runs one torch
    thread). ``benchmarks/train_speed.py --loader`` times it against the training step."""
    d, tc = cfg.data, cfg.train
    sampler = InfiniteSampler(len(train_ds), seed=tc.seed, rank=info.rank,
                              world_size=info.world_size, start=start)
    return DataLoader(SeededDataset(train_ds), batch_size=d.batch_size, sampler=sampler,
                      num_workers=d.num_workers, pin_memory=device.type == "cuda",
                      persistent_workers=d.num_workers > 0, drop_last=True,
                      generator=torch.Generator().manual_seed(tc.seed))


def train(cfg: ExperimentConfig, resume: str | bool | None = None, progress: bool = True,
          on_step=None, config_path: str | None = None, verbose: bool | None = None) -> dict:
    """Train ``cfg``; returns ``{"best": metrics, "last": metrics, "work_dir": ...}``.

    ``progress`` shows bars; ``verbose`` (default: as ``progress``) prints one line per
    validation (mIoU, mAcc, aAcc, best so far). ``on_step(it, model, losses)`` is the
    one hook, for analyses that watch training.
    """
    verbose = progress if verbose is None else verbose
    tc = cfg.train
    info = init_distributed(tc.device)
    device = resolve_device(tc.device, info)
    work_dir = Path(tc.work_dir)
    seed_everything(tc.seed)  # same on every rank: identical initial weights
    if tc.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)

    train_ds, val_ds = build_datasets(cfg)
    if len(train_ds.CLASSES) != cfg.model.num_classes:
        raise ConfigError(f"model.num_classes={cfg.model.num_classes} but dataset "
                          f"{cfg.data.name!r} has {len(train_ds.CLASSES)} classes")
    model = build_model(cfg.model).to(device)
    optimizer = build_optimizer(model, tc)
    use_amp = tc.amp == "on" or (tc.amp == "auto" and device.type == "cuda")
    amp_dtype = torch.bfloat16 if device.type != "cuda" or torch.cuda.is_bf16_supported() \
        else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    start_it, best, best_set, history, window = 0, None, None, [], []
    if resume:
        point = find_resume(resume, work_dir)
        _, tensors, state = load_train_state(point.ref)
        loaded, _ = load_checkpoint(point.ref)
        model.load_state_dict(loaded.state_dict())
        restore_optimizer(optimizer, tensors, state)
        if state.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(state["scaler"])
        set_rng_state(tensors, state["rng"])
        start_it, best = state["iteration"], state.get("best")
        best_set = state.get("best_checkpoint")
        window = list(state.get("log_window") or [])  # the log's running means go on
        history = list(state.get("history") or [])
        barrier(info)  # every rank has read the set before rank 0 tidies the run folder
        if info.is_main:
            if point.note:
                print(f"note: {point.note}", file=sys.stderr)
            print(f"resumed from {point.ref.folder or point.ref.card} at iteration {start_it}")
            repair_run_folder(work_dir, point.ref, state)
            dropped = truncate_log(work_dir / "log.jsonl", start_it)
            if dropped:
                print(f"log.jsonl: {dropped} line(s) after iteration {start_it} removed "
                      "(they are run again)")
    elif info.is_main and (work_dir / "log.jsonl").is_file():
        truncate_log(work_dir / "log.jsonl", 0)  # a fresh start: the log starts over

    net = model
    if info.enabled:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    per_step = cfg.data.batch_size * tc.accum_steps
    batches = iter(build_train_loader(train_ds, cfg, info, device, start=start_it * per_step))
    eval_opts = InferenceOptions.from_eval_config(cfg.eval)

    if info.is_main:
        work_dir.mkdir(parents=True, exist_ok=True)
        cfg.to_yaml(work_dir / "config.yaml")
    log = _Logger(work_dir, info.is_main, purge_step=start_it + 1 if resume else None)
    bar = tqdm(range(start_it, tc.iters), initial=start_it, total=tc.iters, desc="train",
               disable=not (progress and info.is_main), dynamic_ncols=True)
    model.train()
    t0, seen = time.perf_counter(), 0
    last_metrics = None
    for it in bar:
        fault_point(f"iteration {it + 1}")
        for group in optimizer.param_groups:
            group["lr"] = tc.lr * group["lr_mult"] * lr_factor(it, tc)
        for micro in range(tc.accum_steps):
            batch = next(batches)
            images = batch["image"].to(device, non_blocking=True)
            masks = batch["mask"].to(device, non_blocking=True)
            sync = nullcontext() if (micro == tc.accum_steps - 1 or not info.enabled) \
                else net.no_sync()
            with sync:
                with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    out = net(images)
                    losses = model.loss(out, masks)
                scaler.scale(losses["loss"] / tc.accum_steps).backward()
            seen += images.shape[0] * info.world_size
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(
            model.parameters(), tc.grad_clip if tc.grad_clip else float("inf"))
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(losses["loss"]):
            raise FloatingPointError(f"loss is {losses['loss'].item()} at iteration {it + 1}; "
                                     "lower train.lr or enable train.grad_clip")
        window.append({k: v.item() for k, v in losses.items()} | {"grad_norm": grad_norm.item()})
        if on_step is not None:
            on_step(it, model, losses)

        step = it + 1
        if step % tc.log_interval == 0 or step == tc.iters:
            dt = time.perf_counter() - t0
            rec = {"iter": step, "lr": group_lrs(optimizer),
                   **{k: float(np.mean([w[k] for w in window])) for k in window[0]},
                   "img_per_s": seen / dt if dt > 0 else 0.0}
            log.write(rec)
            bar.set_postfix(loss=f"{rec['loss']:.3f}", img_s=f"{rec['img_per_s']:.1f}")
            window, t0, seen = [], time.perf_counter(), 0
        if step % tc.val_interval == 0 or step == tc.iters:
            last_metrics = evaluate(model, val_ds, eval_opts, device, info,
                                    cfg.eval.max_images, progress, desc=f"val@{step}")
            summary = {k: last_metrics[k] for k in ("mIoU", "mAcc", "aAcc")}
            log.write({"iter": step, "val": summary})
            is_best = best is None or summary["mIoU"] > best["mIoU"]
            set_name = new_set_name(step)
            if is_best:
                best, best_set = {"iteration": step, **summary}, f"checkpoints/{set_name}"
            if info.is_main and verbose:
                tqdm.write(f"val@{step}: mIoU {summary['mIoU']:.2f}  mAcc {summary['mAcc']:.2f}"
                           f"  aAcc {summary['aAcc']:.2f}  (best mIoU {best['mIoU']:.2f} at "
                           f"iteration {best['iteration']})")
            history.append({"iter": step, **summary})
            if info.is_main:
                # one set per validation; best.json points at it too when it is the best
                save_training_set(
                    work_dir, model, iteration=step, set_name=set_name,
                    pointers=("last", "best") if is_best else ("last",),
                    classes=train_ds.CLASSES, palette=train_ds.PALETTE,
                    metrics={**summary, "IoU": last_metrics["IoU"], "Acc": last_metrics["Acc"],
                             "iteration": step, "val_images": _count(val_ds, cfg.eval.max_images)},
                    extra=_provenance(cfg, model, train_ds, work_dir, step),
                    optimizer=optimizer, scaler=scaler,
                    train_state={"iteration": step, "best": best, "best_checkpoint": best_set,
                                 "log_window": window, "history": history})
            barrier(info)
    bar.close()
    log.close()
    cleanup(info)
    return {"best": best, "last": last_metrics, "history": history, "work_dir": str(work_dir)}


def _count(dataset, max_images) -> int:
    return min(len(dataset), max_images) if max_images else len(dataset)


def _provenance(cfg: ExperimentConfig, model, train_ds, work_dir: Path, step: int) -> dict:
    """What a checkpoint card says about how the model was trained (model cards and
    ``LoadedModel.describe`` read it)."""
    d = cfg.data
    return {"experiment": cfg.to_dict(), "dataset": d.name,
            "trained_on": f"dataset {d.name!r}, split {d.train_split!r} "
                          f"({len(train_ds)} images), {step} iterations of batch "
                          f"{d.batch_size * cfg.train.accum_steps}",
            "training": {"iterations": step, "planned_iterations": cfg.train.iters,
                         "train_images": len(train_ds), "val_split": d.val_split,
                         "command": f"hfgd-lab train {work_dir / 'config.yaml'}",
                         "hfgd_lab_version": __version__},
            "backbone_pretraining": backbone_pretraining(model)}


def backbone_pretraining(model) -> dict:
    """Where the backbone's starting weights came from, for the checkpoint card."""
    src = getattr(model.backbone, "weights_source", "random")
    out = {"weights": src, "backbone": model.cfg.backbone}
    if src.startswith("packaged:"):
        entry = PACKAGED[model.cfg.backbone]
        out.update(source=entry.source, license=entry.license, package=entry.pip)
    elif src == "timm hub":
        out.update(source=f"timm's pretrained weights for {model.cfg.backbone}")
    elif src.startswith("file:"):
        out.update(source=f"a local weights file ({src[5:]})")
    else:
        out.update(source="none (random initialisation)")
    return out


class _Logger:
    """JSONL log (and TensorBoard when installed), rank 0 only."""

    def __init__(self, work_dir: Path, active: bool, purge_step: int | None = None):
        self.active = active
        self.tb = None
        if not active:
            return
        self.file = open(work_dir / "log.jsonl", "a")
        try:  # tensorboard is an optional dependency: imported only where it is used
            from torch.utils.tensorboard import SummaryWriter
            # on resume, events from the resumed iteration on are dropped (run again)
            self.tb = SummaryWriter(str(work_dir / "tb"), purge_step=purge_step)
        except Exception:
            self.tb = None

    def write(self, rec: dict):
        if not self.active:
            return
        line = json.dumps({"time": time.time(), **rec}) + "\n"
        half = len(line) // 2  # two writes: the kill harness can tear a line (resume mends)
        self.file.write(line[:half])
        self.file.flush()
        fault_point("log line (half written)")
        self.file.write(line[half:])
        self.file.flush()
        if self.tb is not None:
            flat = rec.get("val", rec)
            prefix = "val/" if "val" in rec else "train/"
            for k, v in flat.items():
                for name, x in (v.items() if isinstance(v, dict) else [("", v)]):
                    tag = prefix + k + (f"/{name}" if name else "")
                    if k != "iter" and isinstance(x, (int, float)) and math.isfinite(x):
                        self.tb.add_scalar(tag, x, rec["iter"])

    def close(self):
        if self.active:
            self.file.close()
            if self.tb is not None:
                self.tb.close()

