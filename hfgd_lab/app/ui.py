"""The Gradio interface: components, layout and event wiring, nothing else.

Two kinds of listeners call the same :class:`hfgd_lab.app.handlers.App` methods:

- **the page's** (private): a value that cannot be used (a non-image upload, a pixel
  outside the image, a model that does not load) shows a message in the status line
  and leaves every view as it was -- the last good result stays on screen, and a failed
  model load puts the selector back on the model in use;
- **the API's** (public, for ``gradio_client``; no trigger in the page): every output
  named, errors returned as errors. Endpoints and their outputs::

    /load_model(model) -> model_card, classes
    /segment(image, model, max_side, sliding, window, flip, opacity)
        -> overlay, label_map (PNG, one label per uploaded pixel), classes, areas,
           banner, summary
    /class_tokens(image, model, max_side, sliding, window, flip, class_name)
        -> f_high_similarity, f_up_similarity, colorbar, class_name, classes, caption
    /guidance(image, model, max_side, sliding, window, flip)
        -> pca_f_high, pca_f_up, prediction_high, cosine_agreement, changed_decisions,
           statistics
    /attention(image, model, max_side, sliding, window, flip, x, y)    (x, y: uploaded px)
        -> query_image, attention_grid, rollout, caption, x, y
    /compare(image, max_side, sliding, window, flip, opacity)
        -> overlay_hfgd_sg, overlay_hfgd_nosg, overlay_semantic_fpn, caption, experiment
    /imagenet(image, top_k) -> top_classes, similarity_maps, caption

Pictures from the API are at the analysed image's size; the page shows small ones
upscaled (nearest, an integer factor) and maps clicks back to image pixels.
"""
from __future__ import annotations

import base64
import logging
import types
from functools import wraps

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from ..config import VARIANTS
from ..engine import card_classes, zoo
from ..viz import tiles
from .handlers import App, AppError, escape
from .html import CSS, class_legend_html, colorbar_html, legend_html, status_html, tiles_html
from .state import Options

__all__ = ["ImageInput", "build_demo", "CSS", "INTRO"]

log = logging.getLogger("hfgd_lab.app")

# Output pictures as JPEG: encoding a 512 px picture takes ~1.5 ms against ~35 ms (WebP,
# Gradio's default) or ~45 ms (PNG), which was most of a click's time on a CPU.
OUT = "jpeg"
PICTURE = dict(interactive=False, show_label=False, buttons=[], format=OUT)

INTRO = """# hfgd-lab: look inside HFGD
**HFGD** (High-level Feature Guided Decoder) classifies every pixel twice with the same
class tokens: once from the high-level features F_high (stride 32, after a small
transformer, the CAE) and once from the upsampler's features F_up, which F_high guides.
Upload, paste or drop an image, or click an example; every tab reads the same forward
pass."""

GUIDE = """| you have | and want to know | tab |
|---|---|---|
| a built-in **scene** | what the model predicts, and how well | Segmentation |
| a scene | how F_high and F_up use the class tokens | Class tokens, HFG vs upsampler |
| a scene | what a pixel's context token looks at | CAE attention |
| a scene | what the stop-gradient changes | Stop-gradient |
| a **photo** | what the pretrained ImageNet features recognise | ImageNet features |

The bundled models are fine-tuned on the built-in procedural scenes (10 classes): on a
photo their labels mean nothing, while the ImageNet tab shows what their backbone knew
before any fine-tuning."""


def _raw_file(self, payload):
    """Preprocessing of the input image: the uploaded file's path, untouched.

    Gradio's own preprocessing opens the file with PIL (failing with PIL's errors on
    non-images, and refusing images above PIL's bomb limit); here the path goes to
    :func:`hfgd_lab.data.read_image` via :class:`App`, which checks the pixel count on
    the header, refuses bad files with a clear message and applies EXIF rotation.
    """
    if payload is None:
        return None
    url = getattr(payload, "url", None)
    if url and url.startswith("data:"):
        try:
            return base64.b64decode(url.split(",", 1)[1])
        except (IndexError, ValueError):
            raise gr.Error("the pasted image is not valid base64 data") from None
    if payload.path is None:
        return None
    return str(payload.path)


