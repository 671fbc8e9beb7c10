"""The app's handlers in process (no server): one forward pass per (model, image,
options) feeds every view, coordinates map correctly, cards degrade gracefully, and
checkpoints are read only as safetensors + JSON."""
import io
import json
import shutil
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from hfgd_lab import zoo
from hfgd_lab.app.examples import make_examples
from hfgd_lab.app.handlers import App, _experiment_table
from hfgd_lab.app.state import LRU, AppError, ModelStore, Options
from hfgd_lab.zoo import BUNDLED_VARIANTS, write_stand_ins

BUNDLED = tuple(BUNDLED_VARIANTS)

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


def _by_kind(examples, kind):
    return next(e for e in examples if e.kind == kind)


def _count_forwards(entry):
    calls = []
    handle = entry.model.register_forward_hook(lambda *a: calls.append(1))
    return calls, handle


def _png(arr) -> bytes:
    b = io.BytesIO()
    Image.fromarray(arr).save(b, "PNG")
    return b.getvalue()


def test_bundled_models_listed_default_first(app):
    assert app.store.bundled()[0] == "hfgd_scenes_sg"
    assert set(app.store.bundled()) == set(BUNDLED)


def test_one_forward_pass_feeds_every_view(app, examples):
    scene = _by_kind(examples, "scene")
    entry = app.model("hfgd_scenes_sg")
    calls, handle = _count_forwards(entry)
    try:
        o = Options(max_side=256)
        seg = app.segment(str(scene.path), "hfgd_scenes_sg", o)
        tok = app.class_tokens(str(scene.path), "hfgd_scenes_sg", o, "sky")
        guide = app.guidance(str(scene.path), "hfgd_scenes_sg", o)
        for x, y in [(5, 5), (100, 30), (180, 180), (None, None)]:
            att = app.attention(str(scene.path), "hfgd_scenes_sg", o, x, y)
        app.segment(str(scene.path), "hfgd_scenes_sg", o, opacity=0.9)
        assert len(calls) == 1
        # the guidance pictures do not depend on the call: drawn once, then reused
        assert app.guidance(str(scene.path), "hfgd_scenes_sg", o) is guide
        # different options: a new pass, then cached again
        app.segment(str(scene.path), "hfgd_scenes_sg", Options(max_side=128))
        app.attention(str(scene.path), "hfgd_scenes_sg", Options(max_side=128), 3, 3)
        assert len(calls) == 2
    finally:
        handle.remove()
    h, w = scene.mask.shape
    assert seg.overlay.shape == (h, w, 3) and seg.overlay.dtype == np.uint8
    assert seg.headers[-1].startswith("IoU")  # a scene example carries its ground truth
    assert abs(sum(r[1] for r in seg.areas) - 100.0) < 0.1
    assert "ground truth" in seg.summary
    assert tok.class_name == "sky" and tok.high.shape == tok.up.shape == (h, w, 3)
    assert guide.pca_high.shape == (h, w, 3) and "fixed" in guide.stats
    assert att.grid is not None and att.rollout.shape == (h, w, 3)


def test_cache_is_bounded_lru(app, examples):
    path = str(_by_kind(examples, "scene").path)
    for side in (64, 96, 128, 160, 192, 224):
        app.segment(path, "hfgd_scenes_sg", Options(max_side=side))
    assert len(app.analyses) <= app.analyses.maxsize == 4
    keys = app.analyses.keys()
    assert keys[-1][2][0] == 224  # most recent last


def test_cache_is_bounded_in_bytes(weights, examples):
    path = str(_by_kind(examples, "photo").path)
    small = App(ModelStore("cpu"), cache_size=10, cache_mb=1e-3)
    a = small.analysed(path, None, Options(max_side=128)).analysis
    assert small.analyses.nbytes >= a.feat_up.nelement() * 4
    small.analysed(path, None, Options(max_side=96))
    assert len(small.analyses) == 1  # over the budget: only the newest stays
    cache = LRU(10, max_bytes=100, sizeof=len)
    cache.put("a", "x" * 60)
    cache.put("b", "y" * 60)
    assert cache.keys() == ["b"]
    cache.put("c", "z" * 500)
    assert cache.keys() == ["c"] and cache.nbytes == 500


