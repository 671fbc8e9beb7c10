"""The app's functions, free of Gradio: plain values in, arrays and text out.

:class:`App` holds the loaded models and a small LRU of analysed images keyed by
``(model, image digest, options)``: the first request for an image runs the model once
(:func:`hfgd_lab.analysis.analyze_image`, plus the augmented views when sliding window
or flip is on) and every view -- segmentation, class tokens, guidance, attention for
any clicked pixel -- is derived from that stored pass. The stop-gradient comparison
runs the three bundled models once each per image, cached the same way.

Every handler raises :class:`~hfgd_lab.app.state.AppError` with a message for the
user when the input cannot be used; :mod:`hfgd_lab.app.ui` shows it as a Gradio error.
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..analysis.image import HIGH_STRIDE, resize_labels
from ..imageio import ImageError, LoadedImage, read_image
from ..viz import (OUTCOME_COLORS, heatmap_overlay, mark_point, outcome_rgb, overlay,
                   to_uint8)
from . import render
from .render import escape
from .state import (SCENE_VARIANTS, AppError, LRU, ModelEntry, ModelStore, Options,
                    digest_array, digest_bytes, digest_file)

__all__ = ["App", "ImageInfo", "Analysed", "SegmentView", "ClassTokenView",
           "GuidanceView", "AttentionView", "CompareView", "ModelInfo"]

Progress = Optional[Callable]


def _noop(*_, **__):
    pass


# ---- what the views return -----------------------------------------------------------

@dataclass
class ImageInfo:
    """An input image as read (at one resolution cap)."""

    digest: str                  # sha1 of the file (or array) as given
    name: str
    size: tuple                  # (W, H) upright, as uploaded (after EXIF rotation)
    array: np.ndarray            # (h, w, 3) uint8 after the resolution cap
    notes: list
    kind: str                    # "scene", "photo" (a bundled example) or "upload"
    target: Optional[np.ndarray] = None   # ground truth of a scene example, at (h, w)


@dataclass(eq=False)
class Analysed:
    """One forward pass of one model on one image with one set of options."""

    analysis: object             # hfgd_lab.analysis.ImageAnalysis
    model: ModelEntry
    image: ImageInfo
    options: Options
    seconds: float               # time the forward pass(es) and post-processing took
    derived: dict = field(default_factory=dict)   # views computed from it, kept

    def derive(self, name, fn):
        if name not in self.derived:
            self.derived[name] = fn()
        return self.derived[name]

    def scores(self):
        """Scores against the image's ground truth (``analysis.SegScores``), or None."""
        a = self.analysis
        if a.target is None:
            return None
        from ..analysis import segmentation_scores
        return self.derive("scores", lambda: segmentation_scores(
            a.pred, a.target, self.model.num_classes))

    def to_analysed(self, x: float, y: float) -> tuple[float, float]:
        """(x, y) in the uploaded image's pixels -> the analysed image's pixels."""
        w0, h0 = self.image.size
        h, w = self.analysis.input_size
        return x * w / w0, y * h / h0

    def to_image(self, x: float, y: float) -> tuple[int, int]:
        """The inverse: analysed pixels -> the uploaded image's (whole) pixels."""
        w0, h0 = self.image.size
        h, w = self.analysis.input_size
        return round(x * w0 / w), round(y * h0 / h)


@dataclass
class SegmentView:
    overlay: np.ndarray
    legend_html: str
    areas: list                  # rows: class, area %, mean confidence % (, IoU %)
    headers: list
    banner: str
    summary: str


@dataclass
class ClassTokenView:
    high: Optional[np.ndarray]
    up: np.ndarray
    colorbar: np.ndarray
    class_name: str
    classes: list
    caption: str


@dataclass
class GuidanceView:
    pca_high: Optional[np.ndarray]
    pca_up: Optional[np.ndarray]
    pred_high: Optional[np.ndarray]
    cosine: Optional[np.ndarray]
    changes: Optional[np.ndarray]
    stats: str


