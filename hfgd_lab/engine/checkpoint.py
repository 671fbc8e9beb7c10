"""Checkpoints: safetensors + a JSON card, read without pickle, written crash-safe.

Three shapes, read by the same functions (:func:`resolve`, :func:`load_checkpoint`):

- **Model folder** (Hugging Face Hub style): ``FOLDER/model.safetensors`` (weights),
  ``FOLDER/config.json`` (the card: model config, classes, palette, normalisation,
  metrics, provenance), optionally ``train.safetensors`` (optimizer and RNG tensors of
  a resumable set; the JSON half of that state is the card's ``"train_state"``) and a
  ``README.md`` model card (:mod:`.hub`).
- **Run folder** of ``hfgd-lab train`` (``WORK``): every save is a new model folder
  ``WORK/checkpoints/iter<N>-<id>/``; ``WORK/last.json`` and ``WORK/best.json`` are
  small *pointers* (``{"format": POINTER_FORMAT, "checkpoint": "checkpoints/..."}``).
  ``runs/x``, ``runs/x/best``, ``runs/x/best.json`` and a set folder all resolve.
- **Two files** ``NAME.safetensors`` + ``NAME.json`` (the bundled models, runs of
  hfgd-lab < 0.3): still read, and still written by :func:`save_checkpoint`.

Crash safety of a training save (:func:`save_training_set`), after mmengine's
``last_checkpoint`` file: the set is written under a temporary folder name, each file
fsync'd, the folder renamed into place (atomic), then each pointer is switched with
one ``os.replace`` of a fsync'd temporary file. A kill at any instant therefore leaves
``last.json`` pointing at a complete set -- the new one or the previous one, which is
removed only after no pointer references it. Leftovers of killed saves (``.tmp-*``
folders, ``.*.tmp`` files, unreferenced sets) are removed at the next save and at
resume (:func:`clean_run_folder`). :func:`find_resume` falls back to the newest
complete set when a pointer is broken, and says so.

Every file operation of the save machinery passes a numbered :func:`fault_point`;
``HFGD_LAB_KILL_AT=N`` ends the process (``os._exit(KILL_EXIT_CODE)``) at the N-th,
``HFGD_LAB_FAULT_TRACE=FILE`` lists them: the kill harness
(``benchmarks/kill_resume.py``) kills a run inside every operation this way.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from ..config import ConfigError, HFGDConfig
from ..data.preprocess import IMAGENET_MEAN, IMAGENET_STD
from ..models import build_model

FORMAT = "hfgd-lab/checkpoint/v1"
POINTER_FORMAT = "hfgd-lab/pointer/v1"
WEIGHTS_NAME, CARD_NAME, TRAIN_NAME = "model.safetensors", "config.json", "train.safetensors"
SETS_DIR = "checkpoints"
POINTERS = ("last", "best")
KILL_ENV, TRACE_ENV, KILL_EXIT_CODE = "HFGD_LAB_KILL_AT", "HFGD_LAB_FAULT_TRACE", 86
_SET_RE = re.compile(r"^iter(\d+)-[0-9a-f]+$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or does not fit the model."""


# ---- the kill harness's hook ---------------------------------------------------------

_fault_count = 0


def fault_point(label: str) -> None:
    """A numbered point of the save / resume machinery (before each file operation,
    and half-way through each write), for the kill harness.

    ``HFGD_LAB_FAULT_TRACE=FILE`` appends ``N<TAB>label`` lines to FILE;
    ``HFGD_LAB_KILL_AT=N`` ends the process at point N with ``os._exit(86)`` (no
    cleanup, no flushing: what a ``kill -9`` leaves). Unset, this only counts."""
    global _fault_count
    _fault_count += 1
    trace = os.environ.get(TRACE_ENV)
    if trace:
        with open(trace, "a") as f:
            f.write(f"{_fault_count}\t{label}\n")
    if os.environ.get(KILL_ENV) == str(_fault_count):
        os._exit(KILL_EXIT_CODE)