def test_attention_coordinates_map_to_the_analysed_image(app, examples):
    photo = _by_kind(examples, "photo")
    W, H = Image.open(photo.path).size
    o = Options(max_side=200)
    an = app.analysed(str(photo.path), None, o)
    h, w = an.analysis.input_size
    assert max(h, w) == 200 and abs(w / h - W / H) < 0.02
    v = app.attention(str(photo.path), None, o, W / 2, H - 1)  # uploaded image's pixels
    assert v.query == pytest.approx((w / 2, (H - 1) * h / H))
    assert v.query_image == (round(W / 2), H - 1)  # and back, for the UI's x/y boxes
    v = app.attention(str(photo.path), None, o, w + 5, -3, space="analysed")  # clamped
    assert v.query == pytest.approx((w, 0), abs=0.01)
    assert f"column {(w - 1) // 32})" in v.caption
    v = app.attention(str(photo.path), None, o, 10, 20, space="analysed")
    assert v.query == (10.0, 20.0)
    assert v.query_image == (round(10 * W / w), round(20 * H / h))
    assert "(row 0, column 0)" in v.caption
    with pytest.raises(AppError, match="outside"):
        app.attention(str(photo.path), None, o, W + 5, 0)
    with pytest.raises(AppError, match="numbers"):
        app.attention(str(photo.path), None, o, "left", 0)


def test_banner_says_plainly_what_the_model_knows(app, examples):
    photo = _by_kind(examples, "photo")
    scene = _by_kind(examples, "scene")
    b = app.segment(str(photo.path)).banner
    assert "real photograph" in b and "never seen" in b and "procedural scenes" in b
    assert "Trained on: random weights" in b
    assert "held-out" in app.segment(str(scene.path)).banner
    upload = np.random.default_rng(1).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    b = app.segment(_png(upload)).banner
    assert "If this is a photograph" in b


def test_semantic_fpn_views_explain_what_is_missing(app, examples):
    path = str(_by_kind(examples, "scene").path)
    g = app.guidance(path, "semantic_fpn_scenes")
    assert g.pca_high is None and "no HFG" in g.stats
    a = app.attention(path, "semantic_fpn_scenes", x=3, y=3)
    assert a.grid is None and "no CAE attention" in a.caption
    t = app.class_tokens(path, "semantic_fpn_scenes")
    assert t.high is None and t.up is not None


def test_compare_runs_each_model_once_and_shows_the_experiment(app, examples):
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
    assert "stop-gradient on" in v1.caption and "agrees with the sg-on model" in v1.caption
    assert "| HFGD, stop-gradient on | 52.0 ± 1.0 |" in v1.table
    assert "drift C2" in v1.table


def test_experiment_table_degrades_gracefully(app):
    class E:
        def __init__(self, card):
            self.card = card
    assert "carry no stop-gradient" in _experiment_table([E({})])
    odd = {"sg_experiment": {"variants": {"hfgd_sg": {"val_mIoU": {"mean": float("nan")},
                                                      "cka_C3": [0.9, 0.1]}}}}
    table = _experiment_table([E(odd)])
    assert "| HFGD, stop-gradient on | n/a | n/a | 0.100 ± 0.100 | n/a | n/a |" in table


def test_sliding_window_and_flip(app, examples):
    path = str(_by_kind(examples, "scene").path)
    an = app.analysed(path, None, Options(max_side=256, sliding=True, window=128, flip=True))
    assert an.analysis.pred_source == "probs"
    assert "sliding window 128 px, flip" in app.segment(
        path, None, Options(max_side=256, sliding=True, window=128, flip=True)).summary
    # flip alone: the analysed pass is the plain view, so two passes in all, and the
    # prediction is the mean of both views' probabilities, as engine.inference computes it
    import torch

    from hfgd_lab.analysis import normalize_image
    from hfgd_lab.engine.inference import InferenceOptions, predict_probs
    calls, handle = _count_forwards(app.model(None))
    try:
        an = app.analysed(path, None, Options(max_side=200, flip=True))
    finally:
        handle.remove()
    assert len(calls) == 2 and an.analysis.pred_source == "probs"
    x = normalize_image(an.image.array)
    ref = predict_probs(app.model(None).model, x, InferenceOptions(flip=True))[0]
    assert (ref.argmax(0).numpy() != an.analysis.pred).mean() < 1e-3
    np.testing.assert_allclose(an.analysis.confidence, ref.max(0).values.numpy(), atol=1e-4)


