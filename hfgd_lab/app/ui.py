"""The Gradio interface: components, layout and event wiring, nothing else.

Every listener calls a handler of :class:`hfgd_lab.app.handlers.App` and converts its
result to component values; a handler's :class:`AppError` becomes a ``gr.Error``
message (never a stack trace). Public endpoints (``gradio_client``):

- ``/load_model(model)``
- ``/segment(image, model, max_side, sliding, window, flip, opacity)``
- ``/class_tokens(image, model, max_side, sliding, window, flip, class_name)``
- ``/guidance(image, model, max_side, sliding, window, flip)``
- ``/attention(image, model, max_side, sliding, window, flip, x, y)`` (x, y in the
  uploaded image's pixels; a click in the page calls a private twin with the click)
- ``/compare(image, max_side, sliding, window, flip, opacity)``
"""
from __future__ import annotations

import base64
import logging
import types
from functools import wraps

import gradio as gr
import pandas as pd

from .handlers import App
from .state import AppError, Options, SCENE_VARIANTS

__all__ = ["ImageInput", "build_demo", "CSS"]

log = logging.getLogger("hfgd_lab.app")

# Output pictures as JPEG: encoding a 512 px picture takes ~1.5 ms against ~35 ms (WebP,
# Gradio's default) or ~45 ms (PNG), which is most of a click's time on a CPU.
OUT = "jpeg"

CSS = """
.hfgd-banner {border-left: 4px solid #f59e0b; padding-left: 10px;}
#attention-image img {cursor: crosshair;}
"""

INTRO = """# hfgd-lab: look inside HFGD
**HFGD** (High-level Feature Guided Decoder) classifies every pixel twice with the same
class tokens: once from the high-level features F_high (stride 32, after a small
transformer, the CAE) and once from the upsampler's features F_up, which are guided by
F_high. Upload, paste or drop an image, or pick an example; each tab shows one part of
the model from the same forward pass."""


