"""Drawing: array helpers keep shape and dtype; figures come back with the panels asked
for, with text readable without zoom (no text under 8 pt, none overlapping)."""
import itertools

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from hfgd_lab import HFGDConfig, build_model
from hfgd_lab.analysis import (Embedding, GradientNorms, analyze_image, analyze_imagenet,
                               compare_predictions, segmentation_scores)
from hfgd_lab.analysis.scores import class_areas
from hfgd_lab.data.samples import photo_samples
from hfgd_lab.models.imagenet import imagenet_classifier
from hfgd_lab.viz import (MIN_FONT, blend, colorize, default_palette, heatmap_overlay,
                          heatmap_rgb, mark_point, overlay, plot_agreement, plot_attention,
                          plot_cka, plot_class_areas, plot_class_similarity, plot_confusion,
                          plot_decision_changes, plot_embedding, plot_gradient_norms,
                          plot_heatmap, plot_imagenet, plot_iou, plot_prediction,
                          plot_prediction_grid, plot_segmentation, plot_shared_pca,
                          plot_token_similarity)

SMALL = dict(backbone="convnext_atto", num_classes=5, embed_dim=32, cae_heads=4,
             decoder_channels=32, cae_depth=2, dropout=0.0)
PALETTE = np.array([[10, 20, 30], [200, 0, 0], [0, 200, 0], [0, 0, 200], [90, 90, 90]],
                   np.uint8)
NAMES = ["sky", "road", "car", "tree", "wall"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(HFGDConfig(**SMALL)).eval()


@pytest.fixture(scope="module")
def analysis(model):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (72, 96, 3), dtype=np.uint8)
    tgt = rng.integers(0, 5, (72, 96))
    tgt[:3] = 255
    return analyze_image(model, img, tgt)


def _check(fig, n_axes):
    assert isinstance(fig, Figure)
    assert len(fig.axes) == n_axes, [a.get_title() for a in fig.axes]
    FigureCanvasAgg(fig).draw()  # renders without pyplot or a display
    _check_readable(fig)


def _texts(fig) -> list:
    """(Text, window box) of every visible, non-empty text of a drawn figure."""
    renderer = fig.canvas.get_renderer()
    out = []
    for t in fig.findobj(Text):
        if t.get_visible() and t.get_text().strip() and t.get_figure() is not None:
            box = t.get_window_extent(renderer)
            if box.width > 0 and box.height > 0:
                out.append((t, box))
    return out


def _check_readable(fig):
    """No text smaller than MIN_FONT (8 pt = 12 px at the notebooks' 110 dpi), and no two
    texts (titles, labels, legends, tick labels, annotations) overlapping."""
    texts = _texts(fig)
    small = [(t.get_text(), t.get_fontsize()) for t, _ in texts if t.get_fontsize() < MIN_FONT]
    assert not small, small
    clash = [(a.get_text(), b.get_text()) for (a, ba), (b, bb)
             in itertools.combinations(texts, 2) if ba.overlaps(bb)]
    assert not clash, clash


# ---- array helpers ------------------------------------------------------------------

def test_colorize_and_overlay_keep_shape_and_dtype():
    mask = np.array([[0, 1, 255], [4, 3, 2]])
    rgb = colorize(mask, PALETTE)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0, 1], PALETTE[1])
    np.testing.assert_array_equal(rgb[1, 0], PALETTE[4])
    np.testing.assert_array_equal(rgb[0, 2], [0, 0, 0])  # ignored
    img = np.full((2, 3, 3), 100, np.uint8)
    ov = overlay(img, mask, PALETTE, alpha=0.5)
    assert ov.shape == img.shape and ov.dtype == np.uint8
    np.testing.assert_array_equal(ov[0, 2], img[0, 2])  # ignored pixels show the image
    np.testing.assert_array_equal(overlay(img, mask, PALETTE, alpha=0.0), img)
    full = overlay(img, mask, PALETTE, alpha=1.0)
    np.testing.assert_array_equal(full[1], PALETTE[[4, 3, 2]])
    np.testing.assert_array_equal(ov[0, 1], np.round(0.5 * img[0, 1] + 0.5 * PALETTE[1]))
    with pytest.raises(ValueError):
        overlay(img, mask[:1], PALETTE)
    # float palettes in [0, 1] are accepted
    np.testing.assert_array_equal(colorize(mask, PALETTE / 255.0), rgb)