@dataclass
class AttentionView:
    marked: np.ndarray           # the analysed image, query cell outlined (click here)
    grid: Optional[np.ndarray]   # rows: layers; columns: heads, then the head average
    rollout: Optional[np.ndarray]
    caption: str
    query: Optional[tuple]       # (x, y) in the analysed image's pixels
    query_image: Optional[tuple] = None   # the same, in the uploaded image's pixels


@dataclass
class CompareView:
    overlays: dict               # bundled name -> overlay (None when not installed)
    table: str
    caption: str


@dataclass
class ModelInfo:
    key: str
    label: str
    markdown: str
    classes: list


# ---- the app -------------------------------------------------------------------------

class App:
    """Models, caches and every handler of the app.

    Args:
        store: the :class:`ModelStore` (default: bundled models, checkpoint paths on).
        examples: :class:`~hfgd_lab.app.examples.Example` list; an upload that is one of
            them is recognised (scene ground truth, "this is a photo").
        cache_size: analysed (model, image, options) entries kept.
        heavy_slots: decodes / forward passes allowed at the same time (memory bound).
        max_file_mb: refuse image files larger than this.
    """

    def __init__(self, store: Optional[ModelStore] = None, examples=(), cache_size: int = 6,
                 heavy_slots: int = 1, max_file_mb: float = 10.0, cache_mb: float = 1024):
        import threading
        self.store = store or ModelStore()
        self.examples = {e.digest: e for e in examples}
        slots = threading.Semaphore(heavy_slots)
        # by count and by bytes: one analysis at a 2048 px cap holds ~0.75 GB (its CAE
        # attention alone is 2 x 4 x 4096^2 floats), at 512 px about 15 MB
        self.analyses = LRU(cache_size, slots, max_bytes=int(cache_mb * 2 ** 20),
                            sizeof=_analysed_bytes)
        self.images = LRU(4, slots)     # decoded images by (digest, max_side)
        self._digests = LRU(64)         # file digests by (path, size, mtime)
        self.max_file_bytes = int(max_file_mb * 1024 * 1024)

    # ---- inputs ----------------------------------------------------------------------
    def _source(self, image) -> tuple[object, str, str]:
        """-> (source for read_image, digest, display name)."""
        if image is None or (isinstance(image, str) and not image.strip()):
            raise AppError("no image: upload, paste or drop one, or pick an example")
        if isinstance(image, dict):  # a Gradio FileData dict (e.g. from another client)
            image = image.get("path") or image.get("url")
        if isinstance(image, (str, Path)):
            s = str(image)
            if s.startswith("data:"):
                import base64
                try:
                    data = base64.b64decode(s.split(",", 1)[1], validate=False)
                except (IndexError, ValueError):
                    raise AppError("the pasted image is not valid base64 data") from None
                return self._check_size(data, len(data)), digest_bytes(data), "pasted image"
            path = Path(s)
            if not path.is_file():
                raise AppError(f"image file not found: {path.name}")
            st = path.stat()
            self._check_size(None, st.st_size)
            stamp = (str(path), st.st_size, st.st_mtime_ns)
            digest = self._digests.get(stamp)  # a click need not hash the file again
            if digest is None:
                digest = digest_file(path)
                self._digests.put(stamp, digest)
            return path, digest, path.name
        if isinstance(image, (bytes, bytearray)):
            data = bytes(image)
            return self._check_size(data, len(data)), digest_bytes(data), "image"
        if isinstance(image, np.ndarray):
            return image, digest_array(image), "array"
        if hasattr(image, "tobytes") and hasattr(image, "mode"):  # a PIL image
            return image, digest_bytes(image.tobytes() + repr((image.size, image.mode)).encode()), \
                "image"
        raise AppError(f"unsupported image input of type {type(image).__name__}")

    def _check_size(self, data, nbytes: int):
        if nbytes > self.max_file_bytes:
            raise AppError(f"the file is {nbytes / 2**20:.1f} MB; the limit is "
                           f"{self.max_file_bytes / 2**20:.0f} MB")
        return io.BytesIO(data) if data is not None else None

    def _decode(self, source, digest, name, max_side) -> ImageInfo:
        try:
            loaded: LoadedImage = read_image(source, max_side=max_side, name=name)
        except ImageError as e:
            raise AppError(str(e)) from None
        except MemoryError:
            raise AppError(f"{name}: not enough memory to decode this image") from None
        W, H = loaded.original_size
        if W * H > 50_000_000:  # a huge decode was just freed: hand its pages back
            _release_memory()
        arr = loaded.array
        h, w = arr.shape[:2]
        upright = loaded.upright_size
        example = self.examples.get(digest)
        kind = example.kind if example else "upload"
        target = None
        if example is not None and example.mask is not None:
            target = resize_labels(example.mask, (h, w)).astype(np.int64)
        display = example.name if example else name
        return ImageInfo(digest, display, upright, arr, list(loaded.notes), kind, target)

    # ---- the one forward pass --------------------------------------------------------
    def analysed(self, image, model, options: Options = Options(),
                 progress: Progress = None) -> Analysed:
        """The cached analysis of ``image`` by ``model`` (computed on first use)."""
        progress = progress or _noop
        entry = self.model(model)
        source, digest, name = self._source(image)
        key = (entry.key, digest, options.key())

        def compute():
            progress(0.1, desc="reading the image")
            info = self.images.get((digest, options.max_side))
            if info is None:
                info = self._decode(source, digest, name, options.max_side)
                self.images.put((digest, options.max_side), info)
            return self._run(entry, info, options, progress)

        return self.analyses.get_or_compute(key, compute)

    def _run(self, entry: ModelEntry, info: ImageInfo, options: Options,
             progress: Progress) -> Analysed:
        import torch

        from ..analysis import analyze_image, normalize_image
        from ..engine.inference import InferenceOptions, predict_probs
        from ..models import resize_logits

        t0 = time.perf_counter()
        model = entry.model
        probs = outputs = None
        try:
            dev = next(model.parameters()).device
            if options.sliding:
                progress(0.3, desc="sliding window views")
                opts = InferenceOptions(mode="slide", crop_size=[options.window] * 2,
                                        flip=options.flip)
                probs = predict_probs(model, normalize_image(info.array).to(dev), opts)[0].cpu()
            progress(0.6, desc=f"forward pass of {entry.label}")
            if options.flip and not options.sliding:
                # the analysed pass is also the plain view: only the mirrored one is extra
                x = normalize_image(info.array).to(dev)
                with torch.no_grad():
                    outputs = model(x, return_attention=True)
                plain = resize_logits(outputs.logits, outputs.input_size,
                                      outputs.output_stride).float().softmax(1)
                mirrored = predict_probs(model, x.flip(-1)).flip(-1)
                probs = ((plain + mirrored) / 2)[0].cpu()
            a = analyze_image(model, info.array, info.target, outputs=outputs, probs=probs)
        except (MemoryError, torch.OutOfMemoryError):
            raise AppError("out of memory running the model: lower the resolution cap") \
                from None
        progress(0.95, desc="drawing")
        return Analysed(a, entry, info, options, time.perf_counter() - t0)

    def model(self, spec) -> ModelEntry:
        return self.store.get(spec or self.store.default())

    # ---- views -----------------------------------------------------------------------
    def model_info(self, spec) -> ModelInfo:
        """Load ``spec`` (a bundled name or a checkpoint path) and describe it."""
        e = self.model(spec)
        lines = [f"**Model `{escape(e.label)}`**: {escape(e.description())}, "
                 f"{e.num_classes} classes, backbone `{escape(e.model.cfg.backbone)}`, "
                 f"output stride {e.model.cfg.output_stride}."]
        lines.append(_trained_on_line(e))
        miou = e.val_miou()
        if miou is not None:
            lines.append(f"Validation mIoU from its card: **{miou:.1f}**.")
        return ModelInfo(e.key, e.label, "\n\n".join(lines), list(e.classes))

    def banner(self, an: Analysed) -> str:
        """What the model was trained on and what this image is, said plainly."""
        e, info, a = an.model, an.image, an.analysis
        lines = [f"**Model `{escape(e.label)}`** ({escape(e.description())}). "
                 + _trained_on_line(e)]
        h, w = a.input_size
        size = f"{info.size[0]}×{info.size[1]}"
        img = f"**Image** {escape(info.name)}, {size} px"
        if (w, h) != tuple(info.size):
            img += f", analysed at {w}×{h}"
        if info.notes:
            img += " (" + "; ".join(escape(n) for n in info.notes) + ")"
        lines.append(img + ".")
        if e.is_scenes_model:
            if info.kind == "photo":
                lines.append("⚠️ **This is a real photograph, and this model has never seen "
                             "one**: it was trained only on the built-in procedural scenes, "
                             "so its labels here are not meaningful. The demo still runs: "
                             "the tabs show how its internals respond to the photo.")
            elif info.kind == "upload":
                lines.append("⚠️ If this is a photograph or any real image: this model was "
                             "trained only on the built-in procedural scenes and never saw a "
                             "photograph, so its labels will not be meaningful. The internals "
                             "are still worth looking at; the scene examples show what it "
                             "learned.")
            else:
                lines.append("This is a built-in scene the model did not train on (a held-out "
                             "split); its ground truth is known, so the tabs score it.")
        return "\n\n".join(lines)

    def segment(self, image, model=None, options: Options = Options(), opacity: float = 0.5,
                progress: Progress = None) -> SegmentView:
        an = self.analysed(image, model, options, progress)
        a, e = an.analysis, an.model
        alpha = float(np.clip(opacity, 0.0, 1.0))
        over = overlay(a.image, a.pred, e.palette, alpha=alpha) if alpha > 0 else a.image
        k = e.num_classes
        counts = np.bincount(a.pred.ravel(), minlength=k)[:k]
        conf = np.bincount(a.pred.ravel(), weights=a.confidence.ravel(), minlength=k)[:k]
        present = [int(c) for c in np.argsort(-counts) if counts[c] > 0]
        headers = ["class", "area %", "mean confidence %"]
        scores = an.scores()
        iou = None if scores is None else scores.IoU
        if scores is not None:
            headers.append("IoU % (ground truth)")
        rows = []
        for c in present:
            row = [e.classes[c], round(100.0 * float(counts[c]) / float(counts.sum()), 2),
                   round(100.0 * float(conf[c]) / float(counts[c]), 1)]
            if iou is not None:
                v = float(iou[c])
                row.append(round(v, 1) if np.isfinite(v) else None)
            rows.append(row)
        source = "the augmented views" if a.pred_source == "probs" else "one forward pass"
        parts = [f"{a.input_size[1]}×{a.input_size[0]} px, {escape(options.describe())}; "
                 f"prediction from {source} ({an.seconds:.2f} s, then cached)."]
        if scores is not None:
            parts.append(f"Against this scene's ground truth: pixel accuracy "
                         f"**{scores.aAcc:.1f}%**, mIoU **{scores.mIoU:.1f}**.")
        return SegmentView(over, render.legend_html(e.classes, e.palette, present), rows,
                           headers, self.banner(an), " ".join(parts))

    def class_tokens(self, image, model=None, options: Options = Options(),
                     class_name=None, progress: Progress = None) -> ClassTokenView:
        from ..analysis import class_similarity
        an = self.analysed(image, model, options, progress)
        a, e = an.analysis, an.model
        k = self._class_index(e, class_name, a.pred)
        sim = an.derive(("similarity", k), lambda: class_similarity(a, [k]))
        high = None if sim.high is None else sim.high[0]
        up = sim.up[0]
        m = float(max(np.abs(up).max(), 0.0 if high is None else np.abs(high).max(), 1e-6))
        draw = lambda v: heatmap_overlay(a.image, v, "RdBu_r", alpha=0.7, vmin=-m, vmax=m)
        name = e.classes[k]
        lines = [f"Cosine similarity of every pixel's feature to the class token "
                 f"E<sub>{escape(name)}</sub> (red: like the token, blue: unlike; one colour "
                 f"scale ±{m:.2f} for both)."]
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
        return ClassTokenView(None if high is None else draw(high), draw(up),
                              render.colorbar("RdBu_r", -m, m, "cosine"), name,
                              list(e.classes), " ".join(lines))

    def guidance(self, image, model=None, options: Options = Options(),
                 progress: Progress = None) -> GuidanceView:
        an = self.analysed(image, model, options, progress)
        a, e = an.analysis, an.model
        if not a.has_high:
            return GuidanceView(None, None, None, None, None,
                                f"`{escape(e.label)}` is a SemanticFPN baseline: it has no HFG "
                                "branch, so there is no guidance to compare. Pick an HFGD model.")
        # nothing here depends on the call: drawn once per analysis, reused on every
        # tab visit and image change
        return an.derive("guidance_view", lambda: self._guidance_view(an))

    def _guidance_view(self, an: Analysed) -> GuidanceView:
        from ..analysis import decision_changes, feature_agreement, shared_pca
        a, e = an.analysis, an.model
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
            lines[-1] += (f" (ground truth: <span style='color:rgb{OUTCOME_COLORS[1]}'>fixed "
                          f"{c['fixed']}</span>, <span style='color:rgb{OUTCOME_COLORS[2]}'>"
                          f"broke {c['broke']}</span>, <span style='color:rgb{OUTCOME_COLORS[3]}'>"
                          f"both wrong {c['both_wrong']}</span> pixels).")
        else:
            lines[-1] += " (magenta; no ground truth for this image)."
        return GuidanceView(to_uint8(pca.high_image), to_uint8(pca.up_image),
                            overlay(a.image, a.pred_high, e.palette, alpha=0.6), cos,
                            changed_img, "\n\n".join(lines))

    def attention(self, image, model=None, options: Options = Options(), x=None, y=None,
                  space: str = "image", progress: Progress = None,
                  tile: int = 176) -> AttentionView:
        """Where the CAE token under pixel (x, y) attends.

        Args:
            x, y: the query pixel; None: the image centre.
            space: ``"image"``: (x, y) in the uploaded image's pixels (upright);
                ``"analysed"``: in the analysed (resolution-capped) image, as a click on
                the attention image gives them.
        """
        an = self.analysed(image, model, options, progress)
        a, e = an.analysis, an.model
        h, w = a.input_size
        if not a.has_attention:
            return AttentionView(a.image, None, None,
                                 f"`{escape(e.label)}` has no CAE attention (SemanticFPN has no "
                                 "HFG branch; an HFGD with cae_depth 0 has no attention).", None)
        if x is None or y is None or x == "" or y == "":
            xa, ya = w / 2, h / 2
        else:
            try:
                xa, ya = float(x), float(y)
            except (TypeError, ValueError):
                raise AppError(f"x and y must be numbers, got {x!r}, {y!r}") from None
            if not (np.isfinite(xa) and np.isfinite(ya)):
                raise AppError("x and y must be finite numbers")
            if space == "image":
                W, H = an.image.size
                if not (0 <= xa < W and 0 <= ya < H):
                    raise AppError(f"pixel ({x}, {y}) is outside the {W}×{H} image")
                xa, ya = an.to_analysed(xa, ya)
            elif space != "analysed":
                raise AppError(f"space must be 'image' or 'analysed', got {space!r}")
        # inside the image: pixel i covers [i, i + 1)
        xa, ya = float(np.clip(xa, 0, w - 1e-3)), float(np.clip(ya, 0, h - 1e-3))
        maps = a.attention(xa, ya)
        r, c = maps.query_token
        marked = mark_point(render.outline_cell(a.image, r, c, HIGH_STRIDE), xa, ya)
        gh, gw = maps.grid.shape[-2:]
        small = an.derive(("small", tile), lambda: render.resize_rgb(a.image, tile))
        th, tw = small.shape[:2]
        tiles_rgb = render.cells_overlay(
            small, np.concatenate([maps.grid, maps.grid.mean(1, keepdims=True)], 1),
            render.pixel_rows(th, h, HIGH_STRIDE, gh), render.pixel_rows(tw, w, HIGH_STRIDE, gw))
        sx, sy = xa * tw / w, ya * th / h
        tiles = [[render.caption(mark_point(tiles_rgb[l, hd], sx, sy, radius=3),
                                 f"layer {l + 1}, head {hd + 1}" if hd < maps.num_heads
                                 else f"layer {l + 1}, head mean")
                  for hd in range(maps.num_heads + 1)]
                 for l in range(maps.num_layers)]
        roll = mark_point(render.cells_overlay(
            a.image, maps.grid_rollout, render.pixel_rows(h, h, HIGH_STRIDE, gh),
            render.pixel_rows(w, w, HIGH_STRIDE, gw)), xa, ya)
        pad = float(maps.padding_mass.mean())
        text = (f"Query pixel ({int(xa)}, {int(ya)}) of the analysed {w}×{h} image is in CAE "
                f"token (row {r}, column {c}) of the {gh}×{gw} stride-32 grid (outlined). "
                f"Each panel is one attention row over all tokens, drawn over the image and "
                f"scaled from its own minimum to its maximum (brighter: attended more); the "
                f"rollout multiplies "
                f"the head-averaged layers with the residual path. "
                f"{100 * pad:.1f}% of the attention (mean over heads) went to padding tokens, "
                f"which are not drawn.")
        return AttentionView(marked, render.grid(tiles), roll, text, (xa, ya),
                             an.to_image(xa, ya))

    def compare(self, image, options: Options = Options(), opacity: float = 0.5,
                progress: Progress = None) -> CompareView:
        """The same image through the sg-on, sg-off and SemanticFPN bundled models."""
        progress = progress or _noop
        bundled = set(self.store.bundled())
        names = [n for n in SCENE_VARIANTS if n in bundled]
        if not names:
            raise AppError("the stop-gradient comparison needs the bundled models "
                           f"({', '.join(SCENE_VARIANTS)}); none is installed")
        overlays, runs = {}, {}
        for i, name in enumerate(SCENE_VARIANTS):
            if name not in bundled:
                overlays[name] = None
                continue
            progress(i / len(SCENE_VARIANTS), desc=f"model {i + 1} of 3: {name}")
            an = self.analysed(image, name, options)
            runs[name] = an
            a = an.analysis
            overlays[name] = overlay(a.image, a.pred, an.model.palette,
                                     alpha=float(np.clip(opacity, 0, 1)))
        progress(1.0, desc="done")
        table = _experiment_table([an.model for an in runs.values()])
        ref = runs.get("hfgd_scenes_sg")
        first = next(iter(runs.values()))
        lines = [f"**Image** {escape(first.image.name)}, analysed at "
                 f"{first.analysis.input_size[1]}×{first.analysis.input_size[0]} px."]
        for name, an in runs.items():
            miou = an.model.val_miou()
            s = f"**{SCENE_VARIANTS[name][1]}** (`{name}`): validation mIoU " + \
                (f"**{miou:.1f}**" if miou is not None else "not on its card")
            if an.scores() is not None:
                s += f"; on this scene mIoU {an.scores().mIoU:.1f}"
            if ref is not None and an is not ref:
                same = float((an.analysis.pred == ref.analysis.pred).mean())
                s += f"; agrees with the sg-on model on {100 * same:.1f}% of pixels"
            lines.append(s + ".")
        missing = [n for n in SCENE_VARIANTS if n not in bundled]
        if missing:
            lines.append(f"Not installed: {', '.join(missing)}.")
        return CompareView(overlays, table, "\n\n".join(lines))

    # ---- helpers ---------------------------------------------------------------------
    @staticmethod
    def _class_index(e: ModelEntry, class_name, pred) -> int:
        if class_name is None or class_name == "":
            counts = np.bincount(pred.ravel(), minlength=e.num_classes)
            return int(np.argmax(counts))
        if isinstance(class_name, (int, np.integer)) and 0 <= class_name < e.num_classes:
            return int(class_name)
        name = str(class_name).strip()
        if name in e.classes:
            return e.classes.index(name)
        if name.isdigit() and int(name) < e.num_classes:
            return int(name)
        raise AppError(f"unknown class {name!r}; this model's classes: {', '.join(e.classes)}")


