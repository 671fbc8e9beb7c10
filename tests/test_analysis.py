"""Analysis functions: properties that a wrong implementation would break."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from hfgd_lab import HFGDConfig, build_model
from hfgd_lab.analysis import (BOTH_WRONG, BROKE, FIXED, IGNORED, UNCHANGED, analyze_image,
                               attention_rollout, backbone_cka, class_similarity,
                               compare_predictions, gradient_norms, linear_cka,
                               mask_to_token_weights, module_groups, normalize_confusion,
                               pca_colors, segmentation_scores, shared_pca, token_similarity)
from hfgd_lab.data import fit_max_side, normalize_image
from hfgd_lab.models import resize_logits
from hfgd_lab.models.classifier import classify

SMALL = dict(backbone="convnext_atto", num_classes=5, embed_dim=32, cae_heads=4,
             decoder_channels=32, cae_depth=2)
H, W = 100, 130  # odd sizes: cropped grids, padded token grid (4, 5)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(HFGDConfig(**SMALL)).eval()


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    img[:, : W // 2] //= 3  # some structure
    return img


@pytest.fixture(scope="module")
def target():
    t = np.zeros((H, W), np.int64)
    t[:, 60:] = 2
    t[70:, :] = 4
    t[:4] = 255
    return t


@pytest.fixture(scope="module")
def analysis(model, image, target):
    return analyze_image(model, image, target)


def _with_attention(a, attn):
    return dataclasses.replace(a, attentions=np.asarray(attn, np.float32))


# ---- the stored forward pass --------------------------------------------------------

def test_analysis_holds_one_forward_pass(model, image, analysis):
    a = analysis
    assert a.image.dtype == np.uint8 and a.image.shape == (H, W, 3)
    assert a.input_size == (H, W) and a.grid_high == (4, 5) and a.padded_size == (128, 160)
    hs, ws = math.ceil(H / 4), math.ceil(W / 4)
    assert a.logits.shape == (5, hs, ws) and a.feat_up.shape == (32, hs, ws)
    assert a.logits_high.shape == (5, 4, 5) and a.feat_high.shape == (32, 4, 5)
    assert a.attentions.shape == (2, 4, 20, 20)
    assert a.pred.shape == (H, W) and a.pred_high.shape == (H, W)
    assert a.probs.shape == (5, hs, ws)
    np.testing.assert_allclose(a.probs.sum(0), 1, atol=1e-5)
    assert ((a.confidence > 0) & (a.confidence <= 1)).all()
    # the stored prediction is the model's own full-resolution answer
    with torch.no_grad():
        out = model(normalize_image(image), return_attention=True)
    full = resize_logits(out.logits, (H, W), 4)
    np.testing.assert_array_equal(a.pred, full.argmax(1)[0].numpy())
    np.testing.assert_array_equal(a.pred_high, resize_logits(out.logits_high, (H, W), 32)
                                  .argmax(1)[0].numpy())
    assert a.target.shape == (H, W)


def test_precomputed_outputs_and_tensor_input_give_the_same_analysis(model, image, analysis):
    x = normalize_image(image)
    with torch.no_grad():
        out = model(x, return_attention=True)
    b = analyze_image(model, image, outputs=out)
    c = analyze_image(model, x[0])  # a normalised tensor
    for other in (b, c):
        torch.testing.assert_close(other.logits, analysis.logits)
        np.testing.assert_allclose(other.attentions, analysis.attentions, atol=1e-6)
    assert np.abs(c.image.astype(int) - image.astype(int)).max() <= 1
    with pytest.raises(ValueError, match="outputs were computed"):
        analyze_image(model, image, outputs=out, max_side=64)


def test_probs_hook_takes_the_prediction_from_test_time_augmentation(model, image, analysis):
    from hfgd_lab.engine.inference import InferenceOptions, predict_probs
    probs = predict_probs(model, normalize_image(image), InferenceOptions(flip=True))
    a = analyze_image(model, image, probs=probs)
    assert a.pred_source == "probs" and analysis.pred_source == "forward"
    np.testing.assert_array_equal(a.pred, probs[0].argmax(0).numpy())
    np.testing.assert_allclose(a.confidence, probs[0].max(0).values.numpy(), atol=1e-6)
    torch.testing.assert_close(a.logits, analysis.logits)  # features stay single-pass
    with pytest.raises(ValueError, match="probs must be"):
        analyze_image(model, image, probs=probs[:, :, :10])


def test_max_side_downscales_and_maps_points(model, image, target):
    a = analyze_image(model, image, target, max_side=64)
    assert max(a.input_size) == 64 and a.input_size == fit_max_side((H, W), 64)
    assert a.original_size == (H, W) and a.target.shape == a.input_size
    x, y = a.point_from_original(W - 1, H - 1)
    assert x <= a.input_size[1] and y <= a.input_size[0]
    assert fit_max_side((50, 40), 64) == (50, 40)  # never upscaled


def test_semantic_fpn_baseline_analyses_what_it_has():
    m = build_model(HFGDConfig(**SMALL, arch="semantic_fpn")).eval()
    a = analyze_image(m, np.zeros((64, 64, 3), np.uint8))
    assert not a.has_high and not a.has_attention and a.pred_high is None
    s = a.similarity(0)
    assert s.high is None and s.up.shape == (1, 64, 64)
    for analysis_of in (a.shared_pca, a.agreement, a.decision_changes,
                        lambda: a.attention(1, 1)):
        with pytest.raises(ValueError, match="HFG branch|no CAE attention"):
            analysis_of()


# ---- class-token similarity ---------------------------------------------------------

def test_dot_similarity_is_the_classifier_logit(analysis):
    s = class_similarity(analysis, mode="dot", size="grid")
    torch.testing.assert_close(torch.from_numpy(s.up), analysis.logits)
    torch.testing.assert_close(torch.from_numpy(s.high), analysis.logits_high)
    direct = classify(analysis.feat_up[None], analysis.class_tokens, "dot")[0]
    torch.testing.assert_close(torch.from_numpy(s.up), direct)
    # image size: aligned exactly like resize_logits
    si = class_similarity(analysis, [1, 3], mode="dot")
    ref = resize_logits(analysis.logits[None, [1, 3]], (H, W), 4)[0].numpy()
    np.testing.assert_allclose(si.up, ref, atol=1e-5)
    assert si.of(3)[1].shape == (H, W)


def test_cosine_similarity_is_bounded_and_scale_free(analysis):
    s = class_similarity(analysis, 2, mode="cosine", size="grid")
    f, e = analysis.feat_high[:, 1, 2], analysis.class_tokens[2]
    assert s.high[0, 1, 2] == pytest.approx(float(f @ e / (f.norm() * e.norm())), abs=1e-5)
    assert np.abs(s.up).max() <= 1 + 1e-6
    scaled = dataclasses.replace(analysis, feat_up=analysis.feat_up * 7.0)
    np.testing.assert_allclose(class_similarity(scaled, 2, size="grid").up, s.up, atol=1e-5)


def test_token_similarity_matrix():
    t = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, -3.0]])
    np.testing.assert_allclose(token_similarity(t), [[1, 1, 0], [1, 1, 0], [0, 0, 1]], atol=1e-6)


# ---- guidance vs upsampler ----------------------------------------------------------

def _up_copies_high(a):
    """An analysis whose F_up is F_high repeated over each stride-32 cell."""
    hs, ws = a.feat_up.shape[-2:]
    up = a.feat_high.repeat_interleave(8, 1).repeat_interleave(8, 2)[:, :hs, :ws]
    return dataclasses.replace(a, feat_up=up.contiguous())


def test_shared_pca_gives_identical_features_identical_colours(analysis):
    a = _up_copies_high(analysis)
    p = shared_pca(a)
    assert p.high.shape == (4, 5, 3) and p.up.shape == (25, 33, 3)
    assert p.high_image.shape == p.up_image.shape == (H, W, 3)
    assert p.high.min() >= 0 and p.high.max() <= 1
    np.testing.assert_allclose(p.up_image, p.high_image, atol=1e-6)
    # the basis is shared: fitting on the two maps in the other order changes nothing
    q = pca_colors([a.feat_up, a.feat_high], [16.0, 1024.0])
    np.testing.assert_allclose(q.rgb[1], p.high, atol=1e-5)
    # and it is fitted on both: different F_up changes the F_high colours
    r = shared_pca(analysis)
    assert not np.allclose(r.high, p.high, atol=1e-3)


def test_feature_agreement_is_pixel_aligned(analysis):
    # F_high linear along x: its aligned bilinear upsampling is exact, so an F_up equal
    # to that line at each stride-4 cell centre agrees with cosine 1 (any misalignment,
    # e.g. align_corners=True, rotates the vectors and lowers it)
    d = analysis.feat_high.shape[0]
    e0, e1 = torch.eye(d)[0], torch.eye(d)[1]
    cols = torch.arange(5, dtype=torch.float32)
    high = (e0[:, None] + e1[:, None] * cols[None])[:, None, :].expand(d, 4, 5)
    u = (torch.arange(33, dtype=torch.float32) * 4 + 2 - 16) / 32  # in high-cell units
    up = (e0[:, None] + e1[:, None] * u[None])[:, None, :].expand(d, 25, 33)
    a = dataclasses.replace(analysis, feat_high=high.contiguous(), feat_up=up.contiguous())
    ag = a.agreement()
    assert ag.cosine.shape == (25, 33) and ag.cosine_image.shape == (H, W)
    np.testing.assert_allclose(ag.cosine[:, 4:], 1.0, atol=1e-6)
    shifted = dataclasses.replace(a, feat_up=up.roll(3, dims=2).contiguous()).agreement()
    assert shifted.cosine[:, 4:].min() < 0.99
    real = analysis.agreement()
    assert real.argmax_agree.dtype == bool and real.argmax_agree.shape == (H, W)
    assert real.agree_fraction == pytest.approx(float((analysis.pred == analysis.pred_high).mean()))


def test_decision_changes_on_a_constructed_example():
    high = np.array([[0, 0, 1, 1, 2, 2]])
    up = np.array([[0, 1, 1, 0, 0, 2]])
    tgt = np.array([[0, 1, 0, 1, 255, 2]])
    d = compare_predictions(high, up, tgt)
    np.testing.assert_array_equal(d.changed, [[False, True, False, True, True, False]])
    np.testing.assert_array_equal(d.outcome,
                                  [[UNCHANGED, FIXED, UNCHANGED, BROKE, IGNORED, UNCHANGED]])
    assert d.counts == dict(pixels=6, changed=3, fixed=1, broke=1, both_wrong=0,
                            unchanged_right=2, unchanged_wrong=1, ignored=1)
    d2 = compare_predictions([[0, 1]], [[2, 1]], [[1, 1]])
    assert d2.outcome[0, 0] == BOTH_WRONG and d2.fraction_changed == 0.5
    assert compare_predictions(high, up).outcome is None


def test_decision_changes_of_an_analysis_use_its_target(analysis):
    d = analysis.decision_changes()
    np.testing.assert_array_equal(d.changed, analysis.pred != analysis.pred_high)
    assert d.counts["ignored"] == 4 * W


# ---- CAE attention ------------------------------------------------------------------

def test_attention_rows_sum_to_one_and_maps_have_the_image_shape(analysis):
    np.testing.assert_allclose(analysis.attentions.sum(-1), 1, atol=1e-5)
    m = analysis.attention(37.5, 81)
    assert m.per_head.shape == (2, 4, H, W) and m.head_mean.shape == (2, H, W)
    assert m.rollout.shape == (H, W) and m.grid.shape == (2, 4, 4, 5)
    assert m.query_token == (2, 1)
    np.testing.assert_allclose(m.head_mean, m.per_head.mean(1), atol=1e-6)
    np.testing.assert_allclose(analysis.rollout_matrix().sum(-1), 1, atol=1e-5)
    # no padding tokens here, so each map's grid is a whole attention row
    np.testing.assert_allclose(m.grid.sum((-2, -1)), 1, atol=1e-5)


def test_rollout_of_identity_is_identity_and_multiplies_in_order():
    eye = np.broadcast_to(np.eye(6), (3, 2, 6, 6))
    np.testing.assert_allclose(attention_rollout(eye), np.eye(6), atol=1e-7)
    rng = np.random.default_rng(0)
    a = rng.random((2, 3, 6, 6))
    a /= a.sum(-1, keepdims=True)
    layer = [(x.mean(0) + np.eye(6)) / 2 for x in a]  # rows of A+I sum to 2
    np.testing.assert_allclose(attention_rollout(a), layer[1] @ layer[0], atol=1e-6)
    np.testing.assert_allclose(attention_rollout(a, residual=False),
                               a[1].mean(0) @ a[0].mean(0), atol=1e-6)
    np.testing.assert_allclose(attention_rollout(a).sum(-1), 1, atol=1e-6)


def _peaked(n, target_of, layers=2, heads=3, peak=0.9):
    att = np.full((layers, heads, n, n), (1 - peak) / (n - 1))
    for q in range(n):
        att[:, :, q, target_of(q)] = peak
    return att


def test_query_maps_point_at_the_right_token():
    # pad_multiple=64: a 70x100 image becomes 128x128, a 4x4 token grid of which 3x4
    # cells touch the image, so the row-major width (4) differs from the cropped one
    torch.manual_seed(0)
    m = build_model(HFGDConfig(**SMALL, pad_multiple=64)).eval()
    a = analyze_image(m, np.zeros((70, 100, 3), np.uint8))
    assert a.grid_high == (4, 4) and a.grid_size_high == (3, 4)
    n = 16

    def target_of(q):  # token (r, c) attends to token (2 - r, 3 - c)
        r, c = divmod(q, 4)
        return (2 - r) * 4 + (3 - c) if r < 3 else q

    a = _with_attention(a, _peaked(n, target_of))
    for (x, y) in [(5, 5), (99, 69), (40, 33), (70, 10)]:
        maps = a.attention(x, y)
        r, c = int(y) // 32, int(x) // 32
        assert maps.query_token == (r, c)
        tr, tc = 2 - r, 3 - c
        for amap in list(maps.per_head.reshape(-1, 70, 100)) + list(maps.head_mean):
            ys, xs = np.nonzero(amap == amap.max())
            assert ys.min() >= 32 * tr and ys.max() < 32 * (tr + 1)
            assert xs.min() >= 32 * tc and xs.max() < 32 * (tc + 1)
        assert np.unravel_index(maps.grid_rollout.argmax(), (3, 4)) in [(tr, tc), (r, c)]
        assert maps.padding_mass.shape == (2, 3)
        np.testing.assert_allclose(maps.padding_mass, 4 * 0.1 / 15, atol=1e-6)
    # bilinear maps still peak inside the target cell
    bl = a.attention(5, 5, mode="bilinear").head_mean[0]
    yy, xx = np.unravel_index(bl.argmax(), bl.shape)
    assert 64 <= yy < 96 and 96 <= xx < 128 - 28


def test_class_attention_averages_the_predicted_pixels(analysis):
    # every token attends to itself only: a class query's map is its own mask
    a = _with_attention(analysis, _peaked(20, lambda q: q, peak=1.0))
    k = int(np.bincount(a.pred.ravel()).argmax())
    maps = a.class_attention(k)
    w = mask_to_token_weights(a.pred == k, a.grid_high)
    np.testing.assert_allclose(maps.grid[0, 0].ravel(), w, atol=1e-6)
    np.testing.assert_allclose(maps.grid_rollout.ravel(), w, atol=1e-6)
    absent = [c for c in range(5) if not (a.pred == c).any()]
    if absent:
        with pytest.raises(ValueError, match="no pixel"):
            a.class_attention(absent[0])


def test_mask_to_token_weights():
    mask = np.zeros((40, 70), bool)
    mask[0:2, 0:3] = True      # 6 pixels in token (0, 0)
    mask[35, 65:67] = True     # 2 pixels in token (1, 2)
    w = mask_to_token_weights(mask, (2, 3))
    np.testing.assert_allclose(w, [0.75, 0, 0, 0, 0, 0.25])


# ---- stop-gradient probes -----------------------------------------------------------

def _probe(**kw):
    torch.manual_seed(0)
    m = build_model(HFGDConfig(**{**SMALL, "cae_depth": 1, "dropout": 0.0, **kw}))
    x, y = torch.randn(1, 3, 64, 64), torch.randint(0, 5, (1, 64, 64))
    return gradient_norms(m, x, y), m


def test_module_groups_partition_the_parameters(model):
    groups = module_groups(model)
    assert list(groups)[:5] == ["backbone.stem", "backbone.C2", "backbone.C3",
                                "backbone.C4", "backbone.C5"]
    assert {"high_proj", "cae", "upsampler", "class_tokens"} <= set(groups)
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    detail = module_groups(model, detail=True)
    assert "cae.block1" in detail and "upsampler.proj" in detail


def test_stop_gradient_probe_reports_exact_zeros():
    g, m = _probe(stop_gradient=True)
    protected = [k for k in g.modules if k.startswith("backbone.")] + \
        ["high_proj", "cae", "class_tokens"]
    for mod in protected:
        assert g.get(mod, "loss_up") == 0.0, mod
        assert g.get(mod, "loss_high") > 0.0, mod
    assert g.get("upsampler", "loss_up") > 0 and g.get("upsampler", "loss_high") == 0.0
    assert all(p.grad is None for p in m.parameters())  # the probe touches no .grad
    rows = g.rows()
    assert len(rows) == 2 * len(g.modules) and set(rows[0]) == {"module", "loss", "grad_norm",
                                                                "num_params"}

    g_off, _ = _probe(stop_gradient=False)
    for mod in protected:
        assert g_off.get(mod, "loss_up") > 0.0, mod


# ---- CKA ----------------------------------------------------------------------------

def test_linear_cka_properties():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 12)) @ rng.normal(size=(12, 12))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-10)
    q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    assert linear_cka(x, 3.7 * x @ q + 5.0) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(x, rng.normal(size=(500, 12))) < 0.1
    # a non-isotropic scaling does change it
    assert linear_cka(x, x * np.array([10.0] + [0.1] * 11)) < 0.9
    # the Gram path (n < width) agrees with the feature path
    a, b = rng.normal(size=(20, 50)), rng.normal(size=(20, 40))
    ka, kb = a - a.mean(0), b - b.mean(0)
    ref = np.linalg.norm(kb.T @ ka) ** 2 / (np.linalg.norm(ka.T @ ka) * np.linalg.norm(kb.T @ kb))
    assert linear_cka(a, b) == pytest.approx(ref, rel=1e-9)
    assert linear_cka(torch.from_numpy(x), torch.from_numpy(x)) == pytest.approx(1.0)


def test_backbone_cka_per_stage(model):
    x = torch.randn(2, 3, 70, 64)
    same = backbone_cka(model, model, x, max_samples=512)
    assert list(same) == ["C2", "C3", "C4", "C5"]
    assert all(v == pytest.approx(1.0, abs=1e-6) for v in same.values())
    torch.manual_seed(1)
    other = build_model(HFGDConfig(**SMALL))
    diff = backbone_cka(model, other.backbone, x, max_samples=512)
    assert all(0 <= v < 0.999 for v in diff.values())


# ---- embeddings and scores ----------------------------------------------------------

def test_pixel_embedding_is_deterministic(analysis):
    e1 = analysis.embedding(max_pixels=150)
    e2 = analysis.embedding(max_pixels=150)
    np.testing.assert_array_equal(e1.points, e2.points)
    assert e1.points.shape == (20 + 150, 2) and e1.token_points.shape == (5, 2)
    assert set(np.unique(e1.source)) == {"high", "up"}
    assert set(np.unique(e1.labels)) <= {0, 2, 4, 255}  # ground-truth labels
    t = analysis.embedding(method="tsne", branches=("up",), max_pixels=40, random_state=3)
    assert t.points.shape == (40, 2) and t.token_points.shape == (5, 2)
    assert np.isfinite(t.points).all() and set(np.unique(t.source)) == {"up"}


def test_segmentation_scores_and_confusion():
    pred = np.array([[0, 0, 1, 1], [2, 2, 2, 0]])
    tgt = np.array([[0, 1, 1, 1], [2, 2, 255, 0]])
    s = segmentation_scores(pred, tgt, 3)
    np.testing.assert_array_equal(s.confusion, [[2, 0, 0], [1, 2, 0], [0, 0, 2]])
    np.testing.assert_allclose(s.IoU, [200 / 3, 200 / 3, 100])
    assert s.aAcc == pytest.approx(6 / 7 * 100)
    np.testing.assert_allclose(normalize_confusion(s.confusion)[1], [1 / 3, 2 / 3, 0])
    s2 = segmentation_scores([torch.from_numpy(pred)], [torch.from_numpy(tgt)], 4)
    assert np.isnan(s2.IoU[3]) and s2.mIoU == pytest.approx(s.mIoU)