def test_default_palette_is_distinct():
    pal = default_palette(150)
    assert pal.shape == (150, 3) and pal.dtype == np.uint8
    assert len({tuple(c) for c in pal}) == 150 and tuple(pal[0]) != (0, 0, 0)


def test_heatmap_helpers():
    v = np.linspace(-1, 1, 12).reshape(3, 4)
    rgb = heatmap_rgb(v, "gray")
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[-1, -1].tolist() == [255, 255, 255]
    assert heatmap_rgb(v, "gray", vmin=-2, vmax=2)[0, 0, 0] == 64  # fixed range respected
    img = np.zeros((3, 4, 3), np.uint8)
    ho = heatmap_overlay(img, v, "gray", alpha=1.0)
    np.testing.assert_array_equal(ho, rgb)
    b = blend(img, rgb, 0.25)
    assert b.dtype == np.uint8 and b.shape == img.shape
    m = mark_point(img, 2, 1, radius=1)
    assert m.shape == img.shape and m[1, 2].tolist() == [0, 255, 0] and img.sum() == 0


# ---- figures ------------------------------------------------------------------------

def test_segmentation_figures(analysis):
    _check(plot_segmentation(analysis.image, analysis.pred, PALETTE, NAMES), 1)
    _check(plot_prediction(analysis, PALETTE, NAMES), 4)  # image, up, high, truth
    _check(plot_heatmap(analysis.image, analysis.confidence, "confidence"), 2)


def test_similarity_and_guidance_figures(analysis):
    _check(plot_class_similarity(analysis.similarity([1, 2]), analysis.image, 2, NAMES), 3)
    _check(plot_class_similarity(analysis.similarity(0, mode="dot"), analysis.image, 0), 3)
    _check(plot_token_similarity(analysis.token_similarity(), NAMES), 2)
    with pytest.raises(ValueError, match=r"\(K, K\) similarity matrix"):
        plot_token_similarity(np.zeros((5, 32)), NAMES)  # raw tokens, not similarities
    _check(plot_shared_pca(analysis.shared_pca(), analysis.image), 3)
    _check(plot_shared_pca(analysis.shared_pca()), 2)
    changes = analysis.decision_changes()
    _check(plot_agreement(analysis.agreement(), analysis.image, changes), 4)
    _check(plot_agreement(analysis.agreement(), analysis.image), 3)
    _check(plot_decision_changes(changes, analysis.image), 1)
    no_truth = compare_predictions(analysis.pred_high, analysis.pred)
    _check(plot_decision_changes(no_truth, analysis.image), 1)


def test_attention_figure(analysis):
    maps = analysis.attention(40, 30)
    # panels + the colour bar
    fig = plot_attention(maps, analysis.image)
    _check(fig, 2 * (4 + 1) + 2 + 1)
    _check(plot_attention(maps, analysis.image, layers=[1], heads=[0, 3]), 1 * 3 + 2 + 1)
    _check(plot_attention(analysis.class_attention(int(analysis.pred[40, 50])),
                          analysis.image, max_px=None), 13)
    # each panel scaled to its own maximum: the colour bar says so, each title gives it
    bar = fig.axes[-1]
    assert bar.get_ylabel() == "share of the panel's maximum" and bar.get_ylim() == (0, 1)
    peak = float(maps.per_head[0, 2].max())
    assert fig.axes[2].get_title() == f"layer 0 · head 2\nmax {peak:.1%}"
    shared = plot_attention(maps, analysis.image, scale="shared")
    top = max(float(maps.per_head.max()), float(maps.head_mean.max()), float(maps.rollout.max()))
    np.testing.assert_allclose(shared.axes[-1].get_ylim(), (0, top), rtol=1e-6)
    assert shared.axes[-1].get_ylabel().startswith("attention weight")
    with pytest.raises(ValueError, match="scale must be"):
        plot_attention(maps, analysis.image, scale="log")