def ImageInput(**kwargs) -> gr.Image:
    """A ``gr.Image`` whose handler receives the uploaded file untouched (see
    :func:`_raw_file`). An instance override rather than a subclass: Gradio writes a
    ``.pyi`` stub next to the module of every Component subclass."""
    image = gr.Image(**kwargs)
    image.preprocess = types.MethodType(_raw_file, image)
    return image


def _message(e: BaseException) -> str:
    if isinstance(e, AppError):
        return str(e)
    if isinstance(e, MemoryError):
        return "out of memory: lower the resolution cap"
    return f"internal error ({type(e).__name__}); the server log has the details"


def _page(n_outputs: int):
    """A page listener: returns ``(status, *outputs)``. On an input that cannot be
    used, the status line says why and every other output is left as it was
    (``gr.skip()``); a listener returning None (its tab is not shown) skips them all."""
    def decorate(fn):
        @wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                out = fn(*args, **kwargs)
            except Exception as e:  # never a stack trace in the page
                if not isinstance(e, (AppError, MemoryError)):
                    log.exception("unexpected error in %s", fn.__name__)
                return (status_html(_message(e)),) + (gr.skip(),) * n_outputs
            if out is None:
                return (gr.skip(),) * (n_outputs + 1)
            return ("", *out)
        return wrapper
    return decorate


def _api(fn):
    """An API listener: errors become ``gr.Error`` with the same one-line message."""
    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as e:
            if not isinstance(e, (AppError, MemoryError)):
                log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(_message(e), print_exception=False) from None
    return wrapper


def _label_map_png(labels: np.ndarray) -> Image.Image:
    """uint8 labels as an 8-bit, uint16 as a 16-bit greyscale PNG image (lossless)."""
    return Image.fromarray(labels)


def _all_classes(app: App) -> list[str]:
    """Every class name of every listed model (for the API's class choices)."""
    names = []
    for card in app.store.cards().values():
        try:
            k = int(card["config"]["num_classes"])
        except (KeyError, TypeError, ValueError):
            continue
        names += [c for c in card_classes(card, k)[0] if c not in names]
    return names


