"""The app's functions, free of Gradio: plain values in, arrays and text out.

The path of an uploaded image, in one pass through this module: :meth:`App.read`
turns whatever arrived (a file, bytes, an array) into pixels with
:func:`hfgd_lab.data.read_image` (pixel cap checked on the header, before decoding);
:meth:`App.analysed` runs :func:`hfgd_lab.analysis.analyze_image` once per (model,
image, options) -- its forward pass and test-time augmentation are the engine's
:func:`~hfgd_lab.engine.infer` -- and keeps the result in the shared
:class:`~hfgd_lab.analysis.AnalysisCache`; each view method (segmentation, class
tokens, guidance, attention for any pixel, the stop-gradient comparison, the
pretrained ImageNet classifier) derives its arrays from that stored pass and draws
them with :mod:`hfgd_lab.viz` and :mod:`hfgd_lab.viz.tiles`.

Every method raises :class:`~hfgd_lab.app.state.AppError` with a message for the user
when an input cannot be used; :mod:`hfgd_lab.app.ui` shows it and keeps the last good
result on screen.
"""
from __future__ import annotations

import base64
import ctypes
import gc
import html
import io
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ..analysis import (HIGH_STRIDE, LRU, AnalysisCache, CachedAnalysis, analyze_image,
                        analyze_imagenet, class_similarity, decision_changes, digest_array, digest_bytes,
                        digest_file, feature_agreement, segmentation_scores, shared_pca)
from ..config import VARIANTS
from ..data import ImageError, read_image
from ..data.preprocess import resize_labels
from ..engine import LoadedModel, zoo
from ..experiments.stop_gradient import describe_regime_map, describe_summary, stored_results
from ..models.imagenet import imagenet_classifier
from ..models.weights import PACKAGED
from ..viz import OUTCOME_COLORS, heatmap_overlay, mark_point, outcome_rgb, overlay, to_uint8
from ..viz import tiles
from .state import AppError, ModelStore, Options, short

__all__ = ["App", "ImageInfo", "SegmentView", "ClassTokenView", "GuidanceView",
           "AttentionView", "CompareView", "PretrainedView", "ModelInfo", "escape",
           "MAX_PIXELS", "IMAGENET_SIDE", "OUTCOME_LEGEND"]

Progress = Optional[Callable]
try:
    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc
    _LIBC = None

# The app decodes at most this many pixels (checked on the file's header, before any
# pixel is decoded): a 40 MP PNG costs ~160 MB to decode (PIL holds RGB as 4 bytes a
# pixel), where the 450 MP default of read_image would cost 1.8 GB per request.
# JPEGs count at the reduced size they are decoded at (1/2..1/8, draft mode).
MAX_PIXELS = 40_000_000
IMAGENET_SIDE = 320           # the ImageNet classifier's input cap (it trained at 224 px)
IMAGENET_BACKBONE = "tf_efficientnet_lite0"
OUTCOME_LEGEND = ((OUTCOME_COLORS[1], "fixed by the upsampler"),
                  (OUTCOME_COLORS[2], "broken by the upsampler"),
                  (OUTCOME_COLORS[3], "changed, both wrong"))
CHANGED_COLOR = (255, 0, 255)


def _noop(*_, **__):
    pass


def escape(text) -> str:
    """Text from a card or a file name, safe inside HTML and Markdown (tables too);
    quotes are left alone so names in code spans read as typed."""
    return html.escape(str(text), quote=False).replace("|", "&#124;")


# ---- what the views return -----------------------------------------------------------

@dataclass
class ImageInfo:
    """An input image as read (at one resolution cap).

    Attributes:
        digest: sha1 of the file (or array) as given. name: how the page names it.
        size: (W, H) upright, as uploaded (after EXIF rotation).
        array: (h, w, 3) uint8 after the resolution cap. notes: what reading changed.
        kind: ``"scene"`` / ``"photo"`` (an example) or ``"upload"``.
        target: ground truth of a scene example at (h, w), else None.
    """

    digest: str
    name: str
    size: tuple
    array: np.ndarray
    notes: list
    kind: str
    target: Optional[np.ndarray] = None


