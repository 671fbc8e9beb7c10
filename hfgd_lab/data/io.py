"""The one reader for images and the one reader for label maps.

Every path -- datasets (training and ``eval``), ``predict``, the app and the
notebooks -- reads files through :func:`read_image` and :func:`read_label_map`, so the
same file always becomes the same pixels. The rules:

* **EXIF orientation** is applied to images and label maps alike, so a mask drawn on
  the upright photo pairs with it.
* **Bit depth comes from the format, never from the content**: 8-bit data is used as
  is, 16-bit data (``I;16`` PNG/TIFF, ``uint16`` arrays) is divided by 65535, 32-bit
  integer data by 2**32 - 1, and a 1-bit image is 0 or 255. Float data in [0, 1] is
  multiplied by 255; float data outside [0, 1] is stretched from its minimum to its
  maximum (with a note: floats carry no scale).
* **Alpha** (RGBA, LA, palette transparency, 4-channel arrays) is composited on white,
  for files and arrays alike.
* **Other modes** (greyscale, palette, CMYK, YCbCr, ...) are converted to RGB.
* **Label maps** must be lossless (PNG, BMP, TIFF without JPEG compression, GIF,
  lossless WebP, PNM), checked by the file's *content*, whatever its name: JPEG's
  artefacts would become labels. Every integer single-channel mode is accepted
  (``1``, ``L``, ``P`` -- the palette *indices*, as VOC stores them --, ``I;16``,
  ``I``) and so is an RGB file whose three channels are equal (greyscale saved as
  colour); a colour mask is refused with a message saying what to do.
* **Size**: images are refused above ``max_pixels`` before any pixel is decoded
  (header only), JPEGs larger than needed are decoded at 1/2..1/8 scale (draft mode),
  and ``max_side`` downscales (aspect kept) so the longer side is at most that.

Nothing here imports torch: the readers are cheap to import and run in any process.
"""
from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

MIN_SIDE = 8                   # smaller images carry nothing a stride-32 model can use
MAX_PIXELS = 450_000_000       # hard cap on decoded pixels (20000 x 20000 fits)
DEFAULT_MAX_SIDE = 2048        # images are downscaled to this longest side by default
LOSSLESS_FORMATS = ("PNG", "BMP", "TIFF", "GIF", "WEBP", "PPM")
LABEL_MODES = ("1", "L", "P", "I;16", "I;16L", "I;16B", "I;16N", "I")

__all__ = ["ImageError", "LabelMapError", "LoadedImage", "read_image", "read_label_map",
           "MIN_SIDE", "MAX_PIXELS", "DEFAULT_MAX_SIDE", "LOSSLESS_FORMATS"]


class ImageError(ValueError):
    """The input is not an image we can use; the message names it and says why."""


class LabelMapError(ValueError):
    """The input is not a label map we can use; the message names it and says why."""


@dataclass
class LoadedImage:
    """An image as read: ``array`` (H, W, 3) uint8 RGB, writable, upright."""

    array: np.ndarray
    original_size: tuple                   # (W, H) as stored in the file
    notes: list = field(default_factory=list)
    orientation: int = 1                   # EXIF orientation applied (1: none)

    @property
    def upright_size(self) -> tuple:
        """(W, H) of the full-size image once its EXIF rotation is applied."""
        w, h = self.original_size
        return (h, w) if self.orientation in (5, 6, 7, 8) else (w, h)


_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_PIL_LIMIT_LOCK = threading.Lock()


# ---- opening: header only -----------------------------------------------------------

def _name_of(source, name) -> str:
    return name or (str(source) if isinstance(source, (str, Path)) else "image")


def _open(source, name: str, error=ImageError) -> Image.Image:
    """PIL image with only its header read (no pixels decoded)."""
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise error(f"{name}: file not found")
        source = str(path)
    elif isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    try:
        # PIL's own bomb check (a warning above 89 MP, an error above 179 MP) would refuse
        # images below our cap with a confusing message: switch it off while opening
        # (only the header is read here) and check the size ourselves, naming it.
        with _PIL_LIMIT_LOCK:
            previous = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                return Image.open(source)
            finally:
                Image.MAX_IMAGE_PIXELS = previous
    except UnidentifiedImageError as e:
        raise error(f"{name}: not a readable image ({type(e).__name__})") from None
    except OSError as e:
        raise error(f"{name}: cannot open image: {e}") from None


