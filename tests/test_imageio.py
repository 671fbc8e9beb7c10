"""read_image: every kind of input a user uploads is read correctly or refused clearly."""
import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

import hfgd_lab.data.io as imageio
from hfgd_lab.data.io import MAX_PIXELS, ImageError, read_image


def _png(width, height, raw_rows: bytes, bit_depth=8, color_type=2) -> bytes:
    """A PNG from raw scanlines (each prefixed with filter byte 0)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw_rows))
            + chunk(b"IEND", b""))


def _huge_png(path, width=20000, height=20000, color=(90, 140, 200)):
    """A real one-colour RGB PNG streamed through zlib (never held in memory; ~1 MB)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    rows = (b"\x00" + bytes(color) * width) * 40
    z = zlib.compressobj(6)
    idat = b"".join([z.compress(rows) for _ in range(height // 40)] + [z.flush()])
    assert height % 40 == 0
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
                           + chunk(b"IEND", b""))


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


def _halves(w=40, h=24):
    """Left half red, right half blue, a green top-left corner: orientation is visible."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = (255, 0, 0)
    a[:, w // 2:] = (0, 0, 255)
    a[:6, :6] = (0, 255, 0)
    return a


# ---- colour modes ---------------------------------------------------------------------

def test_rgb_png_is_exact():
    a = _halves()
    out = read_image(_encode(Image.fromarray(a), "PNG"))
    assert out.array.dtype == np.uint8 and out.array.shape == a.shape
    np.testing.assert_array_equal(out.array, a)
    assert out.original_size == (40, 24) and out.notes == []
    assert out.array.flags.writeable  # its own memory: torch.from_numpy needs no copy


def test_grayscale_becomes_three_equal_channels():
    g = np.tile(np.arange(0, 240, 4, dtype=np.uint8), (30, 1))
    out = read_image(_encode(Image.fromarray(g, "L"), "PNG"))
    assert out.array.shape == (30, 60, 3)
    for c in range(3):
        np.testing.assert_array_equal(out.array[..., c], g)


def test_rgba_is_composited_on_white():
    a = np.zeros((20, 20, 4), np.uint8)
    a[..., 0] = 255          # red
    a[:, :10, 3] = 0         # left half fully transparent
    a[:, 10:, 3] = 255
    out = read_image(_encode(Image.fromarray(a, "RGBA"), "PNG"))
    np.testing.assert_array_equal(out.array[:, :10], 255)                  # white
    np.testing.assert_array_equal(out.array[:, 10:], [[[255, 0, 0]] * 10] * 20)
    assert any("transparen" in n for n in out.notes)


def test_palette_with_transparency_and_la():
    p = Image.new("P", (16, 16), 0)
    p.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    p.paste(1, (8, 0, 16, 16))
    out = read_image(_encode(p, "PNG", transparency=0))
    np.testing.assert_array_equal(out.array[:, :8], 255)
    np.testing.assert_array_equal(out.array[0, 8:], [[10, 200, 30]] * 8)
    la = Image.fromarray(np.dstack([np.full((12, 12), 90, np.uint8),
                                    np.full((12, 12), 255, np.uint8)]), "LA")
    np.testing.assert_array_equal(read_image(_encode(la, "PNG")).array, 90)


def test_16bit_grayscale_uses_the_full_range():
    v = np.array([[0, 32768, 65535]] * 10, np.uint16).repeat(4, 1)
    img = Image.fromarray(v)
    assert img.mode.startswith("I;16")
    out = read_image(_encode(img, "PNG"))
    assert out.array[0, 0, 0] == 0 and out.array[0, -1, 0] == 255
    assert abs(int(out.array[0, 5, 0]) - 128) <= 1
    assert any("16-bit" in n for n in out.notes)


def test_16bit_grayscale_downscaled_by_a_large_factor():
    """PIL's reduce() refuses I;16 at large factors; read_image must not."""
    v = np.tile(np.linspace(0, 65535, 16000), (800, 1)).astype(np.uint16)
    out = read_image(_encode(Image.fromarray(v), "PNG"), max_side=400)
    assert out.array.shape == (20, 400, 3)
    row = out.array[10, :, 0].astype(int)  # the left-to-right ramp survived
    assert row[0] < 5 and row[-1] > 250 and (np.diff(row) >= 0).all()


def test_too_thin_after_downscaling_is_refused():
    v = np.zeros((10, 5000), np.uint8)
    with pytest.raises(ImageError, match="too thin"):
        read_image(_encode(Image.fromarray(v), "PNG"), max_side=512)


def test_48bit_rgb_png():
    w, h = 12, 10
    px = np.zeros((h, w, 3), ">u2")
    px[..., 0] = 65535
    px[..., 2] = 0x8000
    raw = b"".join(b"\x00" + px[r].tobytes() for r in range(h))
    out = read_image(_png(w, h, raw, bit_depth=16, color_type=2))
    assert out.array.shape == (h, w, 3)
    assert (out.array[..., 0] == 255).all() and (out.array[..., 1] == 0).all()
    assert (np.abs(out.array[..., 2].astype(int) - 128) <= 1).all()


def test_cmyk_jpeg_is_converted():
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # red in CMYK
    out = read_image(_encode(cmyk, "JPEG", quality=95))
    r, g, b = out.array.reshape(-1, 3).mean(0)
    assert r > 200 and g < 60 and b < 60, (r, g, b)
    assert any("CMYK" in n for n in out.notes)


def test_float_tiff_with_nan():
    f = np.linspace(0, 1, 30 * 20, dtype=np.float32).reshape(20, 30)
    f[0, 0] = np.nan
    out = read_image(_encode(Image.fromarray(f, "F"), "TIFF"))
    assert out.array.shape == (20, 30, 3)
    assert out.array[-1, -1, 0] == 255 and out.array[0, 1, 0] == 0


# ---- EXIF orientation ------------------------------------------------------------------

@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation_matches_pil(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _encode(Image.fromarray(_halves()), "JPEG", quality=95, exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    out = read_image(data)
    np.testing.assert_array_equal(out.array, expected)
    assert out.original_size == (40, 24)  # as stored
    assert out.upright_size == (out.array.shape[1], out.array.shape[0])  # as shown
    if orientation in (5, 6, 7, 8):
        assert out.array.shape[:2] == (40, 24)
    assert any("EXIF" in n for n in out.notes) == (orientation != 1)


def test_exif_rotation_with_downscaling():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    big = np.repeat(np.repeat(_halves(), 20, 0), 20, 1)  # 800 x 480
    data = _encode(Image.fromarray(big), "JPEG", quality=95, exif=exif)
    out = read_image(data, max_side=200)
    assert out.array.shape == (200, 120, 3)
    # the red half (left when stored) is on top after a clockwise rotation
    assert out.array[:90, :, 0].mean() > 200 and out.array[110:, :, 2].mean() > 200


# ---- refusals -----------------------------------------------------------------------

def test_non_image_is_refused_clearly(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("this is not an image")
    with pytest.raises(ImageError, match="not a readable image"):
        read_image(p)
    with pytest.raises(ImageError, match="not a readable image"):
        read_image(b"\x00" * 100)
    with pytest.raises(ImageError, match="file not found"):
        read_image(tmp_path / "missing.jpg")


def test_corrupt_files_are_refused_clearly():
    jpg = _encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3),
                                                                   dtype=np.uint8)), "JPEG")
    with pytest.raises(ImageError, match="corrupt or truncated"):
        read_image(jpg[: len(jpg) // 2])
    png = bytearray(_encode(Image.fromarray(_halves()), "PNG"))
    png[60:80] = b"\xff" * 20  # inside IDAT: bad CRC / bad zlib data
    with pytest.raises(ImageError):
        read_image(bytes(png))


def test_one_pixel_is_too_small():
    with pytest.raises(ImageError, match="too small"):
        read_image(_encode(Image.new("RGB", (1, 1)), "PNG"))


def test_over_the_pixel_cap_is_refused_before_decoding():
    w, h = 30000, 20000
    assert w * h > MAX_PIXELS
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")
    with pytest.raises(ImageError, match="30000x20000 pixels is more than this tool decodes"):
        read_image(data)


def test_pil_limit_is_restored():
    before = Image.MAX_IMAGE_PIXELS
    read_image(_encode(Image.fromarray(_halves()), "PNG"))
    with pytest.raises(ImageError):
        read_image(b"junk")
    assert Image.MAX_IMAGE_PIXELS == before


# ---- arrays ---------------------------------------------------------------------------

def test_arrays():
    assert read_image(np.zeros((10, 12), np.uint8)).array.shape == (10, 12, 3)
    rgba = np.zeros((10, 12, 4), np.uint8)
    assert read_image(rgba).array.shape == (10, 12, 3)
    f = np.full((10, 12, 3), 0.5)
    assert read_image(f).array[0, 0, 0] == 128
    u16 = np.full((10, 12, 3), 65535, np.uint16)
    assert read_image(u16).array[0, 0, 0] == 255
    with pytest.raises(ImageError):
        read_image(np.zeros((10, 12, 5), np.uint8))


# ---- huge images: downscaled with a note, memory bounded --------------------------------

PEAK_SCRIPT = r"""
import importlib.util, json, resource, sys
spec = importlib.util.spec_from_file_location("imageio_alone", sys.argv[1])
m = importlib.util.module_from_spec(spec); sys.modules[spec.name] = m; spec.loader.exec_module(m)
def peak():
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024
base = peak()
out = m.read_image(sys.argv[2], max_side=int(sys.argv[3]))
print(json.dumps({"base_mb": base, "peak_mb": peak(), "shape": out.array.shape,
                  "notes": out.notes}))
"""


def _measure(path, max_side=2048):
    """read_image in a fresh process (imageio alone, no torch): peak RSS above baseline."""
    r = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, imageio.__file__, str(path),
                        str(max_side)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def huge_files(tmp_path_factory):
    folder = tmp_path_factory.getbasetemp() / "huge"
    folder.mkdir(exist_ok=True)
    png = folder / "solid_20000.png"
    if not png.is_file():
        _huge_png(png)
    jpg = folder / "solid_20000.jpg"
    if not jpg.is_file():
        Image.new("RGB", (20000, 20000), (90, 140, 200)).save(jpg, quality=50)
    return png, jpg


@pytest.mark.slow
def test_huge_png_is_downscaled_and_decoded_once(huge_files):
    png, _ = huge_files
    assert png.stat().st_size < 3_000_000  # a real 20000x20000 PNG, small on disk
    r = _measure(png)
    assert tuple(r["shape"]) == (2048, 2048, 3)
    assert any("downscaled from 20000x20000" in n for n in r["notes"])
    # PNG cannot be decoded at reduced size: one full decode (PIL holds RGB as 4 bytes
    # a pixel, 1526 MB), nothing copied at full size (before: ~3 copies)
    extra = r["peak_mb"] - r["base_mb"]
    print(f"20000x20000 PNG: peak RSS {r['peak_mb']:.0f} MB, {extra:.0f} MB above baseline")
    assert extra < 1900, r


@pytest.mark.slow
def test_huge_jpeg_uses_draft_mode(huge_files):
    _, jpg = huge_files
    r = _measure(jpg)
    assert tuple(r["shape"]) == (2048, 2048, 3)
    extra = r["peak_mb"] - r["base_mb"]
    print(f"20000x20000 JPEG: peak RSS {r['peak_mb']:.0f} MB, {extra:.0f} MB above baseline")
    assert extra < 300, r  # decoded at 1/8 scale: 2500 x 2500