@dataclass
class SegmentView:
    overlay: np.ndarray          # (h, w, 3) the prediction over the analysed image
    pred: np.ndarray             # (h, w) int64 labels of the analysed image
    image_size: tuple            # (W, H) of the uploaded image (label_map's size)
    classes: list
    palette: np.ndarray
    present: list                # class indices in the prediction, largest area first
    rows: list                   # per present class: name, area %, confidence % (, IoU %)
    headers: list
    banner: str
    summary: str

    def label_map(self) -> np.ndarray:
        """(H, W) labels at the uploaded image's size (nearest): one per input pixel;
        uint8 up to 256 classes, else uint16 (a 16-bit PNG)."""
        w, h = self.image_size
        labels = resize_labels(self.pred, (h, w)) if self.pred.shape != (h, w) else self.pred
        return labels.astype(np.uint8 if len(self.classes) <= 256 else np.uint16)


@dataclass
class ClassTokenView:
    high: Optional[np.ndarray]   # (h, w, 3) F_high's similarity over the image, or None
    up: np.ndarray               # (h, w, 3) F_up's
    vmax: float                  # one colour scale -vmax..vmax for both
    class_name: str
    classes: list
    caption: str


@dataclass
class GuidanceView:
    pca_high: Optional[np.ndarray]
    pca_up: Optional[np.ndarray]
    pred_high: Optional[np.ndarray]
    cosine: Optional[np.ndarray]     # cos(F_up, F_high upsampled) over the image, -1..1
    changes: Optional[np.ndarray]
    legend: list                     # (rgb, text) of the changes picture's colours
    stats: str


@dataclass
class AttentionView:
    marked: np.ndarray           # the image, query cell outlined, at ``scale``
    scale: int                   # display factor of ``marked`` (nearest upscaling)
    tiles: list                  # rows (layers) of (title, (t, t, 3) picture): heads, mean
    rollout: Optional[np.ndarray]
    caption: str
    query: Optional[tuple]       # (x, y) in the analysed image's pixels
    query_image: Optional[tuple] = None   # the same, in the uploaded image's pixels

    def grid(self) -> Optional[np.ndarray]:
        """The tiles as one picture, each with its title above it."""
        if not self.tiles:
            return None
        return tiles.grid([[tiles.caption(rgb, title) for title, rgb in row]
                           for row in self.tiles])


@dataclass
class CompareView:
    overlays: dict               # bundled name -> overlay (None when not installed)
    titles: dict                 # bundled name -> what it is
    caption: str
    experiment: str


@dataclass
class PretrainedView:
    image: np.ndarray            # (h, w, 3) the classified image (capped at 320 px)
    top: list                    # [(ImageNet class name, probability)], best first
    maps: list                   # [(title, (h, w, 3) similarity over the image)]
    vmax: float                  # one colour scale -vmax..vmax for every map
    caption: str


@dataclass
class ModelInfo:
    name: str
    markdown: str
    classes: list


# ---- the app -------------------------------------------------------------------------

