"""One path from a file to the network: each kind of image that users of other
segmentation tools tripped over (16-bit PNGs, RGBA, EXIF-rotated JPEGs, label maps of every
integer mode, JPEG "masks") reaches every path -- dataset (training and eval), predict, the
app's reader and the analysis -- as the same pixels and the same tensor."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from hfgd_lab import HFGDConfig, build_model
from hfgd_lab.analysis import analyze_image
from hfgd_lab.app.handlers import App
from hfgd_lab.app.state import Options
from hfgd_lab.data import (DatasetError, LabelMapError, build_dataset, read_image,
                           read_label_map)
from hfgd_lab.data.transforms import build_eval_transform
from hfgd_lab.engine.loaded import LoadedModel

SMALL = dict(num_classes=3, embed_dim=32, cae_heads=4, decoder_channels=32, cae_depth=1)


def _folder(root, image: Image.Image, mask: np.ndarray, name="a", image_ext=".png",
            mask_image: Image.Image | None = None, **save_kw):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("a\nb\nc\n")
    image.save(root / "images" / f"{name}{image_ext}", **save_kw)
    (mask_image or Image.fromarray(mask.astype(np.uint8))).save(root / "masks" / f"{name}.png")
    return root / "images" / f"{name}{image_ext}"


def _gradient16(h=24, w=40, top=65535):
    return (np.linspace(0, top, h * w).reshape(h, w)).astype(np.uint16)


# ---- images ---------------------------------------------------------------------------

class _Store:
    """The app's model store, holding one model under any name."""

    def __init__(self, loaded):
        self.loaded = loaded

    def get(self, spec):
        return self.loaded



def _app_pixels(path) -> np.ndarray:
    """What the app's handler reads from an uploaded file (no downscale at this size)."""
    return App(store=_Store(None)).read(str(path), 2048).array


def test_16bit_png_same_pixels_everywhere_scaled_by_bit_depth(tmp_path):
    a16 = _gradient16()
    path = _folder(tmp_path, Image.fromarray(a16), np.zeros(a16.shape))
    expected = np.clip(a16 / 65535 * 255 + 0.5, 0, 255).astype(np.uint8)
    ds_image, _ = build_dataset("folder", tmp_path).load(0)
    upload = read_image(path).array
    array = read_image(a16).array                       # the same data as an array
    for got in (ds_image, upload, array, _app_pixels(path)):
        np.testing.assert_array_equal(got[..., 0], expected)
    assert len(np.unique(ds_image)) > 200               # not clipped to two grey levels
    # a 12-bit sensor image stored in 16 bits stays dark: the scale is the format's
    dark = read_image(Image.fromarray(_gradient16(top=4095))).array
    assert dark.max() == round(4095 / 65535 * 255)


