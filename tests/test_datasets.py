"""Real dataset layouts on tiny generated trees: classes, label mapping, clear failures."""
import numpy as np
import pytest
import torch
from PIL import Image

from hfgd_lab.data import DATASETS, DatasetError, SegDataset, build_dataset
from hfgd_lab.data.classes import voc_colormap


def _image(path, h=6, w=8, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path, fmt)


def _mask(path, values, h=6, w=8, palette=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.resize(np.asarray(values, np.uint8), (h, w))
    if palette:  # a colour PNG whose pixels are palette indices, as VOC ships them
        im = Image.frombytes("P", (w, h), arr.tobytes())
        im.putpalette(voc_colormap().ravel().tolist())
    else:
        im = Image.fromarray(arr)
    im.save(path)
    return arr


def _lists(root, folder, split_ids):
    d = root / folder
    d.mkdir(parents=True, exist_ok=True)
    for split, ids in split_ids.items():
        (d / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))


# -- layouts and label mapping ---------------------------------------------------------

def test_ade20k_reduces_zero_label(tmp_path):
    raw = _mask(tmp_path / "annotations/training/ADE_train_1.png", [0, 1, 150, 255])
    _image(tmp_path / "images/training/ADE_train_1.jpg")
    _image(tmp_path / "images/validation/ADE_val_1.jpg")
    _mask(tmp_path / "annotations/validation/ADE_val_1.png", [5])
    ds = build_dataset("ade20k", tmp_path, "train")
    assert len(ds) == 1 and len(ds.CLASSES) == 150 and ds.PALETTE.shape == (150, 3)
    assert ds.CLASSES[0] == "wall" and ds.CLASSES[7] == "bed" and ds.PALETTE.dtype == np.uint8
    image, mask = ds.load(0)
    assert image.shape == (6, 8, 3) and image.dtype == np.uint8
    expected = {0: 255, 1: 0, 150: 149, 255: 255}
    np.testing.assert_array_equal(mask, np.vectorize(expected.get)(raw))
    assert ds.name(0) == "ADE_train_1"
    assert build_dataset("ade20k", tmp_path, "val").name(0) == "ADE_val_1"
    item = ds[0]
    assert item["image"].shape == (3, 6, 8) and item["image"].dtype == torch.float32
    assert item["mask"].dtype == torch.int64 and item["name"] == "ADE_train_1"
    assert isinstance(ds, SegDataset) and ds.ignore_index == 255


def test_pascal_context59(tmp_path):
    _lists(tmp_path, "ImageSets/SegmentationContext", {"train": ["2008_000001"], "val": []})
    _image(tmp_path / "JPEGImages/2008_000001.jpg")
    _image(tmp_path / "JPEGImages/2008_000002.jpg")  # not listed: not loaded
    _mask(tmp_path / "SegmentationClassContext/2008_000001.png", [0, 1, 59])
    ds = build_dataset("pascal_context59", tmp_path, "train")
    assert len(ds) == 1 and len(ds.CLASSES) == 59 and ds.PALETTE.shape == (59, 3)
    assert ds.CLASSES[0] == "aeroplane" and ds.CLASSES[-1] == "wood"
    assert set(np.unique(ds.load(0)[1])) == {255, 0, 58}


def test_coco_stuff_raw_ids_and_train_ids(tmp_path):
    _image(tmp_path / "images/train2017/000000000009.jpg")
    _image(tmp_path / "images/train2017/000000000025.jpg")
    raw = _mask(tmp_path / "annotations/train2017/000000000009.png", [0, 12, 11, 181, 255, 91])
    # when both exist, the train-id file wins
    _mask(tmp_path / "annotations/train2017/000000000025.png", [200])
    _mask(tmp_path / "annotations/train2017/000000000025_labelTrainIds.png", [3, 170, 255])
    ds = build_dataset("coco_stuff164k", tmp_path, "train")
    assert len(ds.CLASSES) == 171 and ds.PALETTE.shape == (171, 3)
    assert [ds.name(i) for i in range(2)] == ["000000000009", "000000000025"]
    expected = {0: 0, 12: 11, 11: 255, 181: 170, 255: 255, 91: 80}
    np.testing.assert_array_equal(ds.load(0)[1], np.vectorize(expected.get)(raw))
    # raw 12 is "stop sign" (raw 11, "street sign", has no class); raw 91 is "banner"
    assert ds.CLASSES[11] == "stop sign" and ds.CLASSES[80] == "banner"
    assert set(np.unique(ds.load(1)[1])) == {3, 170, 255}