def _analysed_bytes(an: "Analysed") -> int:
    """Approximate memory of a cached analysis: its arrays and tensors, with room for
    the views derived from it later (PCA pictures, rollout)."""
    import dataclasses

    import torch
    total = 0
    for f in dataclasses.fields(an.analysis):
        v = getattr(an.analysis, f.name)
        if isinstance(v, np.ndarray):
            total += v.nbytes
        elif isinstance(v, torch.Tensor):
            total += v.element_size() * v.nelement()
    return int(total * 1.5)


def _release_memory() -> None:
    """Return freed heap pages to the OS (glibc keeps large freed blocks otherwise, so a
    server's RSS would stay at its peak after one huge image)."""
    import ctypes
    import gc
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _trained_on_line(e: ModelEntry) -> str:
    t = e.trained_on
    if t:
        return f"Trained on: {escape(t.rstrip('.'))}."
    return "Its card does not say what it was trained on."


def _ms(d) -> Optional[tuple]:
    """A {"mean", "std"} dict (or a [mean, std] pair) -> floats, None when absent/NaN."""
    try:
        m, s = (d.get("mean"), d.get("std")) if isinstance(d, dict) else (d[0], d[1])
        m, s = float(m), float(s if s is not None else "nan")
    except (TypeError, ValueError, IndexError, KeyError, AttributeError):
        return None
    return None if not np.isfinite(m) else (m, s)