def _raw_file(self, payload):
    """Preprocessing of the input image: the uploaded file's path, untouched.

    Gradio's own preprocessing opens the file with PIL (failing with PIL's errors on
    non-images, and refusing images above PIL's bomb limit); here the path goes to
    :func:`hfgd_lab.imageio.read_image`, which refuses bad files with a clear message,
    keeps memory bounded for huge ones and applies EXIF rotation.
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


def _guard(fn):
    """Handler errors as Gradio messages; unexpected ones logged, shown in one line."""
    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except AppError as e:
            raise gr.Error(str(e), print_exception=False) from None
        except MemoryError:
            raise gr.Error("out of memory: lower the resolution cap", print_exception=False) \
                from None
        except Exception as e:  # never a stack trace in the page
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(f"internal error ({type(e).__name__}); the server log has the "
                           "details", print_exception=False) from None
    return wrapper


def build_demo(app: App, examples=(), default_model=None, max_side: int = 512) -> gr.Blocks:
    """The Blocks app around ``app`` (see the module docstring for its endpoints)."""
    bundled = app.store.bundled()
    default_model = default_model or app.store.default()
    choices = list(bundled)
    if default_model and default_model not in choices:
        choices.insert(0, default_model)

    def opts(max_side, sliding, window, flip) -> Options:
        return Options.parse(max_side, sliding, flip, window)

    # ---- listener functions (their parameter names are the API's) -------------------
    @_guard
    def load_model(model):
        info = app.model_info(model)
        return info.markdown, gr.update(choices=info.classes, value=None)

    @_guard
    def segment(image, model, max_side, sliding, window, flip, opacity,
                progress=gr.Progress()):
        if image is None:
            return (None, "", None, "Upload, paste or drop an image, or pick an example.", "")
        v = app.segment(image, model, opts(max_side, sliding, window, flip), opacity,
                        progress=progress)
        return (v.overlay, v.legend_html, pd.DataFrame(v.areas, columns=v.headers),
                v.banner, v.summary)

    @_guard
    def class_tokens(image, model, max_side, sliding, window, flip, class_name):
        if image is None:
            return None, None, None, gr.update(), ""
        v = app.class_tokens(image, model, opts(max_side, sliding, window, flip), class_name)
        return v.high, v.up, v.colorbar, gr.update(choices=v.classes, value=v.class_name), \
            v.caption

    @_guard
    def guidance(image, model, max_side, sliding, window, flip):
        if image is None:
            return None, None, None, None, None, ""
        v = app.guidance(image, model, opts(max_side, sliding, window, flip))
        return v.pca_high, v.pca_up, v.pred_high, v.cosine, v.changes, v.stats

    def _attention_out(v):
        if v.query_image is None:
            return v.marked, v.grid, v.rollout, v.caption, gr.update(), gr.update()
        return (v.marked, v.grid, v.rollout, v.caption, *v.query_image)

    @_guard
    def attention(image, model, max_side, sliding, window, flip, x, y):
        if image is None:
            return None, None, None, "", gr.update(), gr.update()
        o = opts(max_side, sliding, window, flip)
        v = app.attention(image, model, o, x, y, space="image")
        return _attention_out(v)

    @_guard
    def attention_click(image, model, max_side, sliding, window, flip, evt: gr.SelectData):
        if image is None:
            return None, None, None, "", gr.update(), gr.update()
        o = opts(max_side, sliding, window, flip)
        x, y = (evt.index if evt is not None and evt.index is not None else (None, None))
        v = app.attention(image, model, o, x, y, space="analysed")
        return _attention_out(v)

    @_guard
    def attention_reset(image, model, max_side, sliding, window, flip):
        if image is None:
            return None, None, None, "", None, None
        o = opts(max_side, sliding, window, flip)
        v = app.attention(image, model, o, None, None)
        return _attention_out(v)

    @_guard
    def compare(image, max_side, sliding, window, flip, opacity, progress=gr.Progress()):
        if image is None:
            return None, None, None, "", ""
        v = app.compare(image, opts(max_side, sliding, window, flip), opacity,
                        progress=progress)
        return (*(v.overlays.get(n) for n in SCENE_VARIANTS), v.caption, v.table)

    def compare_if_active(active, image, max_side, sliding, window, flip, opacity):
        if active != "sg":
            return (gr.skip(),) * 5
        return compare(image, max_side, sliding, window, flip, opacity)

    # ---- layout ---------------------------------------------------------------------
    # uploads and rendered outputs older than an hour are deleted every hour: disk bounded
    with gr.Blocks(title="hfgd-lab: see inside HFGD", analytics_enabled=False,
                   delete_cache=(3600, 3600)) as demo:
        gr.Markdown(INTRO)
        active = gr.State("seg")
        with gr.Row():
            with gr.Column(scale=2, min_width=300):
                image = ImageInput(label="Image (upload, paste or drop)", type="filepath",
                                   image_mode=None, sources=["upload", "clipboard"],
                                   height=300, elem_id="input-image")
                model = gr.Dropdown(
                    choices=choices, value=default_model, label="Model",
                    allow_custom_value=app.store.allow_paths, elem_id="model",
                    info="a bundled model" + (", or the path of a checkpoint on this machine "
                                              "(NAME.safetensors + NAME.json)"
                                              if app.store.allow_paths else ""))
                with gr.Accordion("Options", open=False):
                    max_side_c = gr.Slider(Options.MIN_SIDE, Options.MAX_SIDE, value=max_side,
                                           step=32, label="Resolution cap (longest side, px)")
                    sliding = gr.Checkbox(False, label="Sliding-window prediction")
                    window = gr.Slider(64, 1024, value=Options.window, step=32,
                                       label="Window side (px; the bundled models trained on 192)")
                    flip = gr.Checkbox(False, label="Flip test-time augmentation")
                    gr.Markdown("With sliding window or flip, the prediction averages the "
                                "views; features, class tokens and attention come from the "
                                "one whole-image pass.")
                if examples:
                    gr.Examples(examples=[[str(e.path)] for e in examples], inputs=[image],
                                example_labels=[e.name for e in examples], label="Examples",
                                cache_examples=False, api_visibility="private",
                                examples_per_page=12)
                    credits = sorted({e.credit for e in examples if e.kind == "photo"})
                    if credits:
                        gr.Markdown("<small>Photos: " + "; ".join(credits) + ".</small>")
            with gr.Column(scale=3):
                banner = gr.Markdown("Upload, paste or drop an image, or pick an example.",
                                     label="Banner", elem_id="banner",
                                     elem_classes=["hfgd-banner"])
                with gr.Tabs():
                    with gr.Tab("Segmentation", id="seg") as tab_seg:
                        opacity = gr.Slider(0, 1, value=0.5, step=0.05, label="Mask opacity")
                        seg_image = gr.Image(label="Prediction", interactive=False,
                                             elem_id="seg-overlay", format=OUT)
                        legend = gr.HTML(label="Legend", elem_id="legend")
                        areas = gr.Dataframe(headers=["class", "area %", "mean confidence %"],
                                             interactive=False, label="Per-class area",
                                             elem_id="areas")
                        seg_summary = gr.Markdown(label="Summary")
                    with gr.Tab("Class tokens", id="tokens") as tab_tokens:
                        class_name = gr.Dropdown(label="Class", choices=[], value=None,
                                                 allow_custom_value=True, elem_id="class-name")
                        with gr.Row():
                            tok_high = gr.Image(label="F_high vs class token",
                                                interactive=False, format=OUT)
                            tok_up = gr.Image(label="F_up vs class token", interactive=False,
                                              format=OUT)
                        tok_bar = gr.Image(label="Colour scale", show_label=False,
                                           interactive=False, height=40, container=False)
                        tok_caption = gr.Markdown(label="Caption")
                    with gr.Tab("HFG vs upsampler", id="guidance") as tab_guidance:
                        with gr.Row():
                            pca_high = gr.Image(label="F_high (shared PCA)", interactive=False,
                                                format=OUT)
                            pca_up = gr.Image(label="F_up (shared PCA)", interactive=False,
                                              format=OUT)
                        with gr.Row():
                            pred_high = gr.Image(label="HFG branch prediction (stride 32)",
                                                 interactive=False, format=OUT)
                            cosine = gr.Image(label="cos(F_up, F_high upsampled), −1..1",
                                              interactive=False, format=OUT)
                            changes = gr.Image(label="Decisions the upsampler changed",
                                               interactive=False, format=OUT)
                        guide_stats = gr.Markdown(label="Statistics")
                    with gr.Tab("CAE attention", id="attention") as tab_attention:
                        gr.Markdown("**Click a pixel** of the image: its stride-32 token is "
                                    "the query. Or type a pixel of the uploaded image.")
                        attn_image = gr.Image(label="Click a pixel", interactive=False,
                                              elem_id="attention-image", format=OUT)
                        with gr.Row():
                            attn_x = gr.Number(label="x (uploaded image px)", precision=0)
                            attn_y = gr.Number(label="y (uploaded image px)", precision=0)
                            attn_button = gr.Button("Show attention", elem_id="attention-show")
                        attn_grid = gr.Image(label="Per layer (rows) and head (columns), "
                                             "then the head average", interactive=False,
                                             elem_id="attention-grid", format=OUT)
                        attn_rollout = gr.Image(label="Rollout over layers", interactive=False,
                                                elem_id="attention-rollout", format=OUT)
                        attn_caption = gr.Markdown(label="Caption",
                                                   elem_id="attention-caption")
                    with gr.Tab("Stop-gradient", id="sg") as tab_sg:
                        gr.Markdown("The same image through the three bundled models, "
                                    "trained on the same scenes: HFGD with the stop-gradient "
                                    "on, HFGD with it off, and the SemanticFPN baseline.")
                        sg_button = gr.Button("Run the three models", elem_id="sg-run")
                        with gr.Row():
                            sg_images = [gr.Image(label=label, interactive=False, format=OUT)
                                         for _, (_, label) in SCENE_VARIANTS.items()]
                        sg_caption = gr.Markdown(label="Models on this image",
                                                 elem_id="sg-caption")
                        sg_table = gr.Markdown(label="Experiment", elem_id="sg-table")

        common = [image, model, max_side_c, sliding, window, flip]
        seg_out = [seg_image, legend, areas, banner, seg_summary]
        tok_out = [tok_high, tok_up, tok_bar, class_name, tok_caption]
        guide_out = [pca_high, pca_up, pred_high, cosine, changes, guide_stats]
        attn_out = [attn_image, attn_grid, attn_rollout, attn_caption, attn_x, attn_y]
        sg_in = [image, max_side_c, sliding, window, flip, opacity]
        sg_out = [*sg_images, sg_caption, sg_table]
        private = dict(api_visibility="private", show_progress="hidden")
        # Listeners that write the same outputs share one concurrency group of one event
        # at a time (Gradio's queue is first in, first out within a group), so a slow
        # result for an older image can never land after, and hide, a newer one.
        # (Listeners of the same function share a group already.)
        sg_group = dict(concurrency_id="compare", concurrency_limit=1)
        attn_group = dict(concurrency_id="attention", concurrency_limit=1)

        def chain(event, name):
            """After the first result: every other tab from the same cached pass (the
            three-model comparison only while its tab is open)."""
            (event
             .success(compare_if_active, [active, *sg_in], sg_out,
                      api_name=f"{name}_compare", **private, **sg_group)
             .success(class_tokens, common + [gr.State(None)], tok_out,
                      api_name=f"{name}_class_tokens", **private)
             .success(guidance, common, guide_out, api_name=f"{name}_guidance", **private)
             .success(attention_reset, common, attn_out, api_name=f"{name}_attention",
                      **private, **attn_group))

        # ---- events -----------------------------------------------------------------
        first = gr.on([image.change, max_side_c.release, sliding.change, window.release,
                       flip.change], segment, common + [opacity], seg_out, api_name="segment",
                      trigger_mode="always_last")
        chain(first, "image")
        opacity.release(segment, common + [opacity], seg_out, api_name="opacity_segment",
                        **private)
        opacity.release(compare_if_active, [active, *sg_in], sg_out,
                        api_name="opacity_compare", **private, **sg_group)
        loaded = model.change(load_model, [model], [banner, class_name], api_name="load_model")
        chain(loaded.success(segment, common + [opacity], seg_out, api_name="model_segment",
                             **private), "model")

        class_name.input(class_tokens, common + [class_name], tok_out, api_name="class_tokens")
        tab_guidance.select(guidance, common, guide_out, api_name="guidance")
        attn_button.click(attention, common + [attn_x, attn_y], attn_out, api_name="attention",
                          **attn_group)
        attn_image.select(attention_click, common, attn_out, api_name="attention_click",
                          api_visibility="private", show_progress="hidden",
                          trigger_mode="always_last", **attn_group)
        sg_button.click(compare, sg_in, sg_out, api_name="compare", **sg_group)
        for tab, name in ((tab_seg, "seg"), (tab_tokens, "tokens"),
                          (tab_guidance, "guidance"), (tab_attention, "attention"),
                          (tab_sg, "sg")):
            tab.select(lambda n=name: n, None, active, api_name=f"tab_{name}",
                       api_visibility="private", show_progress="hidden", queue=False)
        tab_sg.select(compare, sg_in, sg_out, api_name="tab_compare", api_visibility="private",
                      **sg_group)
    return demo
