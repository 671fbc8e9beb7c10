"""Procedural scenes: the built-in, offline dataset whose classes need context.

Each scene has 2-3 large background regions (sky, water, road, grass) with their own
textures, a few distractor patches that keep their region's class (clouds, foam, lane
markings, flowers), 2-5 objects that all share ONE ring texture, and sometimes a tree or
a building (locally distinct classes) in front. An object's class is decided by the
background under it -- bird on sky, boat on water, car on road, cow on grass -- so a
pixel inside an object cannot be classified from its neighbourhood: what high-level,
context-aware features are for (NOTES.md, "second miniature"). Object size, shape and
colour are drawn the same way for all four classes, so nothing local gives them away.

Besides the class mask every scene has a ``texture`` map: a different labelling (13
material ids, all four context classes share one) that ``hfgd-lab pretrain`` uses as a
pretext task unlike the fine-tune labels.

Scene ``i`` of a dataset is a pure function of ``(seed, split, i, size, variation)``:
generated on the fly with numpy from its own ``SeedSequence``, no global state. Layout
and appearance draw from separate streams, so ``variation`` (which scales colour,
brightness, texture and lighting jitter) changes how a scene looks, never where things are.
"""
from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

import numpy as np

from .base import SegDataset

SCENE_CLASSES = ("sky", "water", "road", "grass", "bird", "boat", "car", "cow", "tree",
                 "building")
SCENE_PALETTE = np.array([
    [70, 130, 180], [0, 90, 160], [128, 64, 128], [107, 142, 35], [220, 220, 0],
    [255, 120, 0], [220, 20, 60], [150, 80, 40], [0, 180, 80], [120, 120, 120]], np.uint8)
SKY, WATER, ROAD, GRASS, BIRD, BOAT, CAR, COW, TREE, BUILDING = range(10)
BACKGROUNDS = (SKY, WATER, ROAD, GRASS)
# The context rule: the class an object takes from the background under it.
OBJECT_ON = {SKY: BIRD, WATER: BOAT, ROAD: CAR, GRASS: COW}
CONTEXT_CLASSES = tuple(OBJECT_ON.values())

TEXTURES = ("sky", "cloud", "water", "foam", "road", "marking", "grass", "flowers",
            "object", "foliage", "bark", "wall", "window")
(T_SKY, T_CLOUD, T_WATER, T_FOAM, T_ROAD, T_MARKING, T_GRASS, T_FLOWERS, T_OBJECT,
 T_FOLIAGE, T_BARK, T_WALL, T_WINDOW) = range(13)
TEXTURE_PALETTE = np.array([
    [110, 165, 225], [235, 235, 245], [40, 110, 150], [200, 225, 230], [90, 90, 95],
    [240, 220, 80], [80, 150, 45], [235, 120, 180], [200, 80, 40], [30, 90, 35],
    [100, 65, 35], [180, 160, 130], [60, 80, 110]], np.uint8)
BACKGROUND_TEXTURE = {SKY: T_SKY, WATER: T_WATER, ROAD: T_ROAD, GRASS: T_GRASS}
DISTRACTOR_TEXTURE = {SKY: T_CLOUD, WATER: T_FOAM, ROAD: T_MARKING, GRASS: T_FLOWERS}

# Base colour pair (dark/light ends of each texture's pattern), RGB.
_BASE = {
    T_SKY: ((150, 195, 240), (70, 130, 210)), T_CLOUD: ((200, 205, 215), (248, 248, 252)),
    T_WATER: ((25, 80, 120), (75, 150, 170)), T_FOAM: ((190, 215, 220), (235, 245, 245)),
    T_ROAD: ((55, 55, 60), (125, 125, 130)), T_MARKING: ((235, 235, 230), (235, 200, 50)),
    T_GRASS: ((40, 105, 30), (135, 180, 60)), T_FLOWERS: ((245, 220, 60), (230, 110, 180)),
    T_OBJECT: ((60, 30, 25), (215, 95, 45)), T_FOLIAGE: ((15, 60, 20), (70, 140, 55)),
    T_BARK: ((60, 40, 22), (125, 88, 52)), T_WALL: ((150, 120, 100), (200, 180, 150)),
    T_WINDOW: ((35, 50, 75), (120, 150, 180)),
}