def test_options_are_validated():
    assert Options.parse(300.4, True, False, 100) == Options(300, True, 100, False)
    assert Options.parse(300, False, False, 100).key() == Options.parse(300, False, False, 96).key()
    for bad in [dict(max_side=8), dict(max_side=10 ** 6), dict(max_side="big"), dict(window=4)]:
        with pytest.raises(AppError):
            Options.parse(**{"max_side": 512, **bad})


def test_class_names_and_indices(app, examples):
    path = str(_by_kind(examples, "scene").path)
    assert app.class_tokens(path, None, class_name="water").class_name == "water"
    assert app.class_tokens(path, None, class_name="3").class_name == "grass"
    with pytest.raises(AppError, match="unknown class"):
        app.class_tokens(path, None, class_name="unicorn")


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
    with pytest.raises(AppError, match="limit"):
        app.segment(str(big))
    with pytest.raises(AppError, match="not found"):
        app.segment(str(tmp_path / "missing.png"))


def test_checkpoint_paths_load_only_safetensors_and_json(app, weights, tmp_path, monkeypatch):
    def no_pickle(*a, **k):
        raise AssertionError("torch.load must never be called")
    monkeypatch.setattr(torch, "load", no_pickle)
    # a user checkpoint: the two files under another name, its card without the extras
    for suffix in (".safetensors", ".json"):
        shutil.copy(weights / f"hfgd_scenes_nosg{suffix}", tmp_path / f"mine{suffix}")
    card = json.loads((tmp_path / "mine.json").read_text())
    for k in ("trained_on", "metrics", "sg_experiment", "variant"):
        card.pop(k, None)
    (tmp_path / "mine.json").write_text(json.dumps(card))
    info = app.model_info(str(tmp_path / "mine.safetensors"))
    assert info.label == "mine" and "does not say what it was trained on" in info.markdown
    assert "stop-gradient off" in info.markdown
    v = app.segment(np.zeros((64, 64, 3), np.uint8), str(tmp_path / "mine"))
    assert "does not say" in v.banner
    # a pickle is not a checkpoint here
    torch.save({"x": torch.zeros(1)}, tmp_path / "evil.pt")
    with pytest.raises(AppError, match="no checkpoint card"):
        app.model_info(str(tmp_path / "evil.pt"))
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "broken.safetensors").write_bytes(b"junk")
    with pytest.raises(AppError, match="not valid JSON"):
        app.model_info(str(tmp_path / "broken"))
    card["config"]["embed_dim"] = 64  # weights no longer fit the config
    (tmp_path / "wrong.json").write_text(json.dumps(card))
    shutil.copy(tmp_path / "mine.safetensors", tmp_path / "wrong.safetensors")
    with pytest.raises(AppError, match="does not fit"):
        app.model_info(str(tmp_path / "wrong"))
    closed = App(ModelStore("cpu", allow_paths=False))
    with pytest.raises(AppError, match="unknown model"):
        closed.model_info(str(tmp_path / "mine"))


def test_card_text_is_escaped(weights, tmp_path):
    for suffix in (".safetensors", ".json"):
        shutil.copy(weights / f"hfgd_scenes_sg{suffix}", tmp_path / f"x{suffix}")
    card = json.loads((tmp_path / "x.json").read_text())
    card["classes"][0] = "<img src=x onerror=alert(1)>"
    card["trained_on"] = "<script>alert(1)</script>"
    (tmp_path / "x.json").write_text(json.dumps(card))
    app = App(ModelStore("cpu"))
    v = app.segment(np.zeros((64, 64, 3), np.uint8), str(tmp_path / "x"))
    assert "<script>" not in v.banner and "&lt;script&gt;" in v.banner
    assert "<img src=x" not in v.legend_html


def test_lru_computes_once_under_concurrency():
    cache = LRU(2)
    calls = []
    barrier = threading.Barrier(8)

    def compute():
        calls.append(1)
        return object()

    results = []

    def worker():
        barrier.wait()
        results.append(cache.get_or_compute("k", compute))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len({id(r) for r in results}) == 1
    cache.put("a", 1)
    cache.put("b", 2)
    assert "k" not in cache and len(cache) == 2


def test_cli_has_the_app_command():
    from hfgd_lab.cli import build_parser
    args = build_parser().parse_args(["app", "--port", "7999", "--share", "--host", "0.0.0.0"])
    assert (args.port, args.share, args.host) == (7999, True, "0.0.0.0")
    args = build_parser().parse_args(["app"])
    assert (args.port, args.share, args.host) == (7860, False, "127.0.0.1")