def test_embedding_scores_and_probe_figures(analysis):
    _check(plot_embedding(analysis.embedding(max_pixels=100), PALETTE, NAMES), 1)
    scores = segmentation_scores(analysis.pred, analysis.target, 5)
    _check(plot_confusion(scores.confusion, NAMES), 2)
    _check(plot_confusion(scores.confusion, NAMES, normalize=None), 2)
    _check(plot_iou(scores, NAMES, PALETTE), 1)
    _check(plot_iou(np.array([50.0, np.nan, 20.0])), 1)
    grads = GradientNorms(modules=["backbone.C5", "cae", "upsampler"],
                          losses=["loss_high", "loss_up"],
                          norms=np.array([[0.5, 0.0], [0.2, 0.0], [0.0, 1.5]]),
                          num_params=[10, 20, 30], loss_values={})
    _check(plot_gradient_norms(grads), 1)
    _check(plot_gradient_norms(grads, log=False), 1)
    cka = {"C2": 0.99, "C3": 0.95, "C4": 0.9, "C5": 0.8}
    _check(plot_cka(cka), 1)
    _check(plot_cka({"sg": [cka, cka], "no sg": [cka, {k: v - 0.1 for k, v in cka.items()}]}), 1)


def test_prediction_grid_and_class_areas(analysis):
    grid = plot_prediction_grid({"a": analysis, "b": analysis}, NAMES, PALETTE)
    _check(grid, 2 * 4)  # image, truth, upsampler, HFG branch per row
    assert [ax.get_title() for ax in grid.axes[:4]] == [
        "image", "ground truth", "prediction (upsampler)", "HFG branch (OS32)"]
    areas = class_areas(analysis.pred, 5)
    assert areas.shape == (5,) and np.isclose(areas.sum(), 1.0)
    np.testing.assert_allclose(class_areas(np.array([[0, 0, 1, 255], [7, -1, 1, 1]]), 3),
                               [2 / 5, 3 / 5, 0.0])
    assert class_areas(np.full((2, 2), 255), 3).sum() == 0
    # one wide segment keeps its name; a 1% sliver cannot hold a label and gets none
    fig = plot_class_areas({"x": np.array([0.9, 0.01, 0.09, 0, 0])}, NAMES, PALETTE)
    _check(fig, 1)
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert "sky\n90%" in labels and not any("road" in t or t == "1%" for t in labels)


def test_embedding_labels_never_overlap_even_when_tokens_crowd():
    rng = np.random.default_rng(0)
    for spread in (0.02, 0.3):
        points = rng.normal(size=(300, 2))
        e = Embedding(points=points, labels=rng.integers(0, 5, 300),
                      source=np.array(["up", "high"] * 150),
                      token_points=rng.normal(scale=spread, size=(5, 2)), method="pca",
                      index=np.arange(300))
        fig = plot_embedding(e, PALETTE, NAMES)
        _check(fig, 1)  # readable: none of the texts (token labels included) overlap
        shown = {t.get_text() for t in fig.axes[0].texts if t.get_visible()}
        legend = {t.get_text() for t in fig.legends[0].get_texts()}
        assert legend == set(NAMES) and shown <= legend and len(shown) >= 3


def test_imagenet_figure():
    [photo] = photo_samples(("chelsea",), max_side=160)
    view = analyze_imagenet(imagenet_classifier(), photo.image, top_k=3)
    fig = plot_imagenet(view, credit=photo.credit)
    _check(fig, 1 + 3 + 1)  # photo, three classes, colour bar
    titles = [ax.get_title() for ax in fig.axes[1:4]]
    assert titles[0] == f"1. {view.names[0]} ({view.probs[0]:.0%})"
    lo, hi = fig.axes[-1].get_ylim()
    assert np.isclose(lo, -hi) and hi >= np.abs(view.cosine).max() - 1e-6
    assert photo.credit in fig.get_supxlabel()
    ev = plot_imagenet(view, what="evidence")
    assert ev.axes[-1].get_ylabel() == "class evidence (cell logit)"
    with pytest.raises(ValueError, match="what must be"):
        plot_imagenet(view, what="probs")