def build_demo(app: App, examples=(), default_model=None, max_side: int = 512) -> gr.Blocks:
    """The Blocks app around ``app`` (see the module docstring for its endpoints)."""
    default_model = default_model or app.store.default()
    choices = app.store.names()
    if default_model and default_model not in choices:
        choices.insert(0, default_model)
    card_text = ""
    if default_model:
        try:
            card_text = app.model_info(default_model).markdown
        except AppError as e:
            card_text = escape(str(e))
    variants = list(zoo.BUNDLED)
    by_kind = {"scene": [], "photo": []}
    for e in examples:
        by_kind.setdefault(e.kind, []).append(e)

    def opts(max_side, sliding, window, flip) -> Options:
        return Options.parse(max_side, sliding, flip, window)

    def scale_of(view_image: np.ndarray) -> int:
        return tiles.display_scale(view_image.shape[:2])

    def show(rgb):
        return None if rgb is None else tiles.upscale(rgb, scale_of(rgb))

    # ---- the page's listeners (private) ----------------------------------------------
    def ui_load_model(model, in_use):
        try:
            info = app.model_info(model)
        except Exception as e:
            if not isinstance(e, (AppError, MemoryError)):
                log.exception("unexpected error loading a model")
            # back to the model in use: what the selector shows is what the views show
            return (status_html(_message(e)), gr.update(value=in_use), gr.skip(), gr.skip(),
                    gr.skip())
        return ("", gr.skip(), info.markdown, gr.update(choices=info.classes, value=None),
                model)

    @_page(5)
    def ui_segment(image, model, max_side, sliding, window, flip, opacity,
                   progress=gr.Progress()):
        if image is None:  # cleared: the views keep the last result until the next image
            return None
        v = app.segment(image, model, opts(max_side, sliding, window, flip), opacity,
                        progress=progress)
        return (v.banner, show(v.overlay), class_legend_html(v.classes, v.palette, v.present),
                pd.DataFrame(v.rows, columns=v.headers), v.summary)

    @_page(5)
    def ui_tokens(active, image, model, max_side, sliding, window, flip, class_name):
        if active != "tokens" or image is None:
            return None
        v = app.class_tokens(image, model, opts(max_side, sliding, window, flip), class_name)
        return (show(v.high), show(v.up),
                colorbar_html("RdBu_r", -v.vmax, v.vmax, "cosine similarity to the token"),
                gr.update(choices=v.classes, value=v.class_name), v.caption)

    @_page(8)
    def ui_guidance(active, image, model, max_side, sliding, window, flip):
        if active != "guidance" or image is None:
            return None
        v = app.guidance(image, model, opts(max_side, sliding, window, flip))
        bar = colorbar_html("RdBu_r", -1, 1, "cosine of F_up with the upsampled F_high") \
            if v.cosine is not None else ""
        return (show(v.pca_high), show(v.pca_up), show(v.pred_high), show(v.cosine), bar,
                show(v.changes), legend_html(v.legend) if v.legend else "", v.stats)

    def attention_out(v):
        rows = [[(title, rgb) for title, rgb in row] for row in v.tiles]
        titles = [f"Layer {i + 1}" for i in range(len(rows))]
        x, y = v.query_image if v.query_image is not None else (gr.skip(), gr.skip())
        return (v.marked, tiles_html(rows, titles) if rows else "", show(v.rollout), v.caption,
                x, y)

    @_page(6)
    def ui_attention_reset(active, image, model, max_side, sliding, window, flip):
        if active != "attention" or image is None:
            return None
        o = opts(max_side, sliding, window, flip)
        an = app.analysed(image, model, o)
        return attention_out(app.attention(image, model, o, scale=scale_of(an.analysis.image)))

    @_page(6)
    def ui_attention_typed(image, model, max_side, sliding, window, flip, x, y):
        if image is None:
            return None
        o = opts(max_side, sliding, window, flip)
        an = app.analysed(image, model, o)
        return attention_out(app.attention(image, model, o, x, y, space="image",
                                           scale=scale_of(an.analysis.image)))

    @_page(6)
    def ui_attention_click(image, model, max_side, sliding, window, flip,
                           evt: gr.SelectData):
        if image is None or evt is None or evt.index is None:
            return None
        o = opts(max_side, sliding, window, flip)
        an = app.analysed(image, model, o)
        x, y = evt.index[:2]
        return attention_out(app.attention(image, model, o, x, y, space="display",
                                           scale=scale_of(an.analysis.image)))

    @_page(len(variants) + 2)
    def ui_compare(active, image, max_side, sliding, window, flip, opacity,
                   progress=gr.Progress()):
        if active != "sg" or image is None:
            return None
        v = app.compare(image, opts(max_side, sliding, window, flip), opacity,
                        progress=progress)
        return (*(show(v.overlays.get(n)) for n in variants), v.caption, v.experiment)

    @_page(4)
    def ui_imagenet(active, image, progress=gr.Progress()):
        if active != "imagenet" or image is None:
            return None
        v = app.imagenet(image, 5, progress=progress)
        return ({name: p for name, p in v.top}, tiles_html([v.maps]),
                colorbar_html("RdBu_r", -v.vmax, v.vmax, "cosine similarity to the class "
                              "token (classifier row)"), v.caption)

    def example_chosen(evt: gr.SelectData):
        return str(examples[evt.index].path) if evt is not None else gr.skip()

    # ---- the API's listeners (public, named outputs) ---------------------------------
    @_api
    def load_model(model):
        """Load a listed model; its card in words and its class names."""
        info = app.model_info(model)
        return info.markdown, info.classes

    @_api
    def segment(image, model, max_side, sliding, window, flip, opacity):
        """Segment an image: overlay, label map (PNG, at the uploaded size), classes."""
        v = app.segment(image, model, opts(max_side, sliding, window, flip), opacity)
        return (v.overlay, _label_map_png(v.label_map()), v.classes,
                pd.DataFrame(v.rows, columns=v.headers), v.banner, v.summary)

    @_api
    def class_tokens(image, model, max_side, sliding, window, flip, class_name):
        """Similarity of F_high and F_up to one class token ("" = the largest class)."""
        v = app.class_tokens(image, model, opts(max_side, sliding, window, flip), class_name)
        bar = tiles.colorbar("RdBu_r", -v.vmax, v.vmax, "cosine", width=256)
        return v.high, v.up, bar, v.class_name, v.classes, v.caption

    @_api
    def guidance(image, model, max_side, sliding, window, flip):
        """F_high and F_up in one PCA colour space, their agreement, changed decisions."""
        v = app.guidance(image, model, opts(max_side, sliding, window, flip))
        return v.pca_high, v.pca_up, v.pred_high, v.cosine, v.changes, v.stats

    @_api
    def attention(image, model, max_side, sliding, window, flip, x, y):
        """CAE attention of the token under pixel (x, y) of the uploaded image."""
        v = app.attention(image, model, opts(max_side, sliding, window, flip), x, y,
                          space="image")
        x, y = v.query_image if v.query_image is not None else (None, None)
        return v.marked, v.grid(), v.rollout, v.caption, x, y

    @_api
    def compare(image, max_side, sliding, window, flip, opacity):
        """The image through the three bundled models of the stop-gradient comparison."""
        v = app.compare(image, opts(max_side, sliding, window, flip), opacity)
        return (*(v.overlays.get(n) for n in variants), v.caption, v.experiment)

    @_api
    def imagenet(image, top_k):
        """The pretrained backbone's ImageNet classifier: top classes and their maps."""
        v = app.imagenet(image, top_k)
        grid = tiles.grid([[tiles.caption(rgb, title) for title, rgb in v.maps]])
        return ([{"class": n, "probability": round(p, 4)} for n, p in v.top], grid,
                v.caption)

    # ---- layout ---------------------------------------------------------------------
    # uploads and rendered outputs older than an hour are deleted every hour: disk bounded
    with gr.Blocks(title="hfgd-lab: see inside HFGD", analytics_enabled=False,
                   delete_cache=(3600, 3600)) as demo:
        gr.Markdown(INTRO)
        with gr.Accordion("Which tab answers which question", open=False):
            gr.Markdown(GUIDE)
        active = gr.State("seg")
        in_use = gr.State(default_model)
        with gr.Row():
            with gr.Column(scale=2, min_width=300):
                image = ImageInput(label="Image (upload, paste or drop)", type="filepath",
                                   image_mode=None, sources=["upload", "clipboard"],
                                   height=300, elem_id="input-image")
                model = gr.Dropdown(
                    choices=choices, value=default_model, label="Model",
                    allow_custom_value=app.store.allow_paths, elem_id="model",
                    info="a bundled model" + (" or one of --models-dir"
                                              if app.store.models_dirs else "")
                    + (", or the path of a checkpoint on this machine"
                       if app.store.allow_paths else ""))
                model_card = gr.Markdown(card_text, elem_id="model-card")
                with gr.Accordion("Options", open=False):
                    max_side_c = gr.Slider(Options.MIN_SIDE, Options.MAX_SIDE, value=max_side,
                                           step=32, label="Resolution cap (longest side, px)")
                    sliding = gr.Checkbox(False, label="Sliding-window prediction")
                    window = gr.Slider(Options.MIN_WINDOW, 1024, value=Options.window,
                                       step=32, label="Window side (px; the bundled models "
                                                      "trained on 192)")
                    flip = gr.Checkbox(False, label="Flip test-time augmentation")
                    gr.Markdown("With sliding window or flip, the prediction averages the "
                                "views; features, class tokens and attention come from the "
                                "one whole-image pass.")
                gallery = None
                if examples:
                    gr.Markdown("Examples: built-in scenes (with ground truth) and photos",
                                elem_classes="hfgd-title")
                    gallery = gr.Gallery(
                        value=[(str(e.path), e.name) for e in examples], show_label=False,
                        columns=4, height="auto", allow_preview=False, object_fit="cover",
                        buttons=[], interactive=False, elem_id="examples")
                    credits = sorted({e.credit for e in by_kind.get("photo", [])})
                    if credits:
                        gr.Markdown("<small>Photos: " + "; ".join(escape(c) for c in credits)
                                    + ".</small>", elem_id="credits")
            with gr.Column(scale=3, min_width=300):
                status = gr.HTML("", elem_id="status")
                banner = gr.Markdown("Upload, paste or drop an image, or click an example.",
                                     elem_id="banner", elem_classes=["hfgd-banner"])
                with gr.Tabs():
                    with gr.Tab("Segmentation", id="seg") as tab_seg:
                        opacity = gr.Slider(0, 1, value=0.5, step=0.05, label="Mask opacity")
                        seg_image = gr.Image(elem_id="seg-overlay", **PICTURE)
                        legend = gr.HTML(elem_id="legend")
                        areas = gr.Dataframe(headers=["class", "area %", "mean confidence %"],
                                             interactive=False, label="Per-class area",
                                             elem_id="areas")
                        seg_summary = gr.Markdown(elem_id="seg-summary")
                    with gr.Tab("ImageNet features", id="imagenet") as tab_imagenet:
                        gr.Markdown("What the **pretrained backbone** recognises in a photo, "
                                    "before any fine-tuning: its own ImageNet classifier's "
                                    "top classes, and where each class's token matches the "
                                    "stride-32 features.")
                        inet_top = gr.Label(num_top_classes=5, show_label=False,
                                            elem_id="imagenet-top")
                        inet_maps = gr.HTML(elem_id="imagenet-maps")
                        inet_bar = gr.HTML(elem_id="imagenet-colorbar")
                        inet_caption = gr.Markdown(elem_id="imagenet-caption")
                    with gr.Tab("Class tokens", id="tokens") as tab_tokens:
                        class_name = gr.Dropdown(label="Class", choices=[], value=None,
                                                 allow_custom_value=True, elem_id="class-name")
                        with gr.Row():
                            with gr.Column(min_width=200):
                                gr.Markdown("F_high vs the class token", elem_classes="hfgd-title")
                                tok_high = gr.Image(elem_id="tok-high", **PICTURE)
                            with gr.Column(min_width=200):
                                gr.Markdown("F_up vs the class token", elem_classes="hfgd-title")
                                tok_up = gr.Image(elem_id="tok-up", **PICTURE)
                        tok_bar = gr.HTML(elem_id="tok-colorbar")
                        tok_caption = gr.Markdown(elem_id="tok-caption")
                    with gr.Tab("HFG vs upsampler", id="guidance") as tab_guidance:
                        with gr.Row():
                            with gr.Column(min_width=200):
                                gr.Markdown("F_high in the shared PCA colours",
                                            elem_classes="hfgd-title")
                                pca_high = gr.Image(elem_id="pca-high", **PICTURE)
                            with gr.Column(min_width=200):
                                gr.Markdown("F_up in the same colours", elem_classes="hfgd-title")
                                pca_up = gr.Image(elem_id="pca-up", **PICTURE)
                        with gr.Row():
                            with gr.Column(min_width=200):
                                gr.Markdown("HFG branch prediction (stride 32)",
                                            elem_classes="hfgd-title")
                                pred_high = gr.Image(elem_id="pred-high", **PICTURE)
                            with gr.Column(min_width=200):
                                gr.Markdown("Agreement: cos(F_up, upsampled F_high)",
                                            elem_classes="hfgd-title")
                                cosine = gr.Image(elem_id="cosine", **PICTURE)
                                cos_bar = gr.HTML(elem_id="cosine-colorbar")
                            with gr.Column(min_width=200):
                                gr.Markdown("Decisions the upsampler changed",
                                            elem_classes="hfgd-title")
                                changes = gr.Image(elem_id="changes", **PICTURE)
                                changes_legend = gr.HTML(elem_id="changes-legend")
                        guide_stats = gr.Markdown(elem_id="guidance-stats")
                    with gr.Tab("CAE attention", id="attention") as tab_attention:
                        gr.Markdown("**Click a pixel** of the image: the stride-32 token "
                                    "under it is the query. Or type a pixel of the uploaded "
                                    "image.")
                        attn_image = gr.Image(elem_id="attention-image", **PICTURE)
                        with gr.Row():
                            attn_x = gr.Number(label="x (uploaded image px)", precision=0,
                                               elem_id="attention-x", min_width=100)
                            attn_y = gr.Number(label="y (uploaded image px)", precision=0,
                                               elem_id="attention-y", min_width=100)
                            attn_button = gr.Button("Show attention", elem_id="attention-show",
                                                    min_width=100)
                        gr.Markdown("Per layer: each head, then the average over heads",
                                    elem_classes="hfgd-title")
                        attn_tiles = gr.HTML(elem_id="attention-grid")
                        gr.Markdown("Rollout over the layers", elem_classes="hfgd-title")
                        attn_rollout = gr.Image(elem_id="attention-rollout", **PICTURE)
                        attn_caption = gr.Markdown(elem_id="attention-caption")
                    with gr.Tab("Stop-gradient", id="sg") as tab_sg:
                        gr.Markdown("The same image through the three bundled models, "
                                    "fine-tuned on the same scenes: HFGD with the "
                                    "stop-gradient on, HFGD with it off, and the SemanticFPN "
                                    "baseline.")
                        sg_button = gr.Button("Run the three models", elem_id="sg-run")
                        sg_images = []
                        with gr.Row():
                            for name in variants:
                                with gr.Column(min_width=160):
                                    gr.Markdown(f"{VARIANTS[zoo.BUNDLED[name]][0]} "
                                                f"(`{name}`)", elem_classes="hfgd-title")
                                    sg_images.append(gr.Image(elem_id=f"sg-{name}", **PICTURE))
                        sg_caption = gr.Markdown(elem_id="sg-caption")
                        gr.Markdown("### The experiment (means over seeds)")
                        sg_table = gr.Markdown(elem_id="sg-table")

        # ---- API-only components: named inputs and outputs, never shown ---------------
        with gr.Column(visible=False):
            api_class = gr.Dropdown(choices=[("(the largest predicted class)", "")]
                                    + _all_classes(app), value="", label="class_name")
            api_top_k = gr.Number(5, precision=0, label="top_k")
            api_x = gr.Number(label="x", precision=0)
            api_y = gr.Number(label="y", precision=0)
            out = {name: comp for name, comp in [
                ("model_card", gr.Markdown(label="model_card")),
                ("classes", gr.JSON(label="classes")),
                ("overlay", gr.Image(label="overlay", format=OUT)),
                ("label_map", gr.Image(label="label_map", format="png", image_mode=None)),
                ("areas", gr.Dataframe(label="areas")),
                ("banner", gr.Markdown(label="banner")),
                ("summary", gr.Markdown(label="summary")),
                ("f_high_similarity", gr.Image(label="f_high_similarity", format=OUT)),
                ("f_up_similarity", gr.Image(label="f_up_similarity", format=OUT)),
                ("colorbar", gr.Image(label="colorbar", format="png")),
                ("class_name", gr.Textbox(label="class_name")),
                ("caption", gr.Markdown(label="caption")),
                ("pca_f_high", gr.Image(label="pca_f_high", format=OUT)),
                ("pca_f_up", gr.Image(label="pca_f_up", format=OUT)),
                ("prediction_high", gr.Image(label="prediction_high", format=OUT)),
                ("cosine_agreement", gr.Image(label="cosine_agreement", format=OUT)),
                ("changed_decisions", gr.Image(label="changed_decisions", format=OUT)),
                ("statistics", gr.Markdown(label="statistics")),
                ("query_image", gr.Image(label="query_image", format=OUT)),
                ("attention_grid", gr.Image(label="attention_grid", format=OUT)),
                ("rollout", gr.Image(label="rollout", format=OUT)),
                ("x", gr.Number(label="x", precision=0)),
                ("y", gr.Number(label="y", precision=0)),
                *[(f"overlay_{zoo.BUNDLED[n]}",
                   gr.Image(label=f"overlay_{zoo.BUNDLED[n]}", format=OUT)) for n in variants],
                ("experiment", gr.Markdown(label="experiment")),
                ("top_classes", gr.JSON(label="top_classes")),
                ("similarity_maps", gr.Image(label="similarity_maps", format=OUT)),
            ]}

        common = [image, in_use, max_side_c, sliding, window, flip]
        api_common = [image, model, max_side_c, sliding, window, flip]
        seg_out = [status, banner, seg_image, legend, areas, seg_summary]
        tok_out = [status, tok_high, tok_up, tok_bar, class_name, tok_caption]
        guide_out = [status, pca_high, pca_up, pred_high, cosine, cos_bar, changes,
                     changes_legend, guide_stats]
        attn_out = [status, attn_image, attn_tiles, attn_rollout, attn_caption, attn_x, attn_y]
        sg_in = [active, image, max_side_c, sliding, window, flip, opacity]
        sg_out = [status, *sg_images, sg_caption, sg_table]
        inet_out = [status, inet_top, inet_maps, inet_bar, inet_caption]
        private = dict(api_visibility="private")
        # Listeners writing the same outputs share one group of one event at a time
        # (first in, first out), so a slow result for an older image can never land
        # after, and hide, a newer one.
        groups = {k: dict(concurrency_id=k, concurrency_limit=1)
                  for k in ("seg", "tokens", "guidance", "attention", "sg", "imagenet")}

        def refresh_tabs(event):
            """After the segmentation: the open tab, from the same cached pass."""
            (event
             .success(ui_tokens, [active, *common, gr.State(None)], tok_out, **private,
                      **groups["tokens"])
             .success(ui_guidance, [active, *common], guide_out, **private,
                      **groups["guidance"])
             .success(ui_attention_reset, [active, *common], attn_out, **private,
                      **groups["attention"])
             .success(ui_compare, sg_in, sg_out, **private, **groups["sg"])
             .success(ui_imagenet, [active, image], inet_out, **private,
                      **groups["imagenet"]))

        # ---- the page's events ------------------------------------------------------
        first = gr.on([image.change, max_side_c.release, sliding.change, window.release,
                       flip.change], ui_segment, [*common, opacity], seg_out,
                      trigger_mode="always_last", **private, **groups["seg"])
        refresh_tabs(first)
        opacity.release(ui_segment, [*common, opacity], seg_out, **private, **groups["seg"])
        opacity.release(ui_compare, sg_in, sg_out, **private, **groups["sg"])
        model.input(ui_load_model, [model, in_use],
                    [status, model, model_card, class_name, in_use], **private)
        # only a model that loaded changes the model in use, and only that redraws the
        # views (a failed load leaves them, and its message, as they are)
        refresh_tabs(in_use.change(ui_segment, [*common, opacity], seg_out, **private,
                                   **groups["seg"]))
        class_name.input(ui_tokens, [active, *common, class_name], tok_out, **private,
                         **groups["tokens"])
        attn_button.click(ui_attention_typed, [*common, attn_x, attn_y], attn_out, **private,
                          **groups["attention"])
        attn_image.select(ui_attention_click, common, attn_out, trigger_mode="always_last",
                          show_progress="hidden", **private, **groups["attention"])
        sg_button.click(ui_compare, [gr.State("sg"), *sg_in[1:]], sg_out, **private,
                        **groups["sg"])
        for tab, name in ((tab_seg, "seg"), (tab_imagenet, "imagenet"), (tab_tokens, "tokens"),
                          (tab_guidance, "guidance"), (tab_attention, "attention"),
                          (tab_sg, "sg")):
            tab.select(lambda n=name: n, None, active, queue=False, show_progress="hidden",
                       **private)
        tab_tokens.select(ui_tokens, [gr.State("tokens"), *common, class_name], tok_out,
                          **private, **groups["tokens"])
        tab_guidance.select(ui_guidance, [gr.State("guidance"), *common], guide_out,
                            **private, **groups["guidance"])
        tab_attention.select(ui_attention_reset, [gr.State("attention"), *common], attn_out,
                             **private, **groups["attention"])
        tab_sg.select(ui_compare, [gr.State("sg"), *sg_in[1:]], sg_out, **private,
                      **groups["sg"])
        tab_imagenet.select(ui_imagenet, [gr.State("imagenet"), image], inet_out, **private,
                            **groups["imagenet"])
        if gallery is not None:
            gallery.select(example_chosen, None, image, show_progress="hidden", **private)

        # ---- the API (no trigger in the page) -----------------------------------------
        def api(fn, inputs, names):
            gr.on([], fn, inputs, [out[n] for n in names], api_name=fn.__name__)

        api(load_model, [model], ["model_card", "classes"])
        api(segment, [*api_common, opacity],
            ["overlay", "label_map", "classes", "areas", "banner", "summary"])
        api(class_tokens, [*api_common, api_class],
            ["f_high_similarity", "f_up_similarity", "colorbar", "class_name", "classes",
             "caption"])
        api(guidance, api_common, ["pca_f_high", "pca_f_up", "prediction_high",
                                   "cosine_agreement", "changed_decisions", "statistics"])
        api(attention, [*api_common, api_x, api_y],
            ["query_image", "attention_grid", "rollout", "caption", "x", "y"])
        api(compare, [image, max_side_c, sliding, window, flip, opacity],
            [*(f"overlay_{zoo.BUNDLED[n]}" for n in variants), "caption", "experiment"])
        api(imagenet, [image, api_top_k], ["top_classes", "similarity_maps", "caption"])
    return demo