class App:
    """Models, caches and every handler of the app.

    Args:
        store: the :class:`ModelStore` (the allow-list of models).
        examples: :class:`~hfgd_lab.app.examples.Example` list; an upload that is one of
            them is recognised (scene ground truth, "this is a photo").
        cache_size: analysed (model, image, options) entries kept.
        cache_mb: memory those entries may take (the newest is always kept).
        heavy_slots: decodes / forward passes allowed at the same time (memory bound).
        max_file_mb: refuse image files larger than this.
        max_pixels: refuse images with more pixels than this, from the header.
    """

    def __init__(self, store: Optional[ModelStore] = None, examples=(), cache_size: int = 6,
                 cache_mb: float = 512, heavy_slots: int = 1, max_file_mb: float = 10.0,
                 max_pixels: int = MAX_PIXELS):
        self.store = store or ModelStore()
        self.examples = {e.digest: e for e in examples}
        self.slots = threading.Semaphore(heavy_slots)
        # by count and by bytes: one analysis at a 2048 px cap holds ~0.75 GB (its CAE
        # attention alone is 2 x 4 x 4096^2 floats), at 512 px about 15 MB
        self.cache_mb = float(cache_mb)
        self.analyses = AnalysisCache(cache_size, int(cache_mb * 2 ** 20), self.slots)
        self.images = LRU(4)                 # decoded images by (digest, max_side)
        self.pretrained = LRU(8, self.slots)  # ImageNet views by (digest, top_k)
        self._classifier = LRU(1, threading.Semaphore(1))
        self._digests = LRU(64)              # file digests by (path, size, mtime)
        self.max_file_bytes = int(max_file_mb * 2 ** 20)
        self.max_pixels = int(max_pixels)

    # ---- inputs ----------------------------------------------------------------------
    def _source(self, image) -> tuple[object, str, str]:
        """-> (source for read_image, digest, display name)."""
        if image is None or (isinstance(image, str) and not image.strip()):
            raise AppError("no image: upload, paste or drop one, or pick an example")
        if isinstance(image, dict):  # a Gradio FileData dict
            image = image.get("path") or image.get("url")
        if isinstance(image, (str, Path)):
            s = str(image)
            if s.startswith("data:"):
                try:
                    data = base64.b64decode(s.split(",", 1)[1], validate=False)
                except (IndexError, ValueError):
                    raise AppError("the pasted image is not valid base64 data") from None
                return self._bytes(data, "pasted image")
            path = Path(s)
            if not path.is_file():
                raise AppError(f"image file not found: {short(path.name)}")
            st = path.stat()
            self._check_size(st.st_size, path.name)
            stamp = (str(path), st.st_size, st.st_mtime_ns)
            digest = self._digests.get(stamp)  # a click need not hash the file again
            if digest is None:
                digest = digest_file(path)
                self._digests.put(stamp, digest)
            return path, digest, path.name
        if isinstance(image, (bytes, bytearray)):
            return self._bytes(bytes(image), "image")
        if isinstance(image, np.ndarray):
            return image, digest_array(image), "array"
        if hasattr(image, "tobytes") and hasattr(image, "mode"):  # a PIL image
            data = image.tobytes() + repr((image.size, image.mode)).encode()
            return image, digest_bytes(data), "image"
        raise AppError(f"unsupported image input of type {type(image).__name__}")

    def _bytes(self, data: bytes, name: str):
        self._check_size(len(data), name)
        return io.BytesIO(data), digest_bytes(data), name

    def _check_size(self, nbytes: int, name: str) -> None:
        if nbytes > self.max_file_bytes:
            raise AppError(f"{short(name)}: the file is {nbytes / 2**20:.1f} MB; the limit "
                           f"is {self.max_file_bytes / 2**20:.0f} MB")

    def read(self, image, max_side: int) -> ImageInfo:
        """``image`` (path, bytes, array, PIL image, FileData) as pixels capped at
        ``max_side``, recognised if it is an example (cached by content)."""
        source, digest, name = self._source(image)
        return self._read(source, digest, name, max_side)

    def _read(self, source, digest: str, name: str, max_side: int) -> ImageInfo:
        info = self.images.get((digest, max_side))
        if info is not None:
            return info
        if hasattr(source, "seek"):
            source.seek(0)
        try:
            loaded = read_image(source, max_side=max_side, name=short(name),
                                max_pixels=self.max_pixels)
        except ImageError as e:
            raise AppError(str(e)) from None
        except MemoryError:
            raise AppError(f"{short(name)}: not enough memory to decode this image") from None
        W, H = loaded.original_size
        if W * H > 10_000_000:  # a large decode was just freed: hand its pages back
            release_memory()
        arr = loaded.array
        h, w = arr.shape[:2]
        example = self.examples.get(digest)
        kind = example.kind if example else "upload"
        target = None
        if example is not None and example.mask is not None:
            target = resize_labels(example.mask, (h, w)).astype(np.int64)
        info = ImageInfo(digest, example.title if example else name, loaded.upright_size, arr,
                         list(loaded.notes), kind, target)
        self.images.put((digest, max_side), info)
        return info

    # ---- the one forward pass --------------------------------------------------------
    def model(self, spec) -> LoadedModel:
        return self.store.get(spec)

    def analysed(self, image, model=None, options: Options = Options(),
                 progress: Progress = None) -> CachedAnalysis:
        """The cached analysis of ``image`` by ``model`` (computed on first use);
        ``.info`` holds the :class:`LoadedModel` (``"model"``), the
        :class:`ImageInfo` (``"image"``) and the :class:`Options` (``"options"``)."""
        progress = progress or _noop
        loaded = self.model(model)
        source, digest, name = self._source(image)

        def compute() -> CachedAnalysis:
            progress(0.1, desc="reading the image")
            info = self._read(source, digest, name, options.max_side)
            progress(0.4, desc=f"forward pass of {loaded.name}")
            t0 = time.perf_counter()
            try:
                a = analyze_image(loaded, info.array, info.target,
                                  options=options.inference())
            except (MemoryError, torch.OutOfMemoryError):
                raise AppError("out of memory running the model: lower the resolution cap") \
                    from None
            return CachedAnalysis(a, {"model": loaded, "image": info, "options": options},
                                  time.perf_counter() - t0)

        key = (loaded.key, digest, options.key())
        computed = self.analyses.computed
        an = self.analyses.get(key, compute)
        if self.analyses.computed != computed:
            trim_memory()  # the pass's temporaries and any evicted analysis: back to the OS
        return an

    # ---- views -----------------------------------------------------------------------
    def model_info(self, spec) -> ModelInfo:
        """Load ``spec`` (a listed name, or a path when paths are allowed); its card in
        words (:meth:`LoadedModel.describe`)."""
        m = self.model(spec)
        return ModelInfo(m.name, escape(m.describe()), list(m.classes))

    def banner(self, an: CachedAnalysis) -> str:
        """What the model is and was trained on, what this image is, and which view
        answers which question for it, said plainly."""
        m: LoadedModel = an.info["model"]
        info: ImageInfo = an.info["image"]
        a = an.analysis
        stand_in = " ⚠️ A random-weight stand-in: its predictions mean nothing." \
            if m.card.get("stand_in") else ""
        trained = (f"Fine-tuned on: {escape(m.trained_on.rstrip('.'))}." if m.trained_on
                   else "Its card does not say what it was trained on.")
        lines = [f"**Model** `{escape(m.name)}`: {escape(m.description())}. {trained}{stand_in}"]
        h, w = a.input_size
        img = f"**Image** {escape(info.name)}, {info.size[0]}×{info.size[1]} px"
        if (w, h) != tuple(info.size):
            img += f", analysed at {w}×{h}"
        if info.notes:
            img += " (" + "; ".join(escape(n) for n in info.notes) + ")"
        lines.append(img + ".")
        if m.is_scenes_model:
            k = m.num_classes
            if info.kind == "photo":
                lines.append(f"⚠️ **This is a real photograph; this model was fine-tuned only "
                             f"on the built-in procedural scenes ({k} classes) and has never "
                             "seen one**, so its labels here are not meaningful. **For a "
                             "photo, the *ImageNet features* tab answers what the pretrained "
                             "backbone recognises**; the other tabs show how this model's "
                             "internals respond.")
            elif info.kind == "upload":
                lines.append(f"⚠️ If this is a photograph or any real image: this model was "
                             f"fine-tuned only on the built-in procedural scenes ({k} "
                             "classes), so its labels will not be meaningful; the *ImageNet "
                             "features* tab shows what the pretrained backbone recognises in "
                             "it. The scene examples show what the model learned.")
            else:
                lines.append("This is a built-in scene the model did not train on (a held-out "
                             "split); its ground truth is known, so the tabs score it.")
        return "\n\n".join(lines)

    def segment(self, image, model=None, options: Options = Options(), opacity: float = 0.5,
                progress: Progress = None) -> SegmentView:
        an = self.analysed(image, model, options, progress)
        a, m, info = an.analysis, an.info["model"], an.info["image"]
        alpha = float(np.clip(opacity, 0.0, 1.0))
        over = overlay(a.image, a.pred, m.palette, alpha=alpha) if alpha > 0 else a.image
        k = m.num_classes
        counts = np.bincount(a.pred.ravel(), minlength=k)[:k]
        conf = np.bincount(a.pred.ravel(), weights=a.confidence.ravel(), minlength=k)[:k]
        present = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c] > 0]
        headers = ["class", "area %", "mean confidence %"]
        scores = an.derive("scores", lambda: None if a.target is None else
                           segmentation_scores(a.pred, a.target, k))
        if scores is not None:
            headers.append("IoU % (ground truth)")
        rows = []
        for c in present:
            row = [m.classes[c], round(100.0 * float(counts[c]) / float(counts.sum()), 2),
                   round(100.0 * float(conf[c]) / float(counts[c]), 1)]
            if scores is not None:
                v = float(scores.IoU[c])
                row.append(round(v, 1) if np.isfinite(v) else None)
            rows.append(row)
        source = ("the average of the test-time views (sliding window / flip)"
                  if a.pred_source == "probs" else "one forward pass")
        parts = [f"Analysed at {a.input_size[1]}×{a.input_size[0]} px "
                 f"({escape(options.describe())}); prediction from {source} "
                 f"({an.seconds:.2f} s, then cached)."]
        if scores is not None:
            parts.append(f"Against this scene's ground truth: pixel accuracy "
                         f"**{scores.aAcc:.1f}%**, mIoU **{scores.mIoU:.1f}** (this image "
                         "only).")
        return SegmentView(over, a.pred, tuple(info.size), list(m.classes), m.palette, present,
                           rows, headers, self.banner(an), " ".join(parts))

    def class_tokens(self, image, model=None, options: Options = Options(),
                     class_name=None, progress: Progress = None) -> ClassTokenView:
        an = self.analysed(image, model, options, progress)
        a, m = an.analysis, an.info["model"]
        k = self._class_index(m, class_name, a.pred)
        sim = an.derive(("similarity", k), lambda: class_similarity(a, [k]))
        high = None if sim.high is None else sim.high[0]
        up = sim.up[0]
        vmax = float(max(np.abs(up).max(), 0.0 if high is None else np.abs(high).max(), 1e-6))

        def draw(v):
            return heatmap_overlay(a.image, v, "RdBu_r", alpha=0.7, vmin=-vmax, vmax=vmax)

        name = m.classes[k]
        lines = [f"Cosine similarity of every pixel's feature to the class token "
                 f"E<sub>{escape(name)}</sub> (red: like the token, blue: unlike; one colour "
                 f"scale −{vmax:.2f}..{vmax:.2f} for both maps)."]
        mask = a.pred == k
        if high is not None:
            lines.append(f"F_high (stride 32, one vector per 32 px cell) and F_up (stride "
                         f"{a.output_stride}) are classified by the **same** tokens, so where "
                         f"F_up looks like E<sub>{escape(name)}</sub> it has inherited the "
                         "high-level decision.")
        else:
            lines.append("This model has no HFG branch (SemanticFPN): there is no F_high, "
                         "only its own classifier's weights for F_up.")
        if mask.any() and (~mask).any():
            lines.append(f"Mean similarity of F_up inside / outside the pixels predicted as "
                         f"{escape(name)}: {up[mask].mean():.3f} / {up[~mask].mean():.3f}.")
        return ClassTokenView(None if high is None else draw(high), draw(up), vmax, name,
                              list(m.classes), " ".join(lines))

    def guidance(self, image, model=None, options: Options = Options(),
                 progress: Progress = None) -> GuidanceView:
        an = self.analysed(image, model, options, progress)
        a, m = an.analysis, an.info["model"]
        if not a.has_high:
            return GuidanceView(None, None, None, None, None, [],
                                f"`{escape(m.name)}` is a SemanticFPN baseline: it has no HFG "
                                "branch, so there is no guidance to compare. Pick an HFGD model.")
        # nothing here depends on the call: drawn once per analysis, reused on every
        # tab visit and image change
        return an.derive("guidance_view", lambda: self._guidance_view(an))

    @staticmethod
    def _guidance_view(an: CachedAnalysis) -> GuidanceView:
        a, m = an.analysis, an.info["model"]
        pca = an.derive("pca", lambda: shared_pca(a))
        agree = an.derive("agreement", lambda: feature_agreement(a))
        changes = an.derive("changes", lambda: decision_changes(a))
        cos = heatmap_overlay(a.image, agree.cosine_image, "RdBu_r", alpha=0.7, vmin=-1, vmax=1)
        changed_img = outcome_rgb(a.image, changes, 0.75)
        evr = pca.explained_variance_ratio
        lines = [f"**Shared PCA**: one basis fitted on F_high and F_up together, so the same "
                 f"colour means the same feature in both (components explain "
                 f"{', '.join(f'{100 * v:.0f}%' for v in evr)} of the variance).",
                 f"**Agreement**: mean cosine of F_up with the upsampled F_high "
                 f"**{agree.mean_cosine:.3f}**; the two branches' argmax agree on "
                 f"**{100 * agree.agree_fraction:.1f}%** of the pixels.",
                 f"**Changed decisions**: the upsampler changed the HFG branch's label on "
                 f"**{100 * changes.fraction_changed:.1f}%** of the pixels"]
        if changes.outcome is not None:
            c = changes.counts
            legend = [(rgb, f"{text} ({c[key]} px)") for (rgb, text), key in
                      zip(OUTCOME_LEGEND, ("fixed", "broke", "both_wrong"))]
            lines[-1] += (f" (against the ground truth: fixed {c['fixed']}, broke "
                          f"{c['broke']}, both wrong {c['both_wrong']} pixels).")
        else:
            legend = [(CHANGED_COLOR, f"changed ({changes.counts['changed']} px; no ground "
                                      "truth for this image)")]
            lines[-1] += " (no ground truth for this image, so not scored)."
        return GuidanceView(to_uint8(pca.high_image), to_uint8(pca.up_image),
                            overlay(a.image, a.pred_high, m.palette, alpha=0.6), cos,
                            changed_img, legend, "\n\n".join(lines))

    def attention(self, image, model=None, options: Options = Options(), x=None, y=None,
                  space: str = "image", progress: Progress = None, tile: int = 176,
                  scale: int = 1) -> AttentionView:
        """Where the CAE token under pixel (x, y) attends.

        Args:
            x, y: the query pixel; None: the image centre.
            space: ``"image"``: (x, y) in the uploaded image's pixels (upright);
                ``"analysed"``: in the analysed (resolution-capped) image;
                ``"display"``: in the analysed image upscaled by ``scale`` (what a
                click on the displayed picture gives).
            tile: longer side of each attention tile, pixels.
            scale: nearest-neighbour upscaling of the returned ``marked`` picture.
        """
        an = self.analysed(image, model, options, progress)
        a, m = an.analysis, an.info["model"]
        h, w = a.input_size
        scale = max(1, int(scale))
        if not a.has_attention:
            return AttentionView(tiles.upscale(a.image, scale), scale, [], None,
                                 f"`{escape(m.name)}` has no CAE attention (SemanticFPN has no "
                                 "HFG branch; an HFGD with cae_depth 0 has no attention).", None)
        if x is None or y is None or x == "" or y == "":
            xa, ya = w / 2, h / 2
        else:
            try:
                xa, ya = float(x), float(y)
            except (TypeError, ValueError):
                raise AppError(f"x and y must be numbers, got {short(x)!r}, {short(y)!r}") \
                    from None
            if not (np.isfinite(xa) and np.isfinite(ya)):
                raise AppError("x and y must be finite numbers")
            if space == "image":
                W, H = an.info["image"].size
                if not (0 <= xa < W and 0 <= ya < H):
                    raise AppError(f"pixel ({short(x)}, {short(y)}) is outside the {W}×{H} "
                                   f"image: x must be 0..{W - 1}, y 0..{H - 1}")
                xa, ya = xa * w / W, ya * h / H
            elif space == "display":
                xa, ya = xa / scale, ya / scale
            elif space != "analysed":
                raise AppError(f"space must be 'image', 'analysed' or 'display', got "
                               f"{short(space)!r}")
        # inside the image: pixel i covers [i, i + 1)
        xa, ya = float(np.clip(xa, 0, w - 1e-3)), float(np.clip(ya, 0, h - 1e-3))
        maps = a.attention(xa, ya)
        r, c = maps.query_token
        big = tiles.upscale(a.image, scale)
        marked = mark_point(tiles.outline_cell(big, r, c, HIGH_STRIDE * scale,
                                               thickness=max(1, scale)),
                            (xa + 0.5) * scale - 0.5, (ya + 0.5) * scale - 0.5,
                            radius=4 + 2 * scale)
        gh, gw = maps.grid.shape[-2:]
        small = an.derive(("small", tile), lambda: tiles.resize_rgb(a.image, tile))
        th, tw = small.shape[:2]
        pictures = tiles.cells_overlay(
            small, np.concatenate([maps.grid, maps.grid.mean(1, keepdims=True)], 1),
            tiles.pixel_rows(th, h, HIGH_STRIDE, gh), tiles.pixel_rows(tw, w, HIGH_STRIDE, gw))
        sx, sy = xa * tw / w, ya * th / h
        rows = [[(f"layer {l + 1}, head {hd + 1}" if hd < maps.num_heads
                  else f"layer {l + 1}, head mean", mark_point(pictures[l, hd], sx, sy, radius=3))
                 for hd in range(maps.num_heads + 1)]
                for l in range(maps.num_layers)]
        roll = mark_point(tiles.cells_overlay(
            a.image, maps.grid_rollout, tiles.pixel_rows(h, h, HIGH_STRIDE, gh),
            tiles.pixel_rows(w, w, HIGH_STRIDE, gw)), xa, ya)
        pad = float(maps.padding_mass.mean())
        W, H = an.info["image"].size
        # the uploaded pixel holding the query (pixel i covers [i, i + 1))
        qx = min(int(np.floor(xa * W / w + 1e-6)), W - 1)
        qy = min(int(np.floor(ya * H / h + 1e-6)), H - 1)
        text = (f"Query pixel ({int(xa)}, {int(ya)}) of the analysed {w}×{h} image (pixel "
                f"({qx}, {qy}) of the uploaded one) is in CAE token "
                f"(row {r}, column {c}) of the {gh}×{gw} stride-32 grid (outlined). "
                f"Each panel is one attention row over all tokens, drawn over the image and "
                f"scaled from its own minimum to its maximum (brighter: attended more); the "
                f"rollout multiplies the head-averaged layers with the residual path. "
                f"{100 * pad:.1f}% of the attention (mean over heads) went to padding tokens, "
                f"which are not drawn.")
        return AttentionView(marked, scale, rows, roll, text, (xa, ya), (qx, qy))

    def compare(self, image, options: Options = Options(), opacity: float = 0.5,
                progress: Progress = None) -> CompareView:
        """The same image through the bundled HFGD sg-on, sg-off and SemanticFPN models."""
        progress = progress or _noop
        installed = set(self.store.names())
        names = [n for n in zoo.BUNDLED if n in installed]
        if not names:
            raise AppError("the stop-gradient comparison needs the bundled models "
                           f"({', '.join(zoo.BUNDLED)}); none is installed")
        overlays, titles, runs = {}, {}, {}
        for i, name in enumerate(zoo.BUNDLED):
            titles[name] = VARIANTS[zoo.BUNDLED[name]][0]
            if name not in installed:
                overlays[name] = None
                continue
            progress(i / len(zoo.BUNDLED), desc=f"model {i + 1} of {len(zoo.BUNDLED)}: {name}")
            an = self.analysed(image, name, options)
            runs[name] = an
            a = an.analysis
            overlays[name] = overlay(a.image, a.pred, an.info["model"].palette,
                                     alpha=float(np.clip(opacity, 0, 1)))
        progress(1.0, desc="done")
        ref = runs.get(zoo.DEFAULT_MODEL)
        first = next(iter(runs.values()))
        h, w = first.analysis.input_size
        lines = [f"**Image** {escape(first.info['image'].name)}, analysed at {w}×{h} px. Each "
                 "number below is **one bundled model** (one training run; its card's "
                 "validation mIoU), not the experiment's mean over seeds (further down)."]
        for name, an in runs.items():
            m: LoadedModel = an.info["model"]
            s = f"**{titles[name]}** (`{name}`): "
            if m.card.get("stand_in"):
                s += "a random-weight stand-in, no validation mIoU"
            else:
                miou = m.val_miou()
                n = m.metrics.get("val_images")
                s += ("validation mIoU of this model " + (f"**{miou:.1f}**" if miou is not None
                                                          else "not on its card")
                      + (f" ({n} held-out scenes)" if miou is not None and n else ""))
            scores = an.derive("scores", lambda an=an: None if an.analysis.target is None else
                               segmentation_scores(an.analysis.pred, an.analysis.target,
                                                   an.info["model"].num_classes))
            if scores is not None:
                s += f"; on this scene alone mIoU {scores.mIoU:.1f}"
            if ref is not None and an is not ref:
                same = float((an.analysis.pred == ref.analysis.pred).mean())
                s += f"; agrees with the sg-on model on {100 * same:.1f}% of the pixels"
            lines.append(s + ".")
        missing = [n for n in zoo.BUNDLED if n not in installed]
        if missing:
            lines.append(f"Not installed: {', '.join(missing)}.")
        stand_in = any(an.info["model"].card.get("stand_in") for an in runs.values())
        return CompareView(overlays, titles, "\n\n".join(lines), experiment_text(stand_in))

    def imagenet(self, image, top_k: int = 5, progress: Progress = None) -> PretrainedView:
        """What the pretrained backbone knows before any fine-tuning: its own ImageNet
        classifier's top classes for the image, and where in the image each stride-32
        cell's feature looks like each of those classes' tokens (the classifier's rows)."""
        progress = progress or _noop
        try:
            top_k = int(top_k)
        except (TypeError, ValueError):
            raise AppError(f"top_k must be a whole number, got {short(top_k)!r}") from None
        if not 1 <= top_k <= 10:
            raise AppError(f"top_k must be between 1 and 10, got {top_k}")
        source, digest, name = self._source(image)

        def compute() -> PretrainedView:
            progress(0.2, desc="reading the image")
            info = self._read(source, digest, name, IMAGENET_SIDE)
            progress(0.5, desc="the ImageNet classifier")
            clf = self._classifier.get_or_compute(
                IMAGENET_BACKBONE, lambda: imagenet_classifier(IMAGENET_BACKBONE))
            v = analyze_imagenet(clf, info.array, IMAGENET_BACKBONE, IMAGENET_SIDE, top_k)
            vmax = float(max(np.abs(v.cosine).max(), 1e-6))
            maps = [(f"{i + 1}. {n}, p = {p:.2f}",
                     heatmap_overlay(v.image, v.cosine[i], "RdBu_r", alpha=0.7, vmin=-vmax,
                                     vmax=vmax))
                    for i, (n, p) in enumerate(zip(v.names, v.probs))]
            h, w = v.image.shape[:2]
            gh, gw = v.grid_cosine.shape[-2:]
            caption = (
                f"**Before any fine-tuning**: the ImageNet-1k classifier of "
                f"`{IMAGENET_BACKBONE}` (weights from the pip package "
                f"`{escape(PACKAGED[IMAGENET_BACKBONE].pip)}`, "
                f"{escape(PACKAGED[IMAGENET_BACKBONE].license)}; the backbone of the default "
                f"models) on {escape(info.name)} at {w}×{h} px. The "
                "classifier averages the last feature map and multiplies it by one row per "
                "class: those rows are class tokens trained only with high-level features, "
                "HFGD's premise. Each map shows, for every 32 px cell "
                f"({gh}×{gw} cells), the cosine similarity of the cell's feature to that "
                f"class's row (red: alike; one scale −{vmax:.2f}..{vmax:.2f} for all maps). "
                "This answers *what do the pretrained features recognise in a photo*; the "
                "other tabs show models fine-tuned on the built-in scenes.")
            return PretrainedView(v.image, list(zip(v.names, [float(p) for p in v.probs])),
                                  maps, vmax, caption)

        view = self.pretrained.get((digest, top_k))
        if view is None:
            view = self.pretrained.get_or_compute((digest, top_k), compute)
            trim_memory()
        return view

    # ---- helpers ---------------------------------------------------------------------
    @staticmethod
    def _class_index(m: LoadedModel, class_name, pred) -> int:
        if class_name is None or class_name == "":
            counts = np.bincount(pred.ravel(), minlength=m.num_classes)
            return int(np.argmax(counts))
        if isinstance(class_name, (int, np.integer)) and 0 <= class_name < m.num_classes:
            return int(class_name)
        name = str(class_name).strip()
        if name in m.classes:
            return list(m.classes).index(name)
        if name.isdigit() and int(name) < m.num_classes:
            return int(name)
        raise AppError(f"unknown class {short(name)!r} for {m.name}; its classes: "
                       f"{', '.join(m.classes)}")