@dataclass
class Scene:
    """One generated scene: the image and three labellings of it."""
    image: np.ndarray        # uint8 (H, W, 3) RGB
    mask: np.ndarray         # uint8 (H, W) class ids (SCENE_CLASSES)
    texture: np.ndarray      # uint8 (H, W) texture ids (TEXTURES)
    background: np.ndarray   # uint8 (H, W) background class under every pixel (the context)


def scene_seed(seed: int, split: str, index: int) -> np.random.SeedSequence:
    """The seed of scene ``index``; ``split`` enters through a stable hash (crc32, not
    Python's salted ``hash``), so train and val streams never coincide."""
    return np.random.SeedSequence([int(seed), zlib.crc32(split.encode()), int(index)])


def generate_scene(rng_or_seed, size=192, variation: float = 1.0):
    """``(image uint8 HxWx3, mask uint8 HxW, texture uint8 HxW)`` of one scene."""
    s = render_scene(rng_or_seed, size, variation)
    return s.image, s.mask, s.texture


def render_scene(rng_or_seed, size=192, variation: float = 1.0) -> Scene:
    """One scene with all its layers. ``rng_or_seed``: an int, a ``SeedSequence`` or
    a ``numpy.random.Generator``; ``size``: int or (H, W)."""
    if isinstance(rng_or_seed, np.random.Generator):
        layout_seed, look_seed = rng_or_seed.integers(0, 2 ** 63, size=2)
    else:
        ss = rng_or_seed if isinstance(rng_or_seed, np.random.SeedSequence) \
            else np.random.SeedSequence(int(rng_or_seed))
        layout_seed, look_seed = ss.spawn(2)
    h, w = (size, size) if np.isscalar(size) else (int(size[0]), int(size[1]))
    return _Painter(np.random.default_rng(layout_seed), np.random.default_rng(look_seed),
                    h, w, float(variation)).paint()


# -- smooth noise: a coarse random grid, linearly upsampled ---------------------------------

