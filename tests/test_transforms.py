"""Transforms: shapes, padding values, cat_max_ratio, paired flips, torch-seeded randomness."""
import numpy as np
import pytest
import torch

from hfgd_lab.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, Compose, Normalize, Pad,
                                      PhotoMetricDistortion, RandomCrop, RandomFlip,
                                      RandomResize, ToTensor, build_eval_transform,
                                      build_train_transform)


def _sample(h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    mask = rng.integers(0, 5, (h, w)).astype(np.uint8)
    # the image encodes the mask, so that any misalignment between the two shows
    image = np.stack([mask * 40, np.arange(w)[None].repeat(h, 0) % 256,
                      np.arange(h)[:, None].repeat(w, 1) % 256], -1).astype(np.uint8)
    return {"image": image, "mask": mask, "name": "x"}


def test_crop_and_pad_shapes_and_fill_values():
    s = _sample(30, 50)
    out = Compose([RandomCrop((40, 40), cat_max_ratio=1.0), Pad((40, 40))])(s)
    assert out["image"].shape == (40, 40, 3) and out["mask"].shape == (40, 40)
    assert (out["mask"][30:] == 255).all()  # 30 rows of data, the rest padding
    mean_u8 = np.round(np.array(IMAGENET_MEAN) * 255).astype(np.uint8)
    assert (out["image"][30:] == mean_u8).all()
    np.testing.assert_array_equal(out["image"][:30, :, 0], out["mask"][:30] * 40)
    # crop of a larger image: exactly the crop size, image and mask from the same place
    big = _sample(100, 120)
    c = RandomCrop(32, cat_max_ratio=1.0)(big)
    assert c["image"].shape == (32, 32, 3) and c["mask"].shape == (32, 32)
    np.testing.assert_array_equal(c["image"][..., 0], c["mask"] * 40)


def test_pad_after_normalise_uses_zero_and_ignore():
    t = build_train_transform((64, 80), scale=(1.0, 1.0), photometric=False, flip=False)
    out = t(_sample(40, 50))
    assert out["image"].shape == (3, 64, 80) and out["mask"].shape == (64, 80)
    assert out["image"].dtype == torch.float32 and out["mask"].dtype == torch.int64
    assert (out["image"][:, 40:] == 0).all() and (out["image"][:, :, 50:] == 0).all()
    assert (out["mask"][40:] == 255).all() and (out["mask"][:, 50:] == 255).all()
    assert (out["mask"][:40, :50] < 5).all()


def test_cat_max_ratio_is_respected():
    # class 0 on the left 60 columns, class 1 on the right 40: a 40-wide crop has a
    # good class balance only for 31 <= x <= 49, about a third of the positions
    mask = np.zeros((40, 100), np.uint8)
    mask[:, 60:] = 1
    mask[:5] = 255  # ignored pixels never count
    image = np.zeros((40, 100, 3), np.uint8)

    def balanced(ratio, seed):
        torch.manual_seed(seed)
        crop = RandomCrop((40, 40), cat_max_ratio=ratio)({"image": image, "mask": mask})["mask"]
        counts = np.bincount(crop[crop != 255].ravel(), minlength=2)
        return counts.max() / counts.sum() < 0.75

    with_rule = np.mean([balanced(0.75, s) for s in range(40)])
    without = np.mean([balanced(1.0, s) for s in range(40)])
    assert with_rule >= 0.9 and without <= 0.6


def test_flip_moves_image_and_mask_together():
    s = _sample()
    out = RandomFlip(p=1.0)(s)
    np.testing.assert_array_equal(out["mask"], s["mask"][:, ::-1])
    np.testing.assert_array_equal(out["image"], s["image"][:, ::-1])
    assert RandomFlip(p=0.0)(s)["mask"] is s["mask"]
    torch.manual_seed(0)
    flipped = s["mask"][:, ::-1]
    flips = [np.array_equal(RandomFlip(0.5)(s)["mask"], flipped) for _ in range(200)]
    assert 0.35 < np.mean(flips) < 0.65


def test_random_resize_sizes():
    s = _sample(50, 100)
    out = RandomResize(scale=(2.0, 2.0))(s)
    assert out["image"].shape[:2] == (100, 200) and out["mask"].shape == (100, 200)
    assert set(np.unique(out["mask"])) <= set(np.unique(s["mask"]))  # nearest, no blends
    # base_size bounds long and short side whatever the orientation (mmseg's rule)
    out = RandomResize(scale=(1.0, 1.0), base_size=(256, 1024))(s)
    assert out["image"].shape[:2] == (256, 512)
    out = RandomResize(scale=(1.0, 1.0), base_size=(256, 1024))(_sample(100, 50))
    assert out["image"].shape[:2] == (512, 256)
    torch.manual_seed(0)
    sizes = {RandomResize((0.5, 2.0))(s)["image"].shape for _ in range(10)}
    assert len(sizes) > 5


def test_photometric_changes_colour_only():
    s = _sample()
    torch.manual_seed(1)
    outs = [PhotoMetricDistortion()(s) for _ in range(8)]
    assert all(o["image"].dtype == np.uint8 and o["image"].shape == s["image"].shape
               for o in outs)
    assert all(o["mask"] is s["mask"] for o in outs)
    assert sum(not np.array_equal(o["image"], s["image"]) for o in outs) >= 6


def test_normalise_and_eval_transform():
    s = _sample(8, 8)
    out = build_eval_transform()(s)
    assert out["image"].shape == (3, 8, 8) and out["mask"].shape == (8, 8)
    expected = (s["image"][..., 1] / 255.0 - IMAGENET_MEAN[1]) / IMAGENET_STD[1]
    np.testing.assert_allclose(out["image"][1].numpy(), expected, atol=1e-5)
    assert out["name"] == "x"
    assert isinstance(Normalize()(s)["image"], np.ndarray)
    assert ToTensor()(Normalize()(s))["mask"].dtype == torch.int64


def test_train_transform_is_reproducible_from_torch_seed_only():
    t = build_train_transform((32, 32))
    s = _sample(60, 70)

    def run(torch_seed, numpy_seed):
        np.random.seed(numpy_seed)  # numpy's global RNG must not matter
        torch.manual_seed(torch_seed)
        return t(s)

    a, b, c = run(5, 0), run(5, 123), run(6, 0)
    torch.testing.assert_close(a["image"], b["image"])
    torch.testing.assert_close(a["mask"], b["mask"])
    assert not torch.equal(a["image"], c["image"])
    assert a["image"].shape == (3, 32, 32) and a["mask"].shape == (32, 32)


def test_crop_size_int_or_pair():
    s = _sample(100, 100)
    assert RandomCrop(20, cat_max_ratio=1.0)(s)["image"].shape == (20, 20, 3)
    assert RandomCrop((20, 30), cat_max_ratio=1.0)(s)["image"].shape == (20, 30, 3)
    assert Pad(128)(s)["mask"].shape == (128, 128)


@pytest.mark.parametrize("dtype", [np.uint8, np.int64])
def test_resize_keeps_mask_dtype(dtype):
    s = _sample(10, 10)
    s["mask"] = s["mask"].astype(dtype)
    out = RandomResize((3.0, 3.0))(s)
    assert out["mask"].dtype == dtype and out["mask"].shape == (30, 30)