def experiment_text(stand_in_cards: bool = False) -> str:
    """The stop-gradient experiment's stored results in words: the regime map
    (``describe_regime_map``: which regime favours which variant, and the sign count over
    every regime), then each regime
    (:func:`hfgd_lab.experiments.stop_gradient.stored_results` + ``describe_summary``),
    each labelled as a mean over seeds; results read from a stand-in's card
    (``stand_in_cards``) are said to be made up."""
    try:
        results = stored_results()
    except (OSError, ValueError, KeyError) as e:
        return f"The stored stop-gradient results could not be read ({type(e).__name__})."
    if not results:
        return "No stored stop-gradient results (see docs/stop_gradient.md)."
    parts = []
    if any(r.get("name") != "card" for r in results):
        try:
            parts.append("**The regime map in words** (val mIoU: **mean over seeds**; "
                         "differences paired by seed, with 95 % t-intervals):\n\n"
                         + escape(describe_regime_map(results)))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            parts.append(f"(regime map unreadable: {type(e).__name__})")
    for r in results:
        try:
            words = describe_summary(r["summary"])
        except (KeyError, TypeError, ValueError, IndexError) as e:
            words = f"(summary unreadable: {type(e).__name__})"
        source = str(r["source"])
        made_up = stand_in_cards and source.startswith("card of")
        question = f" {escape(r['question'])}" if r.get("question") else ""
        parts.append(("⚠️ **Made-up numbers from a random-weight stand-in's card.** "
                      if made_up else "")
                     + f"**{escape(r['title'])}**:{question} {escape(r['regime'])}. Every "
                     f"number here is a **mean over seeds** of separate fine-tuning runs "
                     f"(source: `{escape(Path(source).name)}`), not one of the bundled "
                     f"models above.\n\n{words}")
    return "\n\n".join(parts)


def trim_memory() -> None:
    """Hand freed heap pages back to the OS (glibc's ``malloc_trim``; well under a
    millisecond). Without it the memory of evicted analyses and of each forward pass's
    temporaries stays in the process, and a server's RSS keeps creeping up."""
    try:
        _LIBC.malloc_trim(0)
    except AttributeError:  # not glibc: nothing to do
        pass


def release_memory() -> None:
    """Return freed heap pages to the OS (glibc keeps large freed blocks otherwise, so a
    server's RSS would stay at its peak after one huge image)."""
    gc.collect()
    trim_memory()