def test_rgba_composited_on_white_for_files_and_arrays(tmp_path):
    rgba = np.zeros((16, 20, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = np.linspace(0, 255, 20).astype(np.uint8)[None]
    path = _folder(tmp_path, Image.fromarray(rgba, "RGBA"), np.zeros((16, 20)))
    a = rgba[..., 3:].astype(np.float64) / 255
    expected = np.round(rgba[..., :3] * a + 255 * (1 - a)).astype(np.uint8)
    ds_image, _ = build_dataset("folder", tmp_path).load(0)
    for got in (ds_image, read_image(path).array, read_image(rgba).array, _app_pixels(path)):
        np.testing.assert_allclose(got.astype(int), expected.astype(int), atol=1)
    assert (ds_image[:, 0] == 255).all()                # fully transparent: white


def _exif_jpeg(root, array, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    img = Image.fromarray(array)
    return img, {"exif": exif.tobytes(), "quality": 100}


def test_exif_rotated_jpeg_pairs_with_a_mask_drawn_on_the_upright_photo(tmp_path):
    stored = np.zeros((16, 24, 3), np.uint8)            # as stored: 24 wide, 16 high
    stored[:, :12] = (250, 0, 0)
    img, kw = _exif_jpeg(tmp_path, stored, 6)           # 6: display rotated 90 clockwise
    upright = np.asarray(img.transpose(Image.Transpose.ROTATE_270))   # 16 wide, 24 high
    mask = (upright[..., 0] > 128).astype(np.uint8)     # drawn on the upright photo
    path = _folder(tmp_path, img, mask, image_ext=".jpg", **kw)
    image, labels = build_dataset("folder", tmp_path).load(0)
    assert image.shape[:2] == labels.shape == (24, 16)
    np.testing.assert_array_equal(image, read_image(path).array)
    np.testing.assert_array_equal(image, _app_pixels(path))
    red = image[..., 0] > 128
    assert (red == (labels == 1)).mean() > 0.95         # the mask lies on its object


def test_square_exif_photo_is_rotated_not_silently_paired(tmp_path):
    stored = np.zeros((20, 20, 3), np.uint8)
    stored[:, :10] = (250, 0, 0)                        # left half red, as stored
    img, kw = _exif_jpeg(tmp_path, stored, 8)           # 8: display rotated 90 ccw
    upright = np.asarray(img.transpose(Image.Transpose.ROTATE_90))
    mask = (upright[..., 0] > 128).astype(np.uint8)     # red is at the bottom upright
    _folder(tmp_path, img, mask, image_ext=".jpg", **kw)
    image, labels = build_dataset("folder", tmp_path).load(0)
    assert ((image[..., 0] > 128) == (labels == 1)).mean() > 0.95
    assert labels[-1].all() and not labels[0].any()


# ---- label maps -------------------------------------------------------------------------

def _encode(img: Image.Image, fmt="PNG", **kw) -> bytes:
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


@pytest.mark.parametrize("mode", ["1", "L", "P", "I;16", "I", "RGB-grey"])
def test_every_integer_single_channel_label_mode_is_read(mode):
    values = np.array([[0, 1, 2, 1], [2, 2, 0, 1]], np.uint8)
    if mode == "1":
        values = (values > 0).astype(np.uint8)
        img = Image.fromarray(values.astype(bool))
    elif mode == "P":
        img = Image.fromarray(values, "L").convert("P")
        img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    elif mode == "I;16":
        img = Image.fromarray(values.astype(np.uint16))
    elif mode == "I":
        img = Image.fromarray(values.astype(np.int32))        # 32-bit: stored as TIFF
    elif mode == "RGB-grey":
        img = Image.fromarray(np.repeat(values[..., None], 3, 2))
    else:
        img = Image.fromarray(values)
    data = _encode(img, "TIFF" if mode == "I" else "PNG")
    np.testing.assert_array_equal(read_label_map(data), values)


def test_16bit_label_map_through_a_label_table(tmp_path):
    """ADE20K-style reduce-zero-label on a 16-bit PNG holding small class ids (refused
    before with 'expected an 8-bit label PNG, got values up to 3')."""
    (tmp_path / "images/training").mkdir(parents=True)
    (tmp_path / "annotations/training").mkdir(parents=True)
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(tmp_path / "images/training/x.jpg")
    raw = np.resize(np.array([0, 1, 3], np.uint16), (6, 8))
    Image.fromarray(raw).save(tmp_path / "annotations/training/x.png")
    _, mask = build_dataset("ade20k", tmp_path, "train").load(0)
    np.testing.assert_array_equal(mask, np.vectorize({0: 255, 1: 0, 3: 2}.get)(raw))


def test_lossy_or_colour_masks_are_refused_by_content(tmp_path):
    values = np.resize(np.array([0, 1, 2], np.uint8), (16, 16))
    jpeg_named_png = tmp_path / "m.png"
    jpeg_named_png.write_bytes(_encode(Image.fromarray(values), "JPEG"))
    with pytest.raises(LabelMapError, match="m.png: label maps must be stored losslessly.*"
                                            "JPEG data"):
        read_label_map(jpeg_named_png)
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[:2] = (255, 0, 0)
    with pytest.raises(LabelMapError, match="a colour \\(RGB\\) image is not a label map"):
        read_label_map(_encode(Image.fromarray(colour)))
    # and through a dataset: the file is named, nothing is trained on artefacts
    _folder(tmp_path / "ds", Image.fromarray(np.zeros((16, 16, 3), np.uint8)), values)
    (tmp_path / "ds/masks/a.png").write_bytes(_encode(Image.fromarray(values), "JPEG"))
    with pytest.raises(DatasetError, match="masks/a.png: label maps must be stored losslessly"):
        build_dataset("folder", tmp_path / "ds").load(0)


# ---- the same tensor through every path ------------------------------------------------

class _Recorder(torch.nn.Module):
    """Wraps a model and keeps the first input each forward pass receives."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.inputs = []
        self.cfg = model.cfg
        self.class_tokens = model.class_tokens
        self.logit_scale = model.logit_scale

    def forward(self, x, *a, **k):
        self.inputs.append(x.detach().clone())
        return self.inner(x, *a, **k)

    def predict(self, x, branch="up"):
        self.inputs.append(x.detach().clone())
        return self.inner.predict(x, branch)


@pytest.mark.parametrize("backbone", ["tf_efficientnet_lite0", "convnext_atto"])
def test_one_image_reaches_the_network_as_one_tensor(tmp_path, backbone):
    rng = np.random.default_rng(0)
    image16 = (rng.random((40, 56)) * 65535).astype(np.uint16)
    path = _folder(tmp_path, Image.fromarray(image16), np.zeros((40, 56)))
    model = _Recorder(build_model(HFGDConfig(backbone=backbone, **SMALL)).eval())
    mean, std = model.cfg.normalization
    loaded = LoadedModel(model, {}, "m", "m", "checkpoint", ("a", "b", "c"),
                         np.zeros((3, 3), np.uint8), tmp_path / "m")
    # dataset -> eval transform (training and `eval`)
    ds = build_dataset("folder", tmp_path, transform=build_eval_transform(mean, std))
    x_dataset = ds[0]["image"][None]
    # predict and the app: the one reader, then LoadedModel (its preprocessing + inference)
    pixels = read_image(path, max_side=None).array
    loaded.segment(pixels)
    x_predict = model.inputs.pop()
    # the analysis
    analyze_image(loaded, pixels)
    x_analysis = model.inputs.pop()
    # the app: an uploaded file through its handler (reader, cache, analysis)
    app = App(store=_Store(loaded))
    app.analysed(str(path), "m", Options(max_side=512))
    x_app = model.inputs.pop()
    assert torch.equal(x_dataset, x_predict) and torch.equal(x_predict, x_analysis)
    assert torch.equal(x_analysis, x_app)
    if backbone.startswith("tf_"):   # the backbone's own normalisation: [-1, 1]
        assert x_dataset.min() >= -1 and x_dataset.max() <= 1


def test_evaluate_normalises_an_untransformed_dataset_with_the_models_backbone():
    """build_dataset(name, root, split) then evaluate(model, ds), the README's form, feeds
    the model its own backbone's normalisation (Lite0: mean = std = 0.5), not ImageNet's."""
    from hfgd_lab.engine.evaluate import evaluate
    model = build_model(HFGDConfig(backbone="tf_efficientnet_lite0",
                                   **{**SMALL, "num_classes": 10})).eval()
    ds = build_dataset("scenes", None, "val", num=2, size=64)
    assert ds.transform is None
    evaluate(model, ds, progress=False)
    sample = {"image": ds.load(0)[0], "mask": ds.load(0)[1], "name": "x"}
    expected = build_eval_transform((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))(sample)["image"]
    assert torch.equal(ds[0]["image"], expected)


def test_an_image_above_the_cap_reaches_the_model_as_the_same_pixels_in_predict_and_app(
        tmp_path):
    """Above --max-side / the app's cap, predict and the app downscale by one rule (the
    reader's), not two: the same file gives the same model input (a review found up to 4
    grey levels apart when predict resized a full decode its own way)."""
    from hfgd_lab.commands._predict_work import model_input
    rng = np.random.default_rng(0)
    photo = (rng.random((500, 700, 3)) * 255).astype(np.uint8)
    path = tmp_path / "big.jpg"
    Image.fromarray(photo).save(path, quality=90)
    full = read_image(path, max_side=None)
    for cap in (256, 333):
        small = model_input(path, full, cap)
        assert max(small.array.shape[:2]) == cap
        np.testing.assert_array_equal(small.array,
                                      App(store=_Store(None)).read(str(path), cap).array)
    assert model_input(path, full, 700) is full          # fits: no second read
