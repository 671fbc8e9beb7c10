"""Reading any user image into RGB uint8, or refusing it with a clear reason.

One function for the command line, the notebooks and the app: EXIF rotation applied,
grayscale / palette / RGBA / CMYK / 16-bit / float converted, huge images downscaled
while decoding where the format allows (JPEG draft mode) and refused above a hard
pixel cap, so memory stays bounded. Every change is reported as a note.
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


class ImageError(ValueError):
    """The input is not an image we can use; the message says why."""


@dataclass
class LoadedImage:
    array: np.ndarray                      # (H, W, 3) uint8 RGB, writable, upright
    original_size: tuple                   # (W, H) as stored in the file
    notes: list = field(default_factory=list)
    orientation: int = 1                   # EXIF orientation applied (1: none)

    @property
    def upright_size(self) -> tuple:
        """(W, H) of the full-size image once its EXIF rotation is applied."""
        w, h = self.original_size
        return (h, w) if self.orientation in (5, 6, 7, 8) else (w, h)


_PIL_LIMIT_LOCK = threading.Lock()


def _too_many_pixels(name: str, w, h) -> ImageError:
    return ImageError(f"{name}: {w}x{h} pixels is more than this tool decodes "
                      f"({MAX_PIXELS // 1_000_000} MP); downscale it first")


def _open(source, name: str) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"{name}: file not found")
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
                img = Image.open(source)
            finally:
                Image.MAX_IMAGE_PIXELS = previous
        w, h = img.size
        if w * h > MAX_PIXELS:
            raise _too_many_pixels(name, w, h)
        return img
    except ImageError:
        raise
    except UnidentifiedImageError as e:
        raise ImageError(f"{name}: not a readable image ({type(e).__name__})") from None
    except OSError as e:
        raise ImageError(f"{name}: cannot open image: {e}") from None


def _to_rgb(img: Image.Image, notes: list) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        if mode == "F":
            finite = arr[np.isfinite(arr)]
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
            arr = np.nan_to_num(arr, nan=lo, posinf=hi, neginf=lo)
            arr = (arr - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(arr)
            notes.append("float image rescaled to 0-255")
        else:
            top = 65535.0 if arr.max() > 255 else 255.0
            arr = arr / top * 255
            notes.append(f"{mode} ({'16-bit' if top > 255 else 'integer'}) image converted to 8-bit")
        gray = np.clip(arr + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        notes.append("transparency composited on white")
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    if mode != "RGB":
        notes.append(f"converted from {mode} to RGB")
        img = img.convert("RGB")
    return np.asarray(img)


def read_image(source, max_side: int | None = DEFAULT_MAX_SIDE, name: str | None = None) -> LoadedImage:
    """Read ``source`` (path, bytes, file object, PIL image or array) as RGB uint8.

    Raises :class:`ImageError` naming the input and the problem. ``max_side``
    downscales (aspect kept) so the longest side is at most that many pixels.
    """
    name = name or (str(source) if isinstance(source, (str, Path)) else "image")
    if isinstance(source, np.ndarray):
        return _from_array(source, max_side, name)
    img = _open(source, name)
    notes = []
    original = img.size
    try:
        orientation = img.getexif().get(0x0112, 1)
        if max_side and max(original) > max_side and img.format == "JPEG":
            img.draft("RGB", (max_side, max_side))  # decode at 1/2..1/8 scale: bounded memory
        img.load()
    except ImageError:
        raise
    except Exception as e:  # truncated / corrupt data shows up at decode time
        raise ImageError(f"{name}: corrupt or truncated image data ({type(e).__name__}: {e})") \
            from None
    w, h = img.size
    if min(w, h) < MIN_SIDE:
        raise ImageError(f"{name}: {w}x{h} pixels is too small; at least {MIN_SIDE}x{MIN_SIDE} "
                         "is needed")
    try:
        if max_side and max(w, h) > max_side:
            # a new, small image: the full-size decode (PNG, TIFF, ...) is freed right
            # after, and nothing at full size is ever copied
            img = _downscale(img, max_side)
            notes.append(f"downscaled from {original[0]}x{original[1]} to "
                         f"{img.size[0]}x{img.size[1]} (longest side {max_side})")
            if min(img.size) < MIN_SIDE:
                raise ImageError(f"{name}: {original[0]}x{original[1]} pixels is too thin: "
                                 f"downscaled to {img.size[0]}x{img.size[1]} it is less than "
                                 f"{MIN_SIDE} pixels across")
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


_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _downscale(img: Image.Image, max_side: int) -> Image.Image:
    """A new image whose longest side is ``max_side`` (aspect kept, never below 1 px)."""
    w, h = img.size
    s = max_side / max(w, h)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    try:
        return img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    except ValueError:  # PIL's reduce() refuses some modes (e.g. I;16) at large factors
        return img.resize(size, Image.Resampling.BILINEAR)


def _from_array(arr: np.ndarray, max_side, name) -> LoadedImage:
    notes = []
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
        notes.append("grayscale array expanded to RGB")
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ImageError(f"{name}: array of shape {arr.shape} is not an (H, W, 3) image")
    if arr.shape[2] == 4:
        arr = arr[..., :3]
        notes.append("alpha channel dropped")
    if arr.dtype != np.uint8:
        a = arr.astype(np.float64)
        top = 1.0 if a.max() <= 1.0 else (255.0 if a.max() <= 255 else 65535.0)
        arr = np.clip(a / top * 255 + 0.5, 0, 255).astype(np.uint8)
        notes.append(f"{a.dtype} array rescaled to uint8")
    pil = Image.fromarray(np.ascontiguousarray(arr))
    out = read_image(pil, max_side, name)
    out.notes = notes + out.notes
    return out