def _fsync_dir(path: Path) -> None:
    """Make a rename / create / delete in folder ``path`` durable (POSIX)."""
    fault_point(f"fsync folder {path.name}")
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows: folders cannot be opened; NTFS journals renames
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_all(fd: int, data: memoryview) -> None:
    while len(data):
        data = data[os.write(fd, data):]


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` (refusing an existing one), write ``data``, fsync."""
    fault_point(f"create {path.name}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                 0o644)
    try:
        view, half = memoryview(data), len(data) // 2
        _write_all(fd, view[:half])
        fault_point(f"write {path.name} (half written)")
        _write_all(fd, view[half:])
        fault_point(f"fsync {path.name}")
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace(src: Path, dst: Path) -> None:
    fault_point(f"replace {dst.name}")
    os.replace(src, dst)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


def _write_replace(path: Path, data: bytes) -> None:
    """Write ``path`` atomically: a fsync'd temporary file, then one ``os.replace``."""
    tmp = _tmp_name(path)
    try:
        _write_new(tmp, data)
        _replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ---- where a checkpoint's files are -------------------------------------------------

@dataclass(frozen=True)
class CheckpointRef:
    """The files of one checkpoint, as :func:`resolve` found them.

    Attributes:
        card / weights / train: the card (JSON), weights and training-state files.
        folder: the model folder, or None for the two-file format.
        pointer: the ``last.json`` / ``best.json`` it was reached through, else None.
    """

    card: Path
    weights: Path
    train: Path
    folder: Optional[Path] = None
    pointer: Optional[Path] = None

    @property
    def stem(self) -> Path:
        """Where files about this checkpoint go, as ``STEM.eval.json`` and the like:
        ``runs/x/best`` for a run's pointer, the folder's own path for a model folder
        (so they land beside it, not in it), ``NAME`` for two files."""
        if self.pointer is not None:
            return self.pointer.with_suffix("")
        if self.folder is not None:
            return self.folder
        return self.card.with_suffix("")

    @property
    def name(self) -> str:
        """A short name for people: ``x/best``, ``my_model``, ``NAME``."""
        if self.pointer is not None:
            return f"{self.pointer.parent.name}/{self.pointer.stem}"
        if self.folder is not None:
            return self.folder.name
        stem = self.card.with_suffix("")
        return stem.name if stem.name not in POINTERS else f"{stem.parent.name}/{stem.name}"


def _folder_ref(folder: Path, pointer: Optional[Path] = None) -> CheckpointRef:
    return CheckpointRef(folder / CARD_NAME, folder / WEIGHTS_NAME, folder / TRAIN_NAME,
                         folder, pointer)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint card {path} is not valid JSON: {e}") from None
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None


def _is_pointer(data) -> bool:
    return isinstance(data, dict) and data.get("format") == POINTER_FORMAT


def resolve(path: str | Path) -> CheckpointRef:
    """What a user typed -> the files of the checkpoint it names.

    - a model folder (holds ``config.json``) or a file inside it;
    - a run folder -> its ``best.json`` pointer, else ``last.json``;
    - ``runs/x/best``, ``best.json`` -> the set the pointer names (or, for a run of
      hfgd-lab < 0.3, the two files ``best.safetensors`` + ``best.json``);
    - ``NAME``, ``NAME.json``, ``NAME.safetensors`` -> the two-file checkpoint.

    Nothing is checked beyond what resolving needs: a missing two-file checkpoint
    resolves (to files that do not exist; :func:`read_card` says so).

    Raises:
        CheckpointError: a folder holding no checkpoint, an unreadable / invalid
            pointer, a pointer naming a set outside its run folder.
    """
    p = Path(path)
    if p.is_dir():
        if (p / CARD_NAME).is_file():
            return _folder_ref(p)
        for name in ("best", "last"):
            if (p / f"{name}.json").is_file():
                return resolve(p / f"{name}.json")
        raise CheckpointError(f"no checkpoint in folder {p}: expected config.json (a model "
                              "folder) or best.json / last.json (a run folder)")
    if p.name in (WEIGHTS_NAME, TRAIN_NAME, CARD_NAME) and (p.parent / CARD_NAME).is_file() \
            and (p.parent / WEIGHTS_NAME).is_file():
        return _folder_ref(p.parent)
    stem = str(p)
    for suffix in (".train.safetensors", ".safetensors", ".json"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    card = Path(stem + ".json")
    if card.is_file():
        data = _read_json(card)
        if _is_pointer(data):
            return _folder_ref(_pointer_target(card, data), pointer=card)
    return CheckpointRef(card, Path(stem + ".safetensors"), Path(stem + ".train.safetensors"))


def _pointer_target(pointer: Path, data: dict) -> Path:
    rel = data.get("checkpoint")
    if not isinstance(rel, str) or not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise CheckpointError(f"pointer {pointer} names no checkpoint set inside its run "
                              f"folder (checkpoint={rel!r})")
    return pointer.parent / rel


def checkpoint_paths(path: str | Path) -> dict[str, Path]:
    """``{"card", "weights", "train"}`` paths of checkpoint ``path`` (see :func:`resolve`)."""
    ref = resolve(path)
    return {"card": ref.card, "weights": ref.weights, "train": ref.train}


# ---- what a checkpoint holds --------------------------------------------------------

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


def _model_tensors(model: torch.nn.Module, dtype=None) -> dict:
    weights = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        # a copy of its own: timm models may share tensors between modules (CoaT), which
        # safetensors refuses to write
        weights[k] = v.clone().contiguous()
    return weights


def make_card(model: torch.nn.Module, *, classes=None, palette=None, metrics=None,
              extra: Optional[dict] = None, save_id: Optional[str] = None) -> dict:
    """The card of ``model``: format, save id, the resolved model config (with the
    backbone's normalisation written out), the same normalisation as ``{"mean",
    "std"}``, classes, palette, metrics, and ``extra`` (provenance, training summary)."""
    cfg = model.cfg.resolved()
    mean, std = cfg.normalization
    return {
        "format": FORMAT,
        "save_id": save_id or uuid.uuid4().hex,
        "config": cfg.to_dict(),
        "normalization": {"mean": list(mean), "std": list(std)},
        "classes": list(classes) if classes is not None else None,
        "palette": np.asarray(palette).astype(int).tolist() if palette is not None else None,
        "metrics": metrics or {},
        **(extra or {}),
    }


def _train_tensors(card: dict, optimizer, train_state, scaler) -> dict:
    """Adds ``train_state`` (JSON half) to ``card``; returns the tensor half."""
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
    return tensors


def _card_bytes(card: dict) -> bytes:
    return json.dumps(card, indent=1, default=_json_default).encode()


def _set_files(model, card, dtype=None, train_tensors=None) -> dict[str, bytes]:
    """file name -> bytes of a model folder (weights and train state carry the card's
    save id, so that files of two different saves are never taken for one)."""
    meta = {"format": FORMAT, "save_id": card["save_id"]}
    files = {WEIGHTS_NAME: safetensors_bytes(_model_tensors(model, dtype), metadata=meta)}
    if train_tensors is not None:
        files[TRAIN_NAME] = safetensors_bytes(train_tensors, metadata=meta)
    files[CARD_NAME] = _card_bytes(card)
    return files


# ---- writing ------------------------------------------------------------------------

def save_checkpoint(path: str | Path, model: torch.nn.Module, *, classes=None, palette=None,
                    metrics: dict | None = None, extra: dict | None = None,
                    optimizer: torch.optim.Optimizer | None = None,
                    train_state: dict | None = None, scaler=None, dtype=None) -> Path:
    """Write the two-file checkpoint ``path`` (a stem; ``.safetensors`` and ``.json``
    are added; ``.train.safetensors`` too when ``optimizer``/``train_state`` make it
    resumable -- RNG states are added here). Returns the card path.

    Each file is written to a fsync'd temporary name and moved into place, the card
    last; the card's ``save_id`` is repeated in the tensor files, so a crash between
    the moves is detected on reading ("save_id differs"). For training runs use
    :func:`save_training_set`, which is atomic as a whole.
    ``dtype=torch.float16`` stores floating weights at half size (bundled models).
    """
    stem = str(path)
    for suffix in (".train.safetensors", ".safetensors", ".json"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    paths = {"card": Path(stem + ".json"), "weights": Path(stem + ".safetensors"),
             "train": Path(stem + ".train.safetensors")}
    paths["card"].parent.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)  # unwrap DDP
    card = make_card(model, classes=classes, palette=palette, metrics=metrics, extra=extra)
    train = None
    if optimizer is not None or train_state is not None:
        train = _train_tensors(card, optimizer, train_state, scaler)
    files = _set_files(model, card, dtype, train)
    keys = {WEIGHTS_NAME: "weights", TRAIN_NAME: "train", CARD_NAME: "card"}
    moves = [(_tmp_name(paths[keys[f]]), paths[keys[f]], files[f])
             for f in (WEIGHTS_NAME, TRAIN_NAME, CARD_NAME) if f in files]
    try:
        for tmp, _, data in moves:
            _write_new(tmp, data)
        for tmp, final, _ in moves:  # card last: it is what readers look for
            _replace(tmp, final)
    finally:
        for tmp, _, _ in moves:
            tmp.unlink(missing_ok=True)
    _fsync_dir(paths["card"].parent)
    return paths["card"]


def write_model_folder(folder: str | Path, model: torch.nn.Module, *, classes=None,
                       palette=None, metrics=None, extra: Optional[dict] = None, dtype=None,
                       extra_files: Optional[dict[str, bytes]] = None,
                       overwrite: bool = False) -> Path:
    """Write a model folder (``model.safetensors`` + ``config.json`` + ``extra_files``,
    e.g. a ``README.md``). Returns the folder.

    A new folder is built under a temporary name and renamed into place (atomic). In
    an existing folder, files are replaced one by one (card last; its save id makes a
    half-replaced folder fail loudly on reading) and other files are left alone.

    Raises:
        CheckpointError: ``folder`` is a file, or holds one of these files that
            hfgd-lab did not write (a ``config.json`` that is not an hfgd-lab card, or
            any of them in a folder without one) and ``overwrite`` is False.
    """
    folder = Path(folder)
    model = getattr(model, "module", model)
    card = make_card(model, classes=classes, palette=palette, metrics=metrics, extra=extra)
    files = {**(extra_files or {}), **_set_files(model, card, dtype)}  # card last
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"model folder {folder} is a file; give a folder path")
    if folder.is_dir():
        ours = False
        if (folder / CARD_NAME).is_file():
            try:
                ours = json.loads((folder / CARD_NAME).read_text()).get("format") == FORMAT
            except (OSError, ValueError, AttributeError):
                ours = False
        clash = [n for n in files if (folder / n).exists()]
        if clash and not ours and not overwrite:
            raise CheckpointError(
                f"{folder} already holds {', '.join(clash)} that hfgd-lab did not write; "
                "choose another folder (or pass overwrite=True / --overwrite)")
        for name, data in files.items():
            _write_replace(folder / name, data)
        _fsync_dir(folder)
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".tmp-{folder.name}-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir()
        for name, data in files.items():
            _write_new(tmp / name, data)
        _fsync_dir(tmp)
        fault_point(f"rename {tmp.name}")
        os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(folder.parent)
    return folder


def _switch_pointer(work_dir: Path, name: str, set_dir: Path, iteration: int) -> None:
    data = {"format": POINTER_FORMAT, "checkpoint": f"{SETS_DIR}/{set_dir.name}",
            "iteration": int(iteration)}
    _write_replace(work_dir / f"{name}.json", json.dumps(data, indent=1).encode())
    _fsync_dir(work_dir)


def read_pointer(pointer: Path) -> Optional[Path]:
    """The set folder pointer file ``pointer`` names, or None (missing, not a pointer,
    unreadable: a run of hfgd-lab < 0.3 has a card there instead)."""
    try:
        data = json.loads(Path(pointer).read_text())
        return _pointer_target(Path(pointer), data) if _is_pointer(data) else None
    except (OSError, ValueError, CheckpointError):
        return None


def save_training_set(work_dir: str | Path, model: torch.nn.Module, *, iteration: int,
                      pointers: Iterable[str] = ("last",), classes=None, palette=None,
                      metrics: dict | None = None, extra: dict | None = None,
                      optimizer=None, train_state: dict | None = None, scaler=None,
                      set_name: Optional[str] = None) -> Path:
    """Save a resumable checkpoint set of a training run, atomic as a whole.

    Writes ``WORK/checkpoints/<set_name>/`` (``model.safetensors``, ``train.safetensors``,
    ``config.json``; built as ``.tmp-<set_name>`` and renamed once whole), switches each
    of ``pointers`` (``"last"``, ``"best"``) to it, then removes what no pointer
    references (:func:`clean_run_folder`). Returns the set folder.

    ``set_name`` defaults to :func:`new_set_name` (pass one made beforehand to record
    it in ``train_state``).
    """
    work_dir = Path(work_dir)
    model = getattr(model, "module", model)
    sets = work_dir / SETS_DIR
    sets.mkdir(parents=True, exist_ok=True)
    name = set_name or new_set_name(iteration)
    final, tmp = sets / name, sets / f".tmp-{name}"
    card = make_card(model, classes=classes, palette=palette, metrics=metrics, extra=extra)
    files = _set_files(model, card, None, _train_tensors(card, optimizer, train_state, scaler))
    fault_point(f"mkdir {tmp.name}")
    tmp.mkdir()
    for fname in (WEIGHTS_NAME, TRAIN_NAME, CARD_NAME):
        _write_new(tmp / fname, files[fname])
    _fsync_dir(tmp)
    fault_point(f"rename {tmp.name}")
    os.rename(tmp, final)
    _fsync_dir(sets)
    for p in pointers:
        _switch_pointer(work_dir, p, final, iteration)
    clean_run_folder(work_dir)
    fault_point(f"saved {name}")
    return final


def new_set_name(iteration: int) -> str:
    """``iter000123-<8 hex>``: sorts by iteration, unique per save."""
    return f"iter{int(iteration):06d}-{uuid.uuid4().hex[:8]}"


def clean_run_folder(work_dir: str | Path) -> list[str]:
    """Remove what killed saves left in run folder ``work_dir``: temporary files and
    folders (of sets, pointers and the log's truncation), sets that no pointer references, and the two-file ``last`` / ``best`` of
    an older hfgd-lab once their card has been replaced by a pointer. Files it did not
    name are never touched. Returns the removed names (relative to ``work_dir``)."""
    work_dir = Path(work_dir)
    sets = work_dir / SETS_DIR
    keep = {t.resolve() for t in (read_pointer(work_dir / f"{p}.json") for p in POINTERS)
            if t is not None}
    removed = []

    def remove(path: Path):
        fault_point(f"remove {path.name}")
        if path.is_dir() and not path.is_symlink():
            # renamed first, so that a kill part-way leaves a name no reader takes
            # for a set
            if not path.name.startswith(".del-"):
                gone = path.with_name(f".del-{path.name}")
                os.rename(path, gone)
                path = gone
            files = sorted(path.iterdir())
            for i, f in enumerate(files):
                if i == len(files) // 2:
                    fault_point(f"remove {path.name} (half removed)")
                if f.is_dir() and not f.is_symlink():
                    shutil.rmtree(f, ignore_errors=True)
                else:
                    f.unlink(missing_ok=True)
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(str(path.relative_to(work_dir)))

    if sets.is_dir():
        for entry in sorted(sets.iterdir()):
            n = entry.name
            if n.startswith((".tmp-", ".del-")) or (n.endswith(".tmp") and n.startswith(".")) \
                    or (_SET_RE.match(n) and entry.resolve() not in keep):
                remove(entry)
    if work_dir.is_dir():
        for entry in sorted(work_dir.iterdir()):
            n = entry.name
            # temporary files of the pointers, of the log's truncation, and of the
            # two-file saves of hfgd-lab < 0.3
            if n.startswith((*(f".{p}." for p in POINTERS), ".log.jsonl.")) \
                    and n.endswith(".tmp"):
                remove(entry)
        for p in POINTERS:
            if read_pointer(work_dir / f"{p}.json") is not None:
                for suffix in (".safetensors", ".train.safetensors"):
                    if (work_dir / f"{p}{suffix}").is_file():
                        remove(work_dir / f"{p}{suffix}")
    if removed:
        _fsync_dir(sets if sets.is_dir() else work_dir)
    return removed


# ---- reading ------------------------------------------------------------------------

def read_card(path: str | Path) -> dict:
    """The card (a dict) of checkpoint ``path`` (anything :func:`resolve` takes).

    Raises:
        CheckpointError: no card, invalid JSON, or not an hfgd-lab card."""
    ref = path if isinstance(path, CheckpointRef) else resolve(path)
    if not ref.card.is_file():
        where = f" (the pointer {ref.pointer} names a set that is not there)" \
            if ref.pointer is not None else ""
        raise CheckpointError(f"checkpoint card not found: {ref.card}{where}")
    card = _read_json(ref.card)
    if not isinstance(card, dict) or "config" not in card:
        raise CheckpointError(f"{ref.card} is not an hfgd-lab checkpoint card (no 'config')")
    if not isinstance(card["config"], dict):
        raise CheckpointError(f"{ref.card}: 'config' is {type(card['config']).__name__} "
                              f"{card['config']!r:.40}; expected a mapping of model settings")
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


def _check_tensors(path: Path, save_id: str | None) -> None:
    """The header of ``path`` parses, the file has the length it declares, and its
    save id is the card's (reads no tensor data)."""
    if not path.is_file():
        raise CheckpointError(f"{path.name} is missing")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise CheckpointError(f"{path.name} cannot be read ({type(e).__name__})") from None
    if save_id and meta.get("save_id") not in (None, save_id):
        raise CheckpointError(f"{path.name} belongs to another save (save_id differs)")


def verify(path: str | Path | CheckpointRef, resumable: bool = False) -> dict:
    """Check that a checkpoint is whole without building the model: the card parses,
    the weights (and with ``resumable`` the training state) are readable safetensors of
    the declared length and of the same save. Returns the card.

    Raises:
        CheckpointError: naming what is missing or broken."""
    ref = path if isinstance(path, CheckpointRef) else resolve(path)
    card = read_card(ref)
    _check_tensors(ref.weights, card.get("save_id"))
    if resumable:
        if "train_state" not in card:
            raise CheckpointError(f"{ref.card} holds no training state (not resumable)")
        _check_tensors(ref.train, card.get("save_id"))
    return card


def load_checkpoint(path, map_location="cpu", build=True):
    """Load a checkpoint (anything :func:`resolve` takes): returns ``(model, card)``,
    the model in eval mode.

    The model is rebuilt from the card's config (``backbone_weights`` and
    ``pretrained`` are dropped: the checkpoint holds the weights) and loaded strictly.
    Only JSON and safetensors are read: nothing is unpickled.

    Raises:
        CheckpointError: missing / corrupt files, files of two different saves, a
            config this version cannot build, tensors that do not fit it.
    """
    ref = path if isinstance(path, CheckpointRef) else resolve(path)
    card = read_card(ref)
    cfg_dict = dict(card["config"])
    cfg_dict.update(backbone_weights=None, pretrained=False)
    # cards written before the normalisation was stored: every model then used ImageNet's
    cfg_dict.setdefault("image_mean", list(IMAGENET_MEAN))
    cfg_dict.setdefault("image_std", list(IMAGENET_STD))
    try:
        cfg = HFGDConfig.from_dict(cfg_dict)
    except ConfigError as e:
        raise CheckpointError(f"{ref.card}: invalid model config: {e}") from None
    tensors = _read_tensors(ref.weights, card.get("save_id"))
    model = build_model(cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = [f"{k}: {tuple(tensors[k].shape)} vs {tuple(v.shape)}"
              for k, v in expected.items() if k in tensors and tensors[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise CheckpointError(f"{ref.weights} does not fit its config: missing {missing[:8]}, "
                              f"unexpected {unexpected[:8]}, shape mismatches {shapes[:8]}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})
    model.to(map_location).eval()
    return model, card


def load_train_state(path) -> tuple[dict, dict, dict]:
    """(card, train tensors, train_state) of a resumable checkpoint."""
    ref = path if isinstance(path, CheckpointRef) else resolve(path)
    card = read_card(ref)
    if "train_state" not in card:
        raise CheckpointError(f"{ref.card} holds no training state (not resumable)")
    tensors = _read_tensors(ref.train, card.get("save_id"))
    return card, tensors, card["train_state"]


def restore_optimizer(optimizer, tensors: dict, train_state: dict) -> None:
    optimizer.load_state_dict(_unflatten_optimizer(tensors, train_state["optimizer"]))


# ---- resuming -----------------------------------------------------------------------

def complete_sets(work_dir: str | Path) -> list[tuple[int, Path]]:
    """``(iteration, folder)`` of every whole, resumable set of run folder ``work_dir``,
    newest first (by iteration, then modification time)."""
    sets = Path(work_dir) / SETS_DIR
    found = []
    if sets.is_dir():
        for entry in sets.iterdir():
            m = _SET_RE.match(entry.name)
            if not m or not entry.is_dir():
                continue
            try:
                card = verify(_folder_ref(entry), resumable=True)
                it = int(card["train_state"].get("iteration", m.group(1)))
            except (CheckpointError, TypeError, ValueError, AttributeError):
                continue
            found.append((it, entry.stat().st_mtime, entry))
    return [(it, p) for it, _, p in sorted(found, key=lambda t: (t[0], t[1]), reverse=True)]


@dataclass(frozen=True)
class ResumePoint:
    """Where ``--resume`` continues from: the checkpoint, and what people should be told
    (``note``: why another set than the one pointed at was taken, or None)."""

    ref: CheckpointRef
    note: Optional[str] = None


def _latest_in(work_dir: Path) -> ResumePoint:
    pointer = work_dir / "last.json"
    problem = None
    if pointer.is_file():
        try:
            ref = resolve(pointer)
            verify(ref, resumable=True)
            return ResumePoint(ref)
        except CheckpointError as e:
            problem = f"{pointer} is unusable ({e})"
    sets = complete_sets(work_dir)
    if sets:
        it, folder = sets[0]
        why = problem or f"{pointer} is missing"
        return ResumePoint(_folder_ref(folder),
                           f"{why}; resuming from the newest complete set "
                           f"{folder.relative_to(work_dir)} (iteration {it}) instead")
    if problem:
        raise CheckpointError(f"--resume: {problem}, and no complete set under "
                              f"{work_dir / SETS_DIR}")
    raise FileNotFoundError(f"--resume: no last checkpoint in {work_dir} (no last.json and "
                            f"no complete set under {SETS_DIR}/)")


def find_resume(resume, work_dir: str | Path) -> ResumePoint:
    """What ``--resume`` means: alone (``True``, ``"auto"``, ``"latest"``, ``""``) the
    latest checkpoint of ``work_dir``; a run folder, its latest; a path, that checkpoint.

    Through a pointer (``last.json``, a run folder), a broken set falls back to the
    newest complete set of that run folder, and :attr:`ResumePoint.note` says so; an
    explicitly named set or two-file checkpoint must be whole.

    Raises:
        FileNotFoundError: nothing to resume from in the run folder.
        CheckpointError: the named checkpoint is missing, broken or not resumable.
    """
    if resume in (True, "auto", "latest", ""):
        return _latest_in(Path(work_dir))
    p = Path(resume).expanduser()
    if p.is_dir() and not (p / CARD_NAME).is_file():
        return _latest_in(p)
    ref = resolve(p)
    if ref.pointer is not None:
        try:
            verify(ref, resumable=True)
        except CheckpointError as e:
            if "holds no training state" in str(e):
                raise
            point = _latest_in(ref.pointer.parent)
            return ResumePoint(point.ref, f"{ref.pointer} is unusable ({e}); resuming from "
                               f"{point.ref.folder or point.ref.card} instead")
        return ResumePoint(ref)
    verify(ref, resumable=True)
    return ResumePoint(ref)


def repair_run_folder(work_dir: str | Path, ref: CheckpointRef, train_state: dict) -> None:
    """After resuming from ``ref``: point ``last.json`` at it (and ``best.json`` at the
    set its training state calls best) when it is a set of run folder ``work_dir``, then
    remove leftovers (:func:`clean_run_folder`). Pointers already right are not
    rewritten."""
    work_dir = Path(work_dir)
    sets = (work_dir / SETS_DIR).resolve()
    if ref.folder is not None and ref.folder.resolve().parent == sets:
        it = int(train_state.get("iteration", 0))
        if read_pointer(work_dir / "last.json") is None or \
                read_pointer(work_dir / "last.json").resolve() != ref.folder.resolve():
            _switch_pointer(work_dir, "last", ref.folder, it)
        best = train_state.get("best_checkpoint")
        if isinstance(best, str) and _SET_RE.match(Path(best).name):
            target = work_dir / SETS_DIR / Path(best).name
            current = read_pointer(work_dir / "best.json")
            if target.is_dir() and (current is None or current.resolve() != target.resolve()):
                try:
                    verify(_folder_ref(target))
                    _switch_pointer(work_dir, "best", target,
                                    int((train_state.get("best") or {}).get("iteration", it)))
                except CheckpointError:
                    pass
    if work_dir.is_dir():
        clean_run_folder(work_dir)


def truncate_log(path: str | Path, iteration: int) -> int:
    """Keep the records of JSONL log ``path`` up to ``iteration`` (``rec["iter"] <=
    iteration``), dropping later ones and a torn last line; rewritten atomically, and
    only when something goes. Returns the number of lines dropped."""
    path = Path(path)
    if not path.is_file():
        return 0
    keep, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
            ok = isinstance(rec, dict) and int(rec.get("iter", 0)) <= iteration
        except (ValueError, TypeError):
            ok = False
        if ok:
            keep.append(line)
        else:
            dropped += 1
    if dropped:
        _write_replace(path, "".join(f"{line}\n" for line in keep).encode())
    return dropped
