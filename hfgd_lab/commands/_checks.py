"""Checks that need the project's code (datasets, configs) but do no work: the commands
import this module inside ``run()`` and call it before training or evaluating, so that a
wrong combination fails in seconds with one line naming the key or option."""
from __future__ import annotations

import inspect
from pathlib import Path

from ..config import ConfigError
from ..data import DATASETS, build_dataset


def dataset_arguments(name: str) -> tuple[str, ...]:
    """Keyword arguments dataset ``name`` takes beyond root, split and transform."""
    params = inspect.signature(DATASETS[name].__init__).parameters
    return tuple(p for p in params if p not in ("self", "root", "split", "transform"))


def check_dataset_name(name: str, key: str) -> None:
    if name not in DATASETS:
        raise ConfigError(f"{key}={name!r}: unknown dataset; known: {', '.join(DATASETS)}")


def check_dataset_kwargs(name: str, kwargs: dict, key: str, clear_hint: str) -> None:
    """Every keyword in ``kwargs`` must be an argument of dataset ``name``; the message
    names ``key.ARG``, says what the dataset takes, and for a built-in scenes argument
    given to another dataset, how to clear it (``clear_hint``)."""
    takes = dataset_arguments(name)
    for arg, value in kwargs.items():
        if arg in takes:
            continue
        hint = ""
        if name != "scenes" and arg in dataset_arguments("scenes"):
            hint = f"; {arg!r} is an argument of the built-in 'scenes' dataset{clear_hint}"
        raise ConfigError(f"{key}.{arg}={value!r}: dataset {name!r} takes no argument "
                          f"{arg!r} (it takes: {', '.join(takes) or 'none'}){hint}")


def open_split(name: str, root, split: str, kwargs: dict, key: str, transform=None):
    """``build_dataset(...)`` with a failure named by ``key`` (a folder listing, no
    pixels decoded); a folder written by make-scenes gets a hint for a missing split."""
    if name != "scenes":
        if not root:
            raise ConfigError(f"data.root: dataset {name!r} needs its folder "
                              "(--set data.root=DIR, or --root DIR for eval)")
        if not Path(root).is_dir():
            raise ConfigError(f"data.root={str(root)!r}: folder not found")
    try:
        ds = build_dataset(name, root, split, transform=transform, **kwargs)
    except (OSError, ValueError) as e:
        hint = ""
        if name == "folder" and (Path(root) / "scenes.json").is_file():
            hint = (f"; make-scenes writes it: hfgd-lab make-scenes --out {root} "
                    f"--split {split} --num N")
        raise ConfigError(f"{key}={split!r} (data.root={str(root)!r}): {e}{hint}") from None
    if len(ds) == 0:
        raise ConfigError(f"{key}={split!r}: the split is empty")
    return ds


def check_experiment_data(cfg) -> None:
    """The data section of an experiment config can be trained on: a known dataset, the
    keyword arguments it takes, its root, and both splits."""
    d = cfg.data
    check_dataset_name(d.name, "data.name")
    for key, values in (("data.kwargs", d.kwargs), ("data.val_kwargs", d.val_kwargs)):
        check_dataset_kwargs(d.name, values, key,
                             f": clear it with --set {key}={{}}, or use "
                             "configs/scenes_folder.yaml for scenes written by make-scenes")
    open_split(d.name, d.root, d.train_split, d.kwargs, "data.train_split")
    open_split(d.name, d.root, d.val_split, {**d.kwargs, **d.val_kwargs}, "data.val_split")


def check_work_dir(work_dir: Path, resume) -> None:
    """A new run needs a new or empty folder; a folder holding a run continues only with
    ``--resume``, so that no result of an earlier run is overwritten."""
    work_dir = Path(work_dir)
    if work_dir.exists() and not work_dir.is_dir():
        raise ConfigError(f"train.work_dir={str(work_dir)!r}: exists and is not a folder")
    if resume or not work_dir.is_dir():
        return
    held = sorted(p.name for p in work_dir.iterdir())
    if held:
        shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
        raise ConfigError(f"train.work_dir={str(work_dir)!r}: already holds files ({shown}); "
                          "continue that run with --resume, or give a new folder with "
                          "--work-dir DIR")