@functools.lru_cache(maxsize=256)
def _interp_index(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Left neighbour and weight of each of ``n_out`` points on an ``n_in`` grid."""
    pos = np.linspace(0, n_in - 1, n_out)
    lo = np.clip(np.floor(pos).astype(np.intp), 0, n_in - 2)
    return lo, (pos - lo).astype(np.float32)


def _noise(rng, h, w, cells_y, cells_x) -> np.ndarray:
    """Smooth noise in [0, 1], (h, w), with about ``cells`` bumps along each axis.

    Gathers and lerps rather than interpolation-matrix products: BLAS would start
    threads for these tiny products and run several times slower on a busy machine."""
    gy, gx = max(2, int(cells_y) + 1), max(2, int(cells_x) + 1)
    grid = rng.random((gy, gx), dtype=np.float32)
    lo, f = _interp_index(gy, h)
    top = grid[lo]
    rows = top + (grid[lo + 1] - top) * f[:, None]
    lo, f = _interp_index(gx, w)
    left = rows[:, lo]
    return left + (rows[:, lo + 1] - left) * f


def _grain(rng, h, w) -> np.ndarray:
    """Per-pixel uniform noise in [0, 1]: from random bytes, several times cheaper
    than ``rng.random`` and plenty for texture grain."""
    return np.frombuffer(rng.bytes(h * w), np.uint8).reshape(h, w) * np.float32(1 / 255)


def _lerp(c0, c1, t) -> np.ndarray:
    """Planar colour field (3, h, w) from a pattern ``t`` in [0, 1] between two colours.

    Colours are planar (channel first) throughout: numpy broadcasting over a trailing
    axis of length 3 runs an order of magnitude slower than over whole rows."""
    t = np.asarray(t, np.float32)
    return c0[:, None, None] + t[None] * (c1 - c0)[:, None, None]


class _Painter:
    """Paints one scene layer by layer into a planar float canvas + label maps."""

    def __init__(self, layout, look, h, w, variation):
        self.rng, self.look_rng, self.h, self.w, self.v = layout, look, h, w, variation
        self.u = min(h, w) / 192.0  # geometry scales with the image
        self.canvas = np.zeros((3, h, w), np.float32)
        self.mask = np.zeros((h, w), np.uint8)
        self.texture = np.zeros((h, w), np.uint8)
        self.looks = {}

    # appearance: per texture per scene, jitter scaled by ``variation``
    def colours(self, tex, jitter=1.0):
        if tex not in self.looks:
            r, v = self.look_rng, self.v
            c0, c1 = (np.asarray(c, np.float32) for c in _BASE[tex])
            shift = v * r.uniform(-30, 30, 3).astype(np.float32)
            gain = 1 + v * r.uniform(-0.2, 0.2)
            contrast = 1 + v * r.uniform(-0.35, 0.35)
            mid = (c0 + c1) / 2
            c0, c1 = mid + (c0 - mid) * contrast, mid + (c1 - mid) * contrast
            freq = 1 + v * r.uniform(-0.3, 0.3)
            self.looks[tex] = ((c0 + shift) * gain, (c1 + shift) * gain, freq)
        c0, c1, freq = self.looks[tex]
        if jitter:  # a per-instance nudge on top (objects differ a little from each other)
            d = self.v * jitter * self.look_rng.uniform(-15, 15, 3).astype(np.float32)
            c0, c1 = c0 + d, c1 + d
        return c0, c1, freq

    def put(self, y0, x0, m, colour, cls, tex):
        """Paint ``colour`` (3, h, w) where local boolean ``m`` is set, at (y0, x0)."""
        sl = (slice(y0, y0 + m.shape[0]), slice(x0, x0 + m.shape[1]))
        np.copyto(self.canvas[(slice(None),) + sl], colour, where=m[None])
        np.copyto(self.mask[sl], cls, where=m)
        np.copyto(self.texture[sl], tex, where=m)

    def blob(self, cy, cx, r, aspect=None, wobble=0.18):
        """A noisy ellipse: ``(y0, x0, inside, ys, xs, rho)`` over its clipped bbox."""
        rng = self.rng
        aspect = rng.uniform(0.55, 1.0) if aspect is None else aspect
        angle = rng.uniform(0, np.pi)
        a2, a3 = rng.uniform(0, wobble, 2)
        p2, p3 = rng.uniform(0, 2 * np.pi, 2)
        reach = r * (1 + a2 + a3) + 1
        y0, y1 = max(int(cy - reach), 0), min(int(cy + reach) + 2, self.h)
        x0, x1 = max(int(cx - reach), 0), min(int(cx + reach) + 2, self.w)
        ys = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
        xs = np.arange(x0, x1, dtype=np.float32)[None, :] - cx
        c, s = np.cos(angle), np.sin(angle)
        pu, pv = xs * c + ys * s, (ys * c - xs * s) / aspect
        rho = np.sqrt(pu * pu + pv * pv)
        if wobble == 0:
            return y0, x0, rho < r, ys, xs, rho
        # edge radius r (1 + a2 cos(2 theta + p2) + a3 cos(3 theta + p3)), with the
        # multiple-angle formulas instead of arctan2 and cos (no transcendentals)
        inv = 1 / np.maximum(rho, 1e-6)
        c, s = pu * inv, pv * inv
        cos2, sin2 = c * c - s * s, 2 * c * s
        cos3, sin3 = c * (4 * c * c - 3), s * (3 - 4 * s * s)
        edge = r * (1 + a2 * (cos2 * np.cos(p2) - sin2 * np.sin(p2))
                    + a3 * (cos3 * np.cos(p3) - sin3 * np.sin(p3)))
        return y0, x0, rho < edge, ys, xs, rho

    # -- layers -------------------------------------------------------------------
    def paint(self) -> Scene:
        rng, h, w = self.rng, self.h, self.w
        self.backgrounds()
        background = self.mask.copy()
        for cls in self.region_classes:
            if rng.random() < 0.6:
                for _ in range(rng.integers(1, 4)):
                    self.distractor(cls, background)
        occluders = [self.tree] * int(rng.choice(3, p=[0.5, 0.35, 0.15])) + \
                    [self.building] * int(rng.random() < 0.4)
        in_front = [rng.random() >= 0.3 for _ in occluders]  # else behind the objects
        for paint, front in zip(occluders, in_front):
            if not front:
                paint()
        for _ in range(rng.integers(2, 6)):
            self.object(background)
        for paint, front in zip(occluders, in_front):
            if front:
                paint()
        self.light()
        # sensor noise: uniform, std 1..6 grey levels (0.29 = std of U(-0.5, 0.5))
        sigma = (1 + self.v * self.look_rng.uniform(0, 5)) / 0.29
        self.canvas += (_grain(self.look_rng, h, w) - 0.5) * sigma
        self.canvas += 0.5
        np.clip(self.canvas, 0, 255, out=self.canvas)
        image = np.empty((h, w, 3), np.uint8)
        for ch in range(3):  # per-channel copies: far cheaper than a transposing copy
            np.copyto(image[..., ch], self.canvas[ch], casting="unsafe")
        return Scene(image, self.mask, self.texture, background)

    def backgrounds(self):
        """2-3 large regions: a warped Voronoi partition, one background class each."""
        rng, h, w, u = self.rng, self.h, self.w, self.u
        k = int(rng.integers(2, 4))
        classes = rng.choice(BACKGROUNDS, k, replace=False)
        ys = np.arange(h, dtype=np.float32)[:, None]
        xs = np.arange(w, dtype=np.float32)[None, :]
        best = dist = None
        region = np.zeros((h, w), np.uint8)
        for j in range(k):
            sy, sx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
            warp = _noise(rng, h, w, 3, 3) * (60 * u)
            dist = np.sqrt((ys - sy) ** 2 + (xs - sx) ** 2) + warp
            if best is None:
                best = dist
            else:
                closer = dist < best
                region[closer] = j
                np.minimum(best, dist, out=best)
        self.region_classes = [int(c) for c in classes]
        # one pattern field for all regions, then one colour lookup: cheaper than
        # painting k full-frame colour images
        t = np.empty((h, w), np.float32)
        lows, spans = np.empty((k, 3), np.float32), np.empty((k, 3), np.float32)
        for j, cls in enumerate(self.region_classes):
            pattern, lows[j], high = self.background_texture(cls)
            spans[j] = high - lows[j]
            np.copyto(t, pattern, where=region == j)
        for ch in range(3):
            self.canvas[ch] = np.take(lows[:, ch], region) + t * np.take(spans[:, ch], region)
        self.mask[...] = np.take(np.asarray(self.region_classes, np.uint8), region)
        self.texture[...] = np.take(
            np.asarray([BACKGROUND_TEXTURE[c] for c in self.region_classes], np.uint8), region)

    def background_texture(self, cls):
        """(pattern in [0, 1] (h, w), dark colour, light colour) of a background."""
        r, h, w, u = self.look_rng, self.h, self.w, self.u
        c0, c1, f = self.colours(BACKGROUND_TEXTURE[cls], jitter=0)
        ys = np.arange(h, dtype=np.float32)[:, None]
        xs = np.arange(w, dtype=np.float32)[None, :]
        if cls == SKY:  # a smooth gradient with faint haze
            a = r.uniform(-0.5, 0.5)
            grad = ys * np.cos(a) + xs * np.sin(a)
            grad = (grad - grad.min()) / max(float(grad.max() - grad.min()), 1e-6)
            t = 0.7 * grad + 0.3 * _noise(r, h, w, 2, 2)
        elif cls == WATER:  # warped horizontal ripples
            period = 7 * u / f
            warp = _noise(r, h, w, 4, 3) * (10 * u)
            t = 0.5 + 0.5 * np.sin(2 * np.pi * (ys + warp) / period + 0.15 * xs / u)
            t = 0.35 * t + 0.65 * _noise(r, h, w, 3, 3)
        elif cls == ROAD:  # fine grain over slow blotches
            grain = _grain(r, h, w)
            t = 0.45 * grain + 0.55 * _noise(r, h, w, 8 * f, 8 * f)
        else:  # GRASS: vertical streaks
            streaks = _noise(r, h, w, 5, 70 * f * u)
            t = 0.6 * streaks + 0.4 * _grain(r, h, w)
        return t, c0, c1

    def distractor(self, cls, background):
        """A patch of another texture that keeps its region's class."""
        rng, u = self.rng, self.u
        for _ in range(20):  # a random point of the region (rejection beats np.nonzero)
            cy, cx = rng.uniform(0, self.h), rng.uniform(0, self.w)
            if background[int(cy), int(cx)] == cls:
                break
        else:
            return
        tex = DISTRACTOR_TEXTURE[cls]
        c0, c1, f = self.colours(tex)
        r = self.look_rng
        if cls == ROAD:  # a dashed lane marking
            angle = rng.uniform(0, np.pi)
            dy, dx = np.sin(angle), np.cos(angle)
            length, gap, thick = rng.uniform(6, 12) * u, rng.uniform(4, 8) * u, 1.2 * u + 0.4
            y0, x0, inside, py, px, _ = self.blob(cy, cx, 34 * u, aspect=1.0, wobble=0)
            along = px * dx + py * dy
            across = np.abs(-px * dy + py * dx)
            inside &= (across < thick) & (np.mod(along, length + gap) < length)
            colour = _lerp(c0, c1, np.full(inside.shape, float(rng.random() < 0.5),
                                           np.float32))
        else:
            if cls == WATER:  # a long thin streak of foam
                y0, x0, inside, py, px, _ = self.blob(cy, cx, rng.uniform(8, 18) * u,
                                                      aspect=rng.uniform(0.12, 0.25))
            else:  # a cloud or a flower patch
                y0, x0, inside, py, px, _ = self.blob(cy, cx, rng.uniform(7, 20) * u,
                                                      wobble=0.3)
            hh, ww = inside.shape
            if cls == GRASS:  # sparse 2x2 speckles
                dots = _grain(rng, (hh + 1) // 2, (ww + 1) // 2)  # layout, not looks
                dots = np.repeat(np.repeat(dots, 2, 0), 2, 1)[:hh, :ww]
                inside &= dots > 0.72
                t = (r.random(inside.shape, dtype=np.float32) < 0.5).astype(np.float32)
            else:
                t = _noise(r, hh, ww, 3, 3)
            colour = _lerp(c0, c1, t)
        inside &= background[y0:y0 + inside.shape[0], x0:x0 + inside.shape[1]] == cls
        self.put(y0, x0, inside, colour, cls, tex)

    def object(self, background):
        """A ring-textured blob; its class comes from the background under it, and it is
        clipped to that background region (partly hidden behind another region)."""
        rng, u = self.rng, self.u
        for _ in range(6):
            cy, cx = rng.uniform(0, self.h), rng.uniform(0, self.w)
            cls = int(background[int(cy), int(cx)])
            r = rng.uniform(9, 24) * u
            y0, x0, inside, ys, xs, rho = self.blob(cy, cx, r)
            under = background[y0:y0 + inside.shape[0], x0:x0 + inside.shape[1]] == cls
            kept = inside & under
            if kept.sum() >= 0.6 * inside.sum():
                break
        c0, c1, f = self.colours(T_OBJECT, jitter=1.0)
        period = rng.uniform(4.5, 7.5) * u / f
        t = 0.5 + 0.5 * np.cos(2 * np.pi * rho / period)
        # shading: lit from the top-left, like a rounded body
        shade = 1 + 0.25 * (-(ys + xs) / (1.4 * r)).clip(-1, 1)
        colour = _lerp(c0, c1, t) * shade[None]
        self.put(y0, x0, kept, colour, OBJECT_ON[cls], T_OBJECT)

    def tree(self):
        """Canopy of foliage on a bark trunk (a locally distinct class)."""
        rng, u = self.rng, self.u
        cy, cx = rng.uniform(0.1, 0.8) * self.h, rng.uniform(0, self.w)
        r = rng.uniform(12, 26) * u
        trunk_w, trunk_h = rng.uniform(2.5, 5) * u, rng.uniform(0.8, 1.6) * r
        ty0, ty1 = int(cy + 0.5 * r), min(int(cy + 0.5 * r + trunk_h) + 1, self.h)
        tx0, tx1 = max(int(cx - trunk_w), 0), min(int(cx + trunk_w) + 1, self.w)
        if ty1 > ty0 and tx1 > tx0:
            c0, c1, f = self.colours(T_BARK)
            hh, ww = ty1 - ty0, tx1 - tx0
            stripes = 0.5 + 0.5 * np.sin(np.arange(ww, dtype=np.float32) * 2.2 / u * f)
            t = np.broadcast_to(stripes, (hh, ww)) * 0.6 + 0.4 * _noise(self.look_rng, hh, ww, 4, 1)
            self.put(ty0, tx0, np.ones((hh, ww), bool), _lerp(c0, c1, t), TREE, T_BARK)
        y0, x0, inside, ys, xs, rho = self.blob(cy, cx, r, aspect=rng.uniform(0.7, 1.0),
                                                wobble=0.25)
        c0, c1, f = self.colours(T_FOLIAGE)
        hh, ww = inside.shape
        t = 0.6 * _noise(self.look_rng, hh, ww, hh / (4 * u) * f, ww / (4 * u) * f) + \
            0.4 * _grain(self.look_rng, hh, ww)
        shade = 1 + 0.2 * (-(ys + xs) / (1.4 * r)).clip(-1, 1)
        self.put(y0, x0, inside, _lerp(c0, c1, t) * shade[None], TREE, T_FOLIAGE)

    def building(self):
        """A facade (brick wall) with a grid of windows (a locally distinct class)."""
        rng, u, h, w = self.rng, self.u, self.h, self.w
        bw, bh = rng.uniform(22, 50) * u, rng.uniform(28, 70) * u
        x0 = int(rng.uniform(-0.2 * bw, w - 0.8 * bw))
        bottom = int(rng.uniform(0.5, 1.05) * h)
        y0 = bottom - int(bh)
        ya, yb, xa, xb = max(y0, 0), min(bottom, h), max(x0, 0), min(x0 + int(bw), w)
        if yb <= ya or xb <= xa:
            return
        ys = np.arange(ya, yb, dtype=np.float32)[:, None] - y0
        xs = np.arange(xa, xb, dtype=np.float32)[None, :] - x0
        c0, c1, f = self.colours(T_WALL)
        brick = 4 * u / f
        mortar = (np.mod(ys, brick) < max(1.0, 0.8 * u)) | \
            (np.mod(xs + (np.floor(ys / brick) % 2) * brick, 2 * brick) < max(1.0, 0.8 * u))
        t = np.where(mortar, 0.9, 0.25 + 0.3 * _grain(self.look_rng, *mortar.shape))
        full = np.ones(mortar.shape, bool)
        self.put(ya, xa, full, _lerp(c0, c1, t.astype(np.float32)), BUILDING, T_WALL)
        pitch_y, pitch_x = rng.uniform(9, 14) * u, rng.uniform(8, 13) * u
        win_h, win_w = pitch_y * rng.uniform(0.4, 0.65), pitch_x * rng.uniform(0.4, 0.65)
        wy, wx = np.mod(ys - 0.35 * pitch_y, pitch_y), np.mod(xs - 0.3 * pitch_x, pitch_x)
        windows = (wy < win_h) & (wx < win_w) & (ys > 0.3 * pitch_y) & \
            (xs > 0.25 * pitch_x) & (xs < bw - 0.25 * pitch_x)
        c0, c1, f = self.colours(T_WINDOW)
        t = np.broadcast_to((wy / max(win_h, 1)).clip(0, 1), windows.shape)
        self.put(ya, xa, windows, _lerp(c0, c1, t), BUILDING, T_WINDOW)

    def light(self):
        """Global directional lighting: a brightness ramp across the whole image."""
        r, h, w = self.look_rng, self.h, self.w
        amp = self.v * r.uniform(0.05, 0.4)
        a = r.uniform(0, 2 * np.pi)
        ys = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None]
        xs = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
        gain = (1 + r.uniform(-0.15, 0.15) * self.v) * (1 + amp * (ys * np.cos(a) + xs * np.sin(a)))
        self.canvas *= gain[None]


class SceneDataset(SegDataset):
    """``num`` procedural scenes, generated on the fly (see module docstring).

    Args:
        num: number of scenes.
        size: side length in pixels (or (H, W)).
        seed: dataset seed; with ``split`` it fixes every scene.
        split: any name; each split draws from its own seed stream.
        variation: scales appearance variation (1 = default, 0 = fixed looks).
        transform: sample transform; ``None`` -> eval transform.
        targets: ``"class"`` (SCENE_CLASSES, the context task) or ``"texture"``
            (TEXTURES, the pretraining task); CLASSES/PALETTE follow it.
        root: ignored (accepted so that ``build_dataset`` treats all names alike).
    """

    def __init__(self, num: int = 1000, size=192, seed: int = 0, split: str = "train",
                 variation: float = 1.0, transform=None, targets: str = "class", root=None):
        super().__init__(None, split, transform)
        if num < 0:
            raise ValueError(f"num={num}: must be >= 0")
        if targets not in ("class", "texture"):
            raise ValueError(f"targets={targets!r}: expected 'class' or 'texture'")
        if min(np.atleast_1d(size)) < 32:
            raise ValueError(f"size={size}: scenes need at least 32 pixels a side")
        self.num, self.size, self.seed = int(num), size, int(seed)
        self.variation, self.targets = float(variation), targets
        if targets == "class":
            self.CLASSES, self.PALETTE = SCENE_CLASSES, SCENE_PALETTE
        else:
            self.CLASSES, self.PALETTE = TEXTURES, TEXTURE_PALETTE

    def __len__(self):
        return self.num

    def name(self, i):
        return f"scene_{i:06d}"

    def scene(self, i) -> Scene:
        """Scene ``i`` with all its layers (image, mask, texture, background)."""
        if not 0 <= i < self.num:
            raise IndexError(f"scene {i} out of range for {self.num} scenes")
        return render_scene(scene_seed(self.seed, self.split, i), self.size, self.variation)

    def load(self, i):
        s = self.scene(i)
        return s.image, (s.mask if self.targets == "class" else s.texture)

    def load_texture(self, i) -> np.ndarray:
        """The texture labelling of scene ``i`` (whatever ``targets`` is)."""
        return self.scene(i).texture

    def __repr__(self):
        return (f"SceneDataset(num={self.num}, size={self.size}, seed={self.seed}, "
                f"split={self.split!r}, variation={self.variation}, targets={self.targets!r})")