def test_cityscapes_label_ids_and_train_ids(tmp_path):
    img = "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png"
    _image(tmp_path / img, fmt="PNG")
    raw = _mask(tmp_path / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png",
                [7, 0, 26, 33, 9, 23])
    _mask(tmp_path / "gtFine/train/aachen/aachen_000000_000019_gtFine_color.png", [1])
    _image(tmp_path / "leftImg8bit/train/bremen/bremen_000001_000019_leftImg8bit.png")
    _mask(tmp_path / "gtFine/train/bremen/bremen_000001_000019_gtFine_labelTrainIds.png",
          [0, 18, 255])
    ds = build_dataset("cityscapes", tmp_path, "train")
    assert len(ds) == 2 and len(ds.CLASSES) == 19 and ds.CLASSES[0] == "road"
    assert ds.name(0) == "aachen_000000_000019"
    expected = {7: 0, 0: 255, 26: 13, 33: 18, 9: 255, 23: 10}
    np.testing.assert_array_equal(ds.load(0)[1], np.vectorize(expected.get)(raw))
    assert set(np.unique(ds.load(1)[1])) == {0, 18, 255}


@pytest.mark.parametrize("aug", [False, True])
def test_voc_palette_masks_keep_border_ignore(tmp_path, aug):
    _lists(tmp_path, "ImageSets/Segmentation", {"train": ["2007_000032"], "aug": ["2007_000032"]})
    _image(tmp_path / "JPEGImages/2007_000032.jpg")
    folder = "SegmentationClassAug" if aug else "SegmentationClass"
    raw = _mask(tmp_path / folder / "2007_000032.png", [0, 1, 255, 20], palette=not aug)
    assert Image.open(tmp_path / folder / "2007_000032.png").mode == ("L" if aug else "P")
    ds = build_dataset("voc2012", tmp_path, "aug" if aug else "train", aug=aug)
    assert len(ds.CLASSES) == 21 and ds.CLASSES[0] == "background"
    assert ds.PALETTE[1].tolist() == [128, 0, 0]
    np.testing.assert_array_equal(ds.load(0)[1], raw)


def test_folder_with_and_without_splits(tmp_path):
    (tmp_path / "classes.txt").write_text("# my data\nbackground\ntraffic light 250 170 30\n\ncar\n")
    _image(tmp_path / "images/train/a.jpg")
    _image(tmp_path / "images/train/b.png", fmt="PNG")
    _mask(tmp_path / "masks/train/a.png", [0, 1, 2, 255])
    _mask(tmp_path / "masks/train/b.png", [2])
    ds = build_dataset("folder", tmp_path, "train")
    assert ds.CLASSES == ("background", "traffic light", "car")
    assert ds.PALETTE.shape == (3, 3) and ds.PALETTE[1].tolist() == [250, 170, 30]
    assert [ds.name(i) for i in range(len(ds))] == ["a", "b"]
    assert set(np.unique(ds.load(0)[1])) == {0, 1, 2, 255}
    with pytest.raises(FileNotFoundError, match="split folder not found.*train"):
        build_dataset("folder", tmp_path, "val")

    flat = tmp_path / "flat"
    (flat / "classes.txt").parent.mkdir()
    (flat / "classes.txt").write_text("a\nb\n")
    _image(flat / "images/x.jpeg")
    _mask(flat / "masks/x.png", [0, 1, 2])
    ds = build_dataset("folder", flat, "anything", reduce_zero_label=True)
    assert len(ds) == 1 and set(np.unique(ds.load(0)[1])) == {255, 0, 1}


def test_build_dataset_names_and_errors(tmp_path):
    assert set(DATASETS) == {"ade20k", "pascal_context59", "coco_stuff164k", "cityscapes",
                             "voc2012", "folder", "scenes"}
    with pytest.raises(ValueError, match="unknown dataset 'nope'.*ade20k"):
        build_dataset("nope", tmp_path)
    with pytest.raises(ValueError, match="needs a root"):
        build_dataset("ade20k")


