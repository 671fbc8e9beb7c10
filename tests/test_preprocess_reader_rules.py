"""Arrays and PIL images handed straight to the preprocessing (LoadedModel.segment /
infer, analyze_image, OnnxSegmenter) become the same pixels as through the one reader."""
import io

import numpy as np
from PIL import Image

from hfgd_lab.data import as_uint8_image, prepare_image, read_image


def _rgba():
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (20, 24, 4), dtype=np.uint8)
    rgba[:5, :, 3] = 0      # fully transparent rows: white, whatever their RGB
    return rgba


def test_a_4_channel_array_is_composited_on_white_like_the_reader():
    rgba = _rgba()
    expected = read_image(rgba, max_side=None).array
    np.testing.assert_array_equal(as_uint8_image(rgba), expected)
    assert (as_uint8_image(rgba)[:5] == 255).all()
    _, pixels = prepare_image(rgba)
    np.testing.assert_array_equal(pixels, expected)


def test_a_pil_image_goes_through_the_reader():
    rgba = Image.fromarray(_rgba())
    np.testing.assert_array_equal(as_uint8_image(rgba), read_image(rgba, max_side=None).array)
    # EXIF orientation, as for a file
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_rgba()[..., :3]).save(buf, "JPEG", exif=exif)
    photo = Image.open(io.BytesIO(buf.getvalue()))
    got = as_uint8_image(photo)
    assert got.shape == (24, 20, 3)
    np.testing.assert_array_equal(got, read_image(buf.getvalue(), max_side=None).array)


def test_plain_rgb_and_grey_arrays_are_unchanged():
    rgb = _rgba()[..., :3].copy()
    np.testing.assert_array_equal(as_uint8_image(rgb), rgb)
    np.testing.assert_array_equal(as_uint8_image(rgb[..., 0]), np.repeat(rgb[..., :1], 3, 2))


def test_segment_of_an_exif_rotated_pil_image_labels_the_upright_pixels():
    import torch

    from hfgd_lab import HFGDConfig, build_model
    from hfgd_lab.engine.loaded import LoadedModel
    from test_engine import TINY_MODEL

    torch.manual_seed(0)
    model = build_model(HFGDConfig(**{**TINY_MODEL, "num_classes": 3})).eval()
    loaded = LoadedModel(model, {}, "m", "m", "checkpoint", ("a", "b", "c"),
                         np.zeros((3, 3), np.uint8), None)
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 64, 3), np.uint8)).save(
        buf, "JPEG", exif=exif)
    labels, conf = loaded.segment(Image.open(io.BytesIO(buf.getvalue())))
    upright = read_image(buf.getvalue(), max_side=None).array
    expected, _ = loaded.segment(upright)
    assert labels.shape == (64, 40) and conf.shape == (64, 40)
    np.testing.assert_array_equal(labels, expected)
