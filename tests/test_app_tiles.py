"""The app's picture helpers (hfgd_lab.viz.tiles) and page pieces (hfgd_lab.app.html):
text is wrapped, never cut; small images upscale by whole factors that clicks can undo;
legends and colour bars carry every entry; names from cards are escaped."""
import numpy as np
import pytest

from hfgd_lab.app import html as page
from hfgd_lab.viz import tiles


def _ink_columns(block: np.ndarray) -> np.ndarray:
    """Columns of a white text block that hold any dark pixel."""
    return np.where((block < 128).any(axis=(0, 2)))[0]


def test_wrap_text_never_cuts_and_keeps_every_word():
    text = "layer 2, head mean of a rather long caption with a verylongunbrokenword"
    for width in (60, 120, 400):
        lines = tiles.wrap_text(text, width, 14)
        assert all(tiles.text_width(line, 14) <= width for line in lines), (width, lines)
        assert "".join(lines).replace(" ", "") == text.replace(" ", "")
    assert tiles.wrap_text("short", 400, 14) == ["short"]


def test_caption_grows_instead_of_cutting():
    tile = np.zeros((50, 90, 3), np.uint8)
    one = tiles.caption(tile, "head 1")
    many = tiles.caption(tile, "layer 1, head mean, averaged over all the heads")
    assert one.shape[1] == many.shape[1] == 90
    assert many.shape[0] > one.shape[0] > 50          # more lines, never wider
    band = many[: many.shape[0] - 50]
    cols = _ink_columns(band)
    assert cols.min() >= 1 and cols.max() <= 88        # the text stays inside the tile
    assert (many[-50:] == tile).all()


def test_font_is_readable_size():
    f = tiles.font(14)
    ascent, descent = f.getmetrics()
    assert ascent + descent >= 14  # a real scalable font, not PIL's 11 px bitmap


@pytest.mark.parametrize("size, factor", [((192, 192), 2), ((68, 61), 6), ((512, 384), 1),
                                          ((300, 200), 1), ((20, 30), 8), ((224, 100), 2)])
def test_display_scale(size, factor):
    assert tiles.display_scale(size) == factor
    assert max(size) * factor <= 448 or factor == 1


def test_upscale_is_nearest_and_invertible():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (7, 5, 3), dtype=np.uint8)
    big = tiles.upscale(img, 3)
    assert big.shape == (21, 15, 3)
    for y in range(21):
        for x in range(15):
            assert (big[y, x] == img[y // 3, x // 3]).all()
    assert tiles.upscale(img, 1) is img


def test_legend_strip_wraps_all_items():
    items = [((255, 0, 0), "fixed by the upsampler (123 px)"), ((0, 255, 0), "broken (7 px)"),
             ((0, 0, 255), "changed, both wrong (20346 px)")]
    narrow = tiles.legend_strip(items, 200)
    wide = tiles.legend_strip(items, 900)
    assert narrow.shape[1] == 200 and narrow.shape[0] > wide.shape[0]
    for rgb, _ in items:  # every swatch is drawn
        assert (narrow.reshape(-1, 3) == rgb).all(1).any()


def test_colorbar_writes_both_ends_and_a_long_label_below():
    short = tiles.colorbar("RdBu_r", -1, 1, "cosine", width=256)
    long = tiles.colorbar("RdBu_r", -1, 1, "cosine of F_up with the upsampled F_high, "
                          "one scale for every panel", width=256)
    assert short.shape[1] == long.shape[1] == 256 and long.shape[0] > short.shape[0]
    assert (short[0, 0] != short[0, -1]).any()   # the ramp runs from one end to the other


def test_outline_cell_and_cells_overlay():
    img = np.zeros((64, 96, 3), np.uint8)
    out = tiles.outline_cell(img, 1, 2, 32, thickness=2)
    assert (out[32, 64:96] == (0, 255, 0)).all() and (out[33, 70] == (0, 255, 0)).all()
    assert (out[40, 70] == 0).all()  # inside the cell untouched
    cells = np.arange(6, dtype=np.float32).reshape(2, 3)
    rows, cols = tiles.pixel_rows(64, 64, 32, 2), tiles.pixel_rows(96, 96, 32, 3)
    heat = tiles.cells_overlay(img, cells, rows, cols, alpha=1.0)
    assert (heat[0, 0] == tiles.lut("inferno")[0]).all()
    assert (heat[-1, -1] == tiles.lut("inferno")[255]).all()


def test_page_pieces_escape_card_text():
    evil = "<img src=x onerror=alert(1)>"
    pal = np.array([[10, 20, 30], [200, 100, 0]], np.uint8)
    legend = page.class_legend_html([evil, "sky"], pal, present=[1])
    assert "<img src=x" not in legend and "&lt;img" in legend
    assert legend.index("sky") < legend.index("&lt;img")  # present classes first
    grid = page.tiles_html([[(evil, np.zeros((4, 4, 3), np.uint8))]], [evil])
    assert "<img src=x" not in grid and grid.count("data:image/jpeg;base64,") == 1
    status = page.status_html("<script>alert(1)</script>")
    assert "<script>" not in status and "&lt;script&gt;alert(1)" in status
    bar = page.colorbar_html("RdBu_r", -0.5, 0.5, "cosine <b>")
    assert "linear-gradient" in bar and "-0.5" in bar and "0.5" in bar and "&lt;b&gt;" in bar