# -- failures name the file and the problem ----------------------------------------------

def test_missing_root_and_split(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'none'}.*root directory not found"):
        build_dataset("ade20k", tmp_path / "none")
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match=r"images/training: split 'train' image"):
        build_dataset("ade20k", tmp_path, "train")
    _lists(tmp_path, "ImageSets/Segmentation", {"train": ["x"]})
    with pytest.raises(FileNotFoundError, match=r"Segmentation/val\.txt: split list not found "
                                                r"\(available: train\)"):
        build_dataset("voc2012", tmp_path, "val")


def test_image_without_mask(tmp_path):
    _image(tmp_path / "images/training/a.jpg")
    _image(tmp_path / "images/training/b.jpg")
    _mask(tmp_path / "annotations/training/a.png", [1])
    with pytest.raises(FileNotFoundError) as e:
        build_dataset("ade20k", tmp_path, "train")
    msg = str(e.value)
    assert "images/training/b.jpg: image has no mask" in msg
    assert "annotations/training/b.png" in msg and "1 of 2" in msg


def test_listed_image_missing(tmp_path):
    _lists(tmp_path, "ImageSets/Segmentation", {"train": ["a", "gone"]})
    _image(tmp_path / "JPEGImages/a.jpg")
    _mask(tmp_path / "SegmentationClass/a.png", [0])
    with pytest.raises(FileNotFoundError, match=r"JPEGImages/gone\.jpg: image listed in .*train\.txt"):
        build_dataset("voc2012", tmp_path, "train")


def test_mask_size_mismatch(tmp_path):
    _image(tmp_path / "images/training/a.jpg", 6, 8)
    _mask(tmp_path / "annotations/training/a.png", [1], 6, 9)
    ds = build_dataset("ade20k", tmp_path, "train")
    with pytest.raises(DatasetError, match=r"annotations/training/a\.png: mask size 9x6 .*"
                                           r"differs from image .*a\.jpg size 8x6"):
        ds.load(0)


def test_labels_out_of_range(tmp_path):
    (tmp_path / "classes.txt").write_text("a\nb\nc\n")
    _image(tmp_path / "images/a.jpg")
    _mask(tmp_path / "masks/a.png", [0, 1, 3, 7, 255])
    ds = build_dataset("folder", tmp_path)
    with pytest.raises(DatasetError, match=r"masks/a\.png: label values 3, 7 out of range for "
                                           r"3 classes"):
        ds[0]
    # Pascal Context raw 60 -> 59 after reduce_zero_label: out of range for 59 classes
    _lists(tmp_path / "pc", "ImageSets/SegmentationContext", {"train": ["x"]})
    _image(tmp_path / "pc/JPEGImages/x.jpg")
    _mask(tmp_path / "pc/SegmentationClassContext/x.png", [60])
    with pytest.raises(DatasetError, match=r"x\.png: label values 59 out of range.*after label"):
        build_dataset("pascal_context59", tmp_path / "pc").load(0)


def test_colour_mask_and_corrupt_files(tmp_path):
    (tmp_path / "classes.txt").write_text("a\nb\n")
    _image(tmp_path / "images/a.jpg")
    _image(tmp_path / "masks/a.png", fmt="PNG")  # an RGB "mask"
    (tmp_path / "images/b.jpg").write_bytes(b"not a jpeg")
    _mask(tmp_path / "masks/b.png", [0])
    ds = build_dataset("folder", tmp_path)
    with pytest.raises(DatasetError, match=r"masks/a\.png: a colour \(RGB\) image is not a label map"):
        ds.load(0)
    with pytest.raises(DatasetError, match=r"images/b\.jpg: not a readable image"):
        ds.load(1)


def test_classes_txt_problems(tmp_path):
    _image(tmp_path / "images/a.jpg")
    _mask(tmp_path / "masks/a.png", [0])
    with pytest.raises(FileNotFoundError, match=r"classes\.txt: classes\.txt not found"):
        build_dataset("folder", tmp_path)
    (tmp_path / "classes.txt").write_text("a 1 2 300\n")
    with pytest.raises(DatasetError, match=r"classes\.txt:1: colour \[1, 2, 300\]"):
        build_dataset("folder", tmp_path)
