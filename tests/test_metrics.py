"""SegMetrics against sklearn's confusion matrix; NaN rules; errors; DDP reduction."""
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix

from hfgd_lab.metrics import SegMetrics


def _random_pair(rng, shape, k, ignore_frac=0.2):
    target = rng.integers(0, k, shape)
    pred = np.where(rng.random(shape) < 0.6, target, rng.integers(0, k, shape))
    target[rng.random(shape) < ignore_frac] = 255
    return pred, target


def test_confusion_matches_sklearn_over_batches():
    rng = np.random.default_rng(0)
    k = 7
    m = SegMetrics(num_classes=k)
    preds, targets = [], []
    for shape in [(2, 17, 23), (31, 5), (1, 1, 9, 9)]:
        pred, target = _random_pair(rng, shape, k)
        m.update(torch.from_numpy(pred), torch.from_numpy(target))  # tensors
        preds.append(pred.ravel())
        targets.append(target.ravel())
    pred, target = np.concatenate(preds), np.concatenate(targets)
    keep = target != 255
    expected = confusion_matrix(target[keep], pred[keep], labels=list(range(k)))
    np.testing.assert_array_equal(m.confusion, expected)
    assert m.confusion.dtype == np.int64 and m.confusion.shape == (k, k)

    r = m.compute()
    tp = np.diag(expected)
    iou = tp / (expected.sum(0) + expected.sum(1) - tp)
    acc = tp / expected.sum(1)
    np.testing.assert_allclose(r["IoU"], iou * 100)
    np.testing.assert_allclose(r["Acc"], acc * 100)
    assert r["mIoU"] == pytest.approx(iou.mean() * 100)
    assert r["mAcc"] == pytest.approx(acc.mean() * 100)
    assert r["aAcc"] == pytest.approx((pred[keep] == target[keep]).mean() * 100)


def test_numpy_and_torch_inputs_agree():
    rng = np.random.default_rng(1)
    pred, target = _random_pair(rng, (3, 8, 8), 4)
    a, b = SegMetrics(4), SegMetrics(4)
    a.update(pred, target)
    b.update(torch.from_numpy(pred).int(), torch.from_numpy(target).to(torch.uint8))
    np.testing.assert_array_equal(a.confusion, b.confusion)


def test_nan_for_absent_classes_left_out_of_means():
    m = SegMetrics(num_classes=4)
    target = np.array([0, 0, 1, 1, 255])
    pred = np.array([0, 2, 1, 1, 3])   # class 2 predicted but absent; class 3 nowhere
    m.update(pred, target)
    r = m.compute()
    assert math.isnan(r["IoU"][3]) and math.isnan(r["Acc"][3])  # no union, no GT
    assert r["IoU"][2] == 0.0 and math.isnan(r["Acc"][2])        # false positives only
    assert r["IoU"][0] == pytest.approx(50.0) and r["IoU"][1] == pytest.approx(100.0)
    assert r["mIoU"] == pytest.approx((50 + 100 + 0) / 3)        # over classes 0..2
    assert r["mAcc"] == pytest.approx((50 + 100) / 2)            # over classes in GT
    assert r["aAcc"] == pytest.approx(75.0)                      # 255 not counted


def test_empty_metrics_are_nan():
    r = SegMetrics(3).compute()
    assert math.isnan(r["mIoU"]) and math.isnan(r["aAcc"]) and len(r["IoU"]) == 3


def test_bad_inputs_fail_clearly():
    m = SegMetrics(num_classes=3)
    with pytest.raises(ValueError, match=r"prediction values must be in \[0, 3\).*max 3"):
        m.update(np.array([0, 3]), np.array([0, 1]))
    with pytest.raises(ValueError, match="prediction values.*min -1"):
        m.update(np.array([-1, 0]), np.array([0, 1]))
    with pytest.raises(ValueError, match="target values"):
        m.update(np.array([0, 1]), np.array([0, 7]))
    with pytest.raises(ValueError, match="shape"):
        m.update(np.zeros((2, 3), int), np.zeros((3, 2), int))
    with pytest.raises(ValueError, match="argmax"):
        m.update(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long))
    # a prediction at an ignored pixel is never counted, so it may be anything
    m.update(np.array([0, 200]), np.array([0, 255]))
    assert m.confusion.sum() == 1


def test_merge_reset_and_tensor_round_trip():
    rng = np.random.default_rng(2)
    pred, target = _random_pair(rng, (64,), 5)
    whole, a, b = SegMetrics(5), SegMetrics(5), SegMetrics(5)
    whole.update(pred, target)
    a.update(pred[:30], target[:30])
    b.update(pred[30:], target[30:])
    np.testing.assert_array_equal(a.merge(b).confusion, whole.confusion)
    t = whole.confusion_tensor()
    assert t.dtype == torch.int64
    t += 1  # a copy: the metrics are untouched until set_confusion
    assert whole.confusion.sum() == a.confusion.sum()
    whole.set_confusion(t.double())
    assert whole.confusion.dtype == np.int64 and whole.confusion.sum() == a.confusion.sum() + 25
    whole.reset()
    assert whole.confusion.sum() == 0
    with pytest.raises(ValueError, match="classes"):
        whole.merge(SegMetrics(4))


def test_all_reduce_with_gloo(tmp_path):
    import torch.distributed as dist
    m = SegMetrics(3)
    m.update(np.array([0, 1, 2]), np.array([0, 1, 1]))
    before = m.confusion.copy()
    m.all_reduce()  # no process group: a no-op
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        m.all_reduce()
    finally:
        dist.destroy_process_group()
    np.testing.assert_array_equal(m.confusion, before)