def _orientation(img: Image.Image, name: str, error=ImageError) -> int:
    """The EXIF orientation (1..8; 1 when absent). Reading it walks the file's chunks,
    which is where PNGs with broken chunk data first fail."""
    try:
        value = int(img.getexif().get(0x0112, 1))
    except Exception as e:
        raise error(f"{name}: corrupt or truncated image data ({type(e).__name__}: {e})") \
            from None
    return value if value in _EXIF_TRANSPOSE else 1


def _decode(img: Image.Image, name: str, error=ImageError) -> None:
    try:
        img.load()
    except Exception as e:  # truncated / corrupt data shows up at decode time
        raise error(f"{name}: corrupt or truncated image data ({type(e).__name__}: {e})") \
            from None


def _bits(img: Image.Image) -> int:
    """Bits per sample of an integer image, from its mode and the decoder's raw mode."""
    if img.mode.startswith("I;16"):
        return 16
    if img.mode == "I":
        raw = " ".join(str(t.args) for t in getattr(img, "tile", []) or [])
        return 16 if "16" in raw else (8 if "I;8" in raw else 32)
    return 8


# ---- images ---------------------------------------------------------------------------

def _scale_float(arr: np.ndarray, notes: list) -> np.ndarray:
    """Float data -> 0..255 float: [0, 1] times 255, else min..max stretched."""
    finite = arr[np.isfinite(arr)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    arr = np.nan_to_num(arr, nan=lo, posinf=hi, neginf=lo)
    if lo >= 0.0 and hi <= 1.0:
        notes.append("float image in [0, 1] scaled to 0-255")
        return arr * 255.0
    notes.append(f"float image outside [0, 1] (range {lo:.3g}..{hi:.3g}) stretched to 0-255")
    return (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 -> (H, W, 3) uint8, alpha-composited on white (rounded)."""
    a = rgba[..., 3:4].astype(np.uint16)
    rgb = rgba[..., :3].astype(np.uint16)
    return ((rgb * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


def _to_rgb(img: Image.Image, notes: list) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        if mode == "F":
            arr = _scale_float(arr, notes)
        else:
            bits = _bits(img)
            arr = arr / (2.0 ** bits - 1) * 255.0
            notes.append(f"{bits}-bit image converted to 8-bit")
        gray = np.clip(arr + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "1":
        notes.append("1-bit image converted to RGB")
        gray = np.asarray(img, dtype=np.uint8) * 255
        return np.repeat(gray[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in img.info):
        notes.append("transparency composited on white")
        return _composite_on_white(np.asarray(img.convert("RGBA")))
    if mode != "RGB":
        notes.append(f"converted from {mode} to RGB")
        img = img.convert("RGB")
    return np.asarray(img)


def _downscale(img: Image.Image, max_side: int) -> Image.Image:
    """A new image whose longest side is ``max_side`` (aspect kept, never below 1 px)."""
    w, h = img.size
    s = max_side / max(w, h)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    try:
        return img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    except ValueError:  # PIL's reduce() refuses some modes (e.g. I;16) at large factors
        return img.resize(size, Image.Resampling.BILINEAR)


def _too_many_pixels(name, w, h, cap) -> ImageError:
    return ImageError(f"{name}: {w}x{h} pixels is more than this tool decodes "
                      f"({cap / 1e6:.0f} MP); downscale it first")


def read_image(source, max_side: int | None = DEFAULT_MAX_SIDE, name: str | None = None,
               max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE) -> LoadedImage:
    """Read ``source`` as upright RGB uint8, by the rules of this module.

    Args:
        source: a path, bytes, a file object, a PIL image, or a numpy array
            ((H, W), (H, W, 3) or (H, W, 4); uint8, uint16, bool or float).
        max_side: downscale (aspect kept) so the longer side is at most this many
            pixels; None keeps the full size.
        name: how messages name the input (default: the path).
        max_pixels: refuse images with more pixels than this (checked on the header,
            before decoding; a JPEG counts at the reduced size it is decoded at).
        min_side: refuse images thinner than this (datasets pass 1: their labels say
            what the pixels are, however few).

    Returns:
        :class:`LoadedImage` (``array`` (H, W, 3) uint8, ``notes`` of every change).

    Raises:
        ImageError: naming the input and the problem (not found, not an image, corrupt,
            too large, too small, an unsupported array).
    """
    name = _name_of(source, name)
    if isinstance(source, np.ndarray):
        return _from_array(source, max_side, name, max_pixels, min_side)
    img = _open(source, name)
    notes = []
    original = img.size
    w, h = original
    decoded = w * h
    if max_side and max(w, h) > max_side and img.format == "JPEG":
        scale = min(8, max(1, max(w, h) // max_side))
        scale = 1 << (scale.bit_length() - 1)          # draft decodes at 1/2, 1/4, 1/8
        decoded = (w // scale) * (h // scale)
    if decoded > max_pixels:
        raise _too_many_pixels(name, w, h, max_pixels)
    orientation = _orientation(img, name)
    if max_side and max(w, h) > max_side and img.format == "JPEG":
        img.draft("RGB", (max_side, max_side))  # decode at 1/2..1/8 scale: bounded memory
    _decode(img, name)
    w, h = img.size
    if min(w, h) < min_side:
        raise ImageError(f"{name}: {w}x{h} pixels is too small; at least {min_side}x{min_side} "
                         "is needed")
    try:
        if max_side and max(w, h) > max_side:
            # a new, small image: the full-size decode (PNG, TIFF, ...) is freed right
            # after, and nothing at full size is ever copied
            img = _downscale(img, max_side)
            notes.append(f"downscaled from {original[0]}x{original[1]} to "
                         f"{img.size[0]}x{img.size[1]} (longest side {max_side})")
            if min(img.size) < min_side:
                raise ImageError(f"{name}: {original[0]}x{original[1]} pixels is too thin: "
                                 f"downscaled to {img.size[0]}x{img.size[1]} it is less than "
                                 f"{min_side} pixels across")
        method = _EXIF_TRANSPOSE.get(orientation)
        if method is not None:  # after downscaling: rotating is cheap at the small size
            img = img.transpose(method)
            notes.append(f"rotated according to its EXIF orientation ({orientation})")
        arr = _to_rgb(img, notes)
    except ImageError:
        raise
    except (ValueError, OSError) as e:  # a mode PIL cannot resize or convert (LAB, HSV, ...)
        raise ImageError(f"{name}: cannot convert a {img.mode} image to RGB "
                         f"({type(e).__name__}: {e})") from None
    # a copy of its own: PIL-backed arrays are read-only, and callers (torch) want to write
    return LoadedImage(np.array(arr, dtype=np.uint8, order="C"), original, notes,
                       orientation if method is not None else 1)


def _from_array(arr: np.ndarray, max_side, name, max_pixels, min_side) -> LoadedImage:
    """An array through the same rules as a file: bit depth from the dtype, alpha
    composited on white; then resized like a file."""
    notes = []
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ImageError(f"{name}: array of shape {arr.shape} is not an (H, W), (H, W, 3) "
                         "or (H, W, 4) image")
    if arr.shape[0] * arr.shape[1] > max_pixels:
        raise _too_many_pixels(name, arr.shape[1], arr.shape[0], max_pixels)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
        notes.append("boolean array converted to 0 / 255")
    elif arr.dtype == np.uint16:
        arr = np.clip(arr.astype(np.float64) / 65535.0 * 255.0 + 0.5, 0, 255).astype(np.uint8)
        notes.append("16-bit array converted to 8-bit")
    elif np.issubdtype(arr.dtype, np.floating):
        arr = np.clip(_scale_float(arr.astype(np.float64), notes) + 0.5, 0, 255).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ImageError(f"{name}: array of dtype {arr.dtype}; expected uint8, uint16, bool "
                         "or float in [0, 1]")
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
        notes.append("grayscale array expanded to RGB")
    elif arr.shape[2] == 4:
        arr = _composite_on_white(arr)
        notes.append("transparency composited on white")
    out = read_image(Image.fromarray(np.ascontiguousarray(arr)), max_side, name, max_pixels,
                     min_side)
    out.notes = notes + out.notes
    return out


# ---- label maps -----------------------------------------------------------------------

def _lossless_format(img: Image.Image, name: str, raw: bytes | None) -> None:
    fmt = img.format or "?"
    if fmt == "WEBP":
        head = raw if raw is not None else b""
        if b"VP8L" not in head[:64] and b"VP8 " in head[:64]:
            fmt = "lossy WebP"
    elif fmt == "TIFF" and "jpeg" in str(img.info.get("compression", "")).lower():
        fmt = "JPEG-compressed TIFF"
    if fmt not in LOSSLESS_FORMATS:
        raise LabelMapError(
            f"{name}: label maps must be stored losslessly (PNG, BMP, TIFF, GIF, lossless "
            f"WebP); this file holds {fmt} data, whose compression artefacts would become "
            "labels")


def read_label_map(source, name: str | None = None) -> np.ndarray:
    """Read a label map (class index per pixel) by the rules of this module.

    Args:
        source: a path, bytes, a file object or a PIL image.
        name: how messages name the input (default: the path).

    Returns:
        (H, W) integer array, upright (EXIF applied): uint8 for 8-bit and 1-bit data,
        int64 for 16- and 32-bit data. Values are returned as stored (no mapping).

    Raises:
        LabelMapError: not found, not an image, lossy (JPEG content, whatever the name),
            a colour mask, or a mode that holds no class indices.
    """
    name = _name_of(source, name)
    raw = None
    if isinstance(source, (str, Path)) and Path(source).is_file():
        with open(source, "rb") as f:
            raw = f.read(64)
    elif isinstance(source, (bytes, bytearray)):
        raw = bytes(source[:64])
    img = _open(source, name, LabelMapError)
    _lossless_format(img, name, raw)
    orientation = _orientation(img, name, LabelMapError)
    _decode(img, name, LabelMapError)
    mode = img.mode
    if mode in LABEL_MODES:
        mask = np.asarray(img)
        mask = mask.astype(np.uint8) if mask.dtype in (np.bool_, np.uint8) else \
            mask.astype(np.int64)
    elif mode == "RGB" or mode == "RGBA":
        rgb = np.asarray(img)
        if mode == "RGBA" and (rgb[..., 3] != 255).any():
            raise LabelMapError(f"{name}: an RGBA label map with transparent pixels; save "
                                "the class indices as a single-channel PNG (mode L or P)")
        rgb = rgb[..., :3]
        if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()):
            raise LabelMapError(
                f"{name}: a colour ({mode}) image is not a label map; save one class index "
                "per pixel as a single-channel PNG (mode L, P or 16-bit), e.g. map each "
                "colour to its line in classes.txt")
        mask = np.ascontiguousarray(rgb[..., 0])
    else:
        raise LabelMapError(f"{name}: mode {mode!r} holds no class indices; expected a "
                            "single-channel integer image (mode 1, L, P, I;16 or I)")
    if mask.dtype == np.int64 and mask.size and int(mask.min()) < 0:
        raise LabelMapError(f"{name}: negative label values (down to {int(mask.min())})")
    method = _EXIF_TRANSPOSE.get(orientation)
    if method is not None:
        mask = np.ascontiguousarray(_transpose_array(mask, orientation))
    return mask


def _transpose_array(a: np.ndarray, orientation: int) -> np.ndarray:
    """numpy version of PIL's EXIF transposes (exact on integer label maps of any width)."""
    ops = {2: lambda x: x[:, ::-1], 3: lambda x: x[::-1, ::-1], 4: lambda x: x[::-1],
           5: lambda x: x.T, 6: lambda x: np.rot90(x, -1), 7: lambda x: x[::-1, ::-1].T,
           8: lambda x: np.rot90(x, 1)}
    return ops[orientation](a)
