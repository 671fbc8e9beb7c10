"""The one cache of the project: analysed images, shared by the app and the notebooks.

:class:`LRU` is a small thread-safe least-recently-used map bounded by entries and by
bytes; :class:`AnalysisCache` keys it by ``(model key, image digest, options)`` so that
every view and every click reuse the one forward pass of an image, and keeps what is
derived from an analysis (PCA pictures, scores, drawn views) with it, so that it is
computed once and dropped with it. The app's loaded models and the notebooks' rendered
panels use :class:`LRU` too.
"""
from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Hashable, Optional

import numpy as np
import torch

from .image import ImageAnalysis

__all__ = ["LRU", "CachedAnalysis", "AnalysisCache", "digest_array", "digest_bytes",
           "digest_file", "analysis_bytes"]


class LRU:
    """A thread-safe least-recently-used map of at most ``maxsize`` entries and, with
    ``max_bytes``, at most that many bytes by ``sizeof(value)`` (the newest entry is
    always kept, however large).

    :meth:`get_or_compute` runs ``compute`` at most once per key even when several
    threads ask at the same time (the others wait for it and share the result); computing
    is serialised by ``slots`` (a semaphore that may be shared between caches), which
    bounds memory.
    """

    def __init__(self, maxsize: int, slots: Optional[threading.Semaphore] = None,
                 max_bytes: Optional[int] = None, sizeof: Callable = lambda v: 0):
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self.sizeof = sizeof
        self.slots = slots or threading.Semaphore(1)
        self._data: OrderedDict = OrderedDict()
        self._sizes: dict = {}
        self._lock = threading.Lock()
        self._key_locks: dict = {}

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(self._sizes.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def __contains__(self, key) -> bool:
        with self._lock:
            return key in self._data

    def keys(self) -> list:
        with self._lock:
            return list(self._data)

    def get(self, key, default=None):
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
            return default

    def put(self, key, value) -> None:
        size = int(self.sizeof(value)) if self.max_bytes else 0
        with self._lock:
            self._data[key] = value
            self._sizes[key] = size
            self._data.move_to_end(key)
            while len(self._data) > 1 and (
                    len(self._data) > self.maxsize
                    or (self.max_bytes and sum(self._sizes.values()) > self.max_bytes)):
                old, _ = self._data.popitem(last=False)
                self._sizes.pop(old, None)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._sizes.clear()

    def get_or_compute(self, key, compute: Callable[[], object]):
        sentinel = object()
        value = self.get(key, sentinel)
        if value is not sentinel:
            return value
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        try:
            with key_lock:  # one computation per key; later callers find it cached
                value = self.get(key, sentinel)
                if value is not sentinel:
                    return value
                with self.slots:
                    value = compute()
                self.put(key, value)
                return value
        finally:
            with self._lock:
                self._key_locks.pop(key, None)


def digest_bytes(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def digest_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def digest_array(arr: np.ndarray) -> str:
    a = np.ascontiguousarray(arr)
    h = hashlib.sha1(f"{a.shape}{a.dtype}".encode())
    h.update(a.data)
    return h.hexdigest()


@dataclass(eq=False)
class CachedAnalysis:
    """One forward pass of one model on one image with one set of options, and what has
    been derived from it so far (``derive``).

    Attributes:
        analysis: the :class:`ImageAnalysis`.
        info: what the caller wants kept beside it (the model, the image as read, ...).
        seconds: time the forward pass(es) and post-processing took.
    """

    analysis: ImageAnalysis
    info: dict = field(default_factory=dict)
    seconds: float = 0.0
    derived: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def derive(self, name: Hashable, fn: Callable[[], object]):
        """``fn()`` computed once per ``name`` and kept with this analysis."""
        with self._lock:
            if name in self.derived:
                return self.derived[name]
        value = fn()
        with self._lock:
            return self.derived.setdefault(name, value)


def analysis_bytes(entry: CachedAnalysis) -> int:
    """Approximate memory of a cached analysis: its arrays and tensors, with room for
    the views derived from it later (PCA pictures, drawn tiles)."""
    total = 0
    for f in dataclasses.fields(entry.analysis):
        v = getattr(entry.analysis, f.name)
        if isinstance(v, np.ndarray):
            total += v.nbytes
        elif isinstance(v, torch.Tensor):
            total += v.element_size() * v.nelement()
    return int(total * 1.5)


class AnalysisCache:
    """Analysed images by ``(model key, image key, options key)``, bounded by entries and
    bytes; :meth:`get` computes a missing one once, even under concurrent requests.

    Args:
        max_entries: analyses kept.
        max_bytes: memory they may take (the newest is always kept).
        slots: a semaphore bounding concurrent computations (shared with other caches).
    """

    def __init__(self, max_entries: int = 6, max_bytes: Optional[int] = None,
                 slots: Optional[threading.Semaphore] = None):
        self.lru = LRU(max_entries, slots, max_bytes=max_bytes, sizeof=analysis_bytes)
        self.computed = 0

    def get(self, key: tuple, compute: Callable[[], CachedAnalysis]) -> CachedAnalysis:
        def run():
            self.computed += 1
            return compute()
        return self.lru.get_or_compute(key, run)

    def __len__(self) -> int:
        return len(self.lru)

    def clear(self) -> None:
        self.lru.clear()