def _experiment_table(entries) -> str:
    """The stop-gradient experiment summary from the first card that carries one."""
    exp = next((e.card.get("sg_experiment") for e in entries
                if isinstance(e.card.get("sg_experiment"), dict)), None)
    if not exp:
        return ("The bundled cards carry no stop-gradient experiment summary "
                "(see docs/stop_gradient.md).")
    variants = exp.get("variants") if isinstance(exp.get("variants"), dict) else exp
    labels = {v: lab for _, (v, lab) in SCENE_VARIANTS.items()}
    stages = ("C2", "C3", "C4", "C5")
    head = ("| variant | val mIoU | " + " | ".join(f"drift {s} (1 − CKA)" for s in stages)
            + " |\n|" + "---|" * (2 + len(stages)))
    rows = []
    for v, row in variants.items():
        if not isinstance(row, dict):
            continue

        def cell(key, digits, transform=lambda x: x):
            ms = _ms(row.get(key))
            if ms is None:
                return "n/a"
            m, s = transform(ms[0]), ms[1]
            return f"{m:.{digits}f} ± {s:.{digits}f}" if np.isfinite(s) else f"{m:.{digits}f}"

        cells = [cell("val_mIoU", 1)] + [cell(f"cka_{s}", 3, lambda x: 1 - x) for s in stages]
        rows.append(f"| {escape(labels.get(v, v))} | " + " | ".join(cells) + " |")
    if not rows:
        return "The stop-gradient experiment summary on the cards is empty."
    title = exp.get("title")
    seeds = exp.get("seeds")
    note = (f"**The stop-gradient experiment** ({escape(title) + ', ' if title else ''}"
            f"{f'{seeds} seeds, ' if seeds else ''}mean ± std over seeds, as documented on the "
            "bundled cards). Drift is 1 − linear CKA between each backbone stage's features "
            "after fine-tuning and in the pretrained backbone: 0 means unchanged.")
    return note + "\n\n" + head + "\n" + "\n".join(rows)
