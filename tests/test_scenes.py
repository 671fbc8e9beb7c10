"""Procedural scenes: determinism, coverage, the context rule, make-scenes round trip."""
import numpy as np
import pytest

from hfgd_lab.cli import main as cli_main
from hfgd_lab.data import build_dataset
from hfgd_lab.data.scenes import (BACKGROUNDS, CONTEXT_CLASSES, DISTRACTOR_TEXTURE, OBJECT_ON,
                                  SCENE_CLASSES, SCENE_PALETTE, T_OBJECT, TEXTURES,
                                  SceneDataset, generate_scene, render_scene, scene_seed)

SIZE = 96  # small scenes keep the tests fast; geometry scales with size


@pytest.fixture(scope="module")
def scenes():
    return [render_scene(scene_seed(0, "train", i), SIZE) for i in range(60)]


def test_same_seed_same_scene_other_split_other_scene():
    a = SceneDataset(num=4, size=SIZE, seed=3, split="train")
    b = SceneDataset(num=4, size=SIZE, seed=3, split="train")
    for i in range(4):
        for x, y in zip(a.load(i), b.load(i)):
            np.testing.assert_array_equal(x, y)
    # the dataset is a pure function of (seed, split, index): order of access is irrelevant
    np.testing.assert_array_equal(a.load(2)[0], generate_scene(scene_seed(3, "train", 2), SIZE)[0])
    val = SceneDataset(num=4, size=SIZE, seed=3, split="val")
    other_seed = SceneDataset(num=4, size=SIZE, seed=4, split="train")
    for i in range(4):
        assert not np.array_equal(a.load(i)[0], val.load(i)[0])
        assert not np.array_equal(a.load(i)[0], other_seed.load(i)[0])
    assert not np.array_equal(a.load(0)[0], a.load(1)[0])


def test_outputs_and_dataset_interface():
    image, mask, texture = generate_scene(0, size=SIZE)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    assert mask.shape == texture.shape == (SIZE, SIZE)
    assert mask.dtype == texture.dtype == np.uint8
    assert mask.max() < len(SCENE_CLASSES) and texture.max() < len(TEXTURES)
    rect = generate_scene(np.random.default_rng(1), size=(64, 128))[0]
    assert rect.shape == (64, 128, 3)

    ds = build_dataset("scenes", split="val", num=3, size=SIZE, seed=1)
    assert len(ds) == 3 and ds.CLASSES == SCENE_CLASSES and ds.PALETTE.shape == (10, 3)
    assert ds.name(2) == "scene_000002" and ds.ignore_index == 255
    item = ds[1]
    assert item["image"].shape == (3, SIZE, SIZE) and item["mask"].shape == (SIZE, SIZE)
    with pytest.raises(IndexError):
        ds.load(3)

    tex = build_dataset("scenes", num=3, size=SIZE, targets="texture")
    assert tex.CLASSES == TEXTURES and len(TEXTURES) >= 10 and tex.PALETTE.shape == (13, 3)
    np.testing.assert_array_equal(tex.load(0)[1], tex.load_texture(0))
    np.testing.assert_array_equal(tex.load_texture(0),
                                  build_dataset("scenes", num=3, size=SIZE).load_texture(0))
    with pytest.raises(ValueError, match="targets"):
        SceneDataset(targets="depth")


def test_class_and_texture_coverage(scenes):
    classes = set().union(*(np.unique(s.mask).tolist() for s in scenes))
    textures = set().union(*(np.unique(s.texture).tolist() for s in scenes))
    assert classes == set(range(len(SCENE_CLASSES))) and len(SCENE_CLASSES) >= 8
    assert textures == set(range(len(TEXTURES)))
    # objects are a real share of the pixels, not specks
    share = np.mean([np.isin(s.mask, CONTEXT_CLASSES).mean() for s in scenes])
    assert 0.04 < share < 0.4


def test_context_rule(scenes):
    seen = set()
    for s in scenes:
        obj = s.texture == T_OBJECT
        # one shared texture for the four context classes, and only for them
        np.testing.assert_array_equal(obj, np.isin(s.mask, CONTEXT_CLASSES))
        # the object's class is a function of the background under it
        lut = np.full(256, 255, np.uint8)
        for bg, cls in OBJECT_ON.items():
            lut[bg] = cls
        np.testing.assert_array_equal(s.mask[obj], lut[s.background[obj]])
        # distractor textures keep the class of the region they lie in
        for bg, tex in DISTRACTOR_TEXTURE.items():
            assert (s.mask[s.texture == tex] == bg).all()
        assert set(np.unique(s.background)) <= set(BACKGROUNDS)
        assert 2 <= len(np.unique(s.background)) <= 3
        seen |= set(np.unique(s.mask[obj]).tolist())
    assert seen == set(CONTEXT_CLASSES)  # the same texture ends up in all four classes


def test_variation_changes_looks_not_layout():
    low = [render_scene(scene_seed(0, "train", i), SIZE, variation=0.1) for i in range(12)]
    high = [render_scene(scene_seed(0, "train", i), SIZE, variation=1.0) for i in range(12)]
    for a, b in zip(low, high):
        np.testing.assert_array_equal(a.mask, b.mask)
        np.testing.assert_array_equal(a.texture, b.texture)
        assert not np.array_equal(a.image, b.image)

    def spread(group):  # how much the mean colour of one texture varies across scenes
        means = [s.image[s.texture == T_OBJECT].mean(0) for s in group if (s.texture == T_OBJECT).any()]
        return np.std(means, axis=0).mean()
    assert spread(low) < 0.5 * spread(high)


def test_make_scenes_round_trip(tmp_path, capsys):
    out = tmp_path / "scenes"
    assert cli_main(["make-scenes", "--out", str(out), "--num", "5", "--size", "64",
                     "--seed", "7", "--split", "val", "--workers", "2"]) == 0
    assert "wrote 5 scenes" in capsys.readouterr().out
    disk = build_dataset("folder", out, "val")
    made = SceneDataset(num=5, size=64, seed=7, split="val")
    assert disk.CLASSES == SCENE_CLASSES
    np.testing.assert_array_equal(disk.PALETTE, SCENE_PALETTE)
    assert [disk.name(i) for i in range(len(disk))] == [made.name(i) for i in range(5)]
    for i in range(5):
        for x, y in zip(disk.load(i), made.load(i)):
            np.testing.assert_array_equal(x, y)
    assert cli_main(["make-scenes", "--out", str(out), "--num", "0"]) == 2
