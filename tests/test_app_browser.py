"""The app in a real browser: Debian's chromium (installed here when missing) driven
headless by Playwright against a launched server, at the default window width (1280 px)
and at a phone's (390 px). Screenshots of every tab at both widths go to test-artifacts/.

What a newcomer hit (issue 14, App 5-8), each checked here: a bad value shows a message
and keeps the last good result; a failed model load puts the selector back on the model
in use; every title, caption, legend entry and colour-bar label is readable (at least
12 px, not cut, not covered by anything); small images are shown upscaled while clicks
still land on the right image pixel; the examples are thumbnails."""
import shutil
import time
from pathlib import Path

import pytest

from hfgd_lab.app.testing import CHROMIUM_ARGS, ServerProcess, ensure_chromium
from hfgd_lab.engine.zoo import DEFAULT_MODEL, write_stand_ins

sync_api = pytest.importorskip("playwright.sync_api")

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
TIMEOUT = 240_000  # ms; the machine is shared and can be very slow
TABS = ("Segmentation", "ImageNet features", "Class tokens", "HFG vs upsampler",
        "CAE attention", "Stop-gradient")
# page text that must stay readable
TEXT = (".hfgd-title", "figcaption", ".hfgd-colorbar-ticks span", ".hfgd-colorbar-label",
        ".hfgd-legend-item", "#examples .caption-label", ".hfgd-status", "#banner p")

READABLE_JS = """
(selectors) => {
  const bad = [];
  const clipping = (el) => {
    for (let a = el.parentElement; a; a = a.parentElement) {
      const s = getComputedStyle(a);
      if (['hidden', 'clip', 'auto', 'scroll'].includes(s.overflowX) ||
          ['hidden', 'clip', 'auto', 'scroll'].includes(s.overflowY)) return a;
    }
    return null;
  };
  let checked = 0;
  for (const sel of selectors) {
    for (const el of document.querySelectorAll(sel)) {
      const r0 = el.getBoundingClientRect();
      if (r0.width === 0 || r0.height === 0 || !el.innerText.trim()) continue;  // not shown
      checked += 1;
      const text = el.innerText.trim().slice(0, 40);
      const size = parseFloat(getComputedStyle(el).fontSize);
      if (size < 12) bad.push(`${sel} "${text}": ${size}px text`);
      if (el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1)
        bad.push(`${sel} "${text}": cut (${el.scrollWidth} > ${el.clientWidth})`);
      el.scrollIntoView({block: 'center', inline: 'center'});
      const r = el.getBoundingClientRect();
      const box = clipping(el);
      if (box) {
        const b = box.getBoundingClientRect();
        if (r.left < b.left - 1 || r.right > b.right + 1 || r.top < b.top - 1 ||
            r.bottom > b.bottom + 1) bad.push(`${sel} "${text}": outside its box`);
      }
      for (const fx of [0.1, 0.5, 0.9]) {
        const x = r.left + fx * r.width, y = r.top + r.height / 2;
        const top = document.elementFromPoint(x, y);
        if (top && !(el === top || el.contains(top) || top.contains(el)))
          bad.push(`${sel} "${text}": covered by <${top.tagName.toLowerCase()} ` +
                   `class="${top.className}">`);
      }
    }
  }
  return {bad, checked};
}
"""


@pytest.fixture(scope="module")
def chromium():
    try:
        return ensure_chromium()
    except Exception as e:  # no root / no package registry: fail, saying why
        pytest.fail(f"chromium is not available and could not be installed: {e}")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """A --models-dir with one checkpoint that cannot load (junk weights)."""
    weights = write_stand_ins(tmp_path_factory.getbasetemp() / "app_weights")
    d = tmp_path_factory.mktemp("browser_models")
    shutil.copy(weights / f"{DEFAULT_MODEL}.json", d / "broken.json")
    (d / "broken.safetensors").write_bytes(b"junk")
    return d


@pytest.fixture(scope="module")
def server(models_dir, tmp_path_factory):
    weights = write_stand_ins(tmp_path_factory.getbasetemp() / "app_weights")
    srv = ServerProcess(weights, args=["--models-dir", models_dir],
                        log=tmp_path_factory.mktemp("browser") / "server.log")
    try:
        srv.wait_ready(timeout=900)
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser(chromium):
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _open(browser, server, width, height):
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(TIMEOUT)
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(server.url, wait_until="domcontentloaded")
    page.wait_for_selector("#examples img")
    return page


@pytest.fixture(scope="module")
def page(browser, server):
    page = _open(browser, server, 1280, 900)
    yield page
    page.close()


@pytest.fixture(scope="module")
def phone(browser, server):
    page = _open(browser, server, 390, 844)
    yield page
    page.close()


def shot(page, name):
    width = page.viewport_size["width"]
    page.screenshot(path=str(ARTIFACTS / f"app_{width}px_{name}.png"), full_page=True)


def has_text(page, selector, text):
    page.wait_for_function(
        "([s, t]) => { const e = document.querySelector(s); return e && e.innerText.includes(t); }",
        arg=[selector, text], timeout=TIMEOUT)


def image_ready(page, selector, width=None):
    page.wait_for_function(
        "([s, w]) => { const i = document.querySelector(s + ' img');"
        " return i && i.complete && i.naturalWidth > 0 && (w === null || i.naturalWidth === w); }",
        arg=[selector, width], timeout=TIMEOUT)


def open_tab(page, name):
    tab = page.get_by_role("tab", name=name)
    if tab.count() and tab.first.is_visible():
        tab.first.click()
    else:  # a narrow window keeps the other tabs in the overflow menu
        page.get_by_label("More tabs").click()
        page.locator(".overflow-dropdown button", has_text=name).click()


def pick_example(page, caption):
    page.locator("#examples .thumbnail-item", has_text=caption).click()


def settle(page, ms=1500):
    """Let the queued events of the last action finish (no spinner left)."""
    page.wait_for_function("() => !document.querySelector('.progress-text, .eta-bar')",
                           timeout=TIMEOUT)
    page.wait_for_timeout(ms)


def assert_readable(page, where):
    result = page.evaluate(READABLE_JS, list(TEXT))
    assert result["checked"] > 0, where
    assert not result["bad"], f"{where}: " + "; ".join(result["bad"][:8])
    return result["checked"]


# ---- at 1280 px ---------------------------------------------------------------------------

def test_page_loads_with_example_thumbnails(page):
    assert "hfgd-lab" in page.title()
    for tab in TABS:
        page.get_by_role("tab", name=tab).wait_for()
    thumbs = page.locator("#examples .thumbnail-item img")
    assert thumbs.count() == 11  # 4 scenes + 7 photos, each a picture
    captions = page.locator("#examples .caption-label").all_inner_texts()
    assert "scene 0, 192 px" in captions and "chelsea" in captions
    has_text(page, "#credits", "Chelsea the cat")
    assert_readable(page, "loaded")
    shot(page, "1_loaded")


def test_example_shows_an_upscaled_overlay_and_a_legend(page):
    pick_example(page, "scene 0, 192 px")
    image_ready(page, "#seg-overlay", 384)  # the 192 px scene, shown at 2x (nearest)
    has_text(page, "#banner", "held-out")
    has_text(page, "#legend", "sky")
    box = page.locator("#seg-overlay img").bounding_box()
    assert box["width"] > 300
    settle(page)
    assert_readable(page, "segmentation")
    shot(page, "2_segmentation")


def test_click_on_the_upscaled_attention_image_maps_to_image_pixels(page):
    open_tab(page, "CAE attention")
    has_text(page, "#attention-caption", "Query pixel (96, 96)")  # the centre first
    image_ready(page, "#attention-image", 384)
    grid_before = page.locator("#attention-grid .hfgd-tiles").inner_html()
    img = page.locator("#attention-image img")
    box = img.bounding_box()
    t0 = time.perf_counter()
    # 0.8 / 0.2 of the picture: pixel (153, 38) of the 192 px scene, token row 1, column 4
    page.mouse.click(box["x"] + 0.8 * box["width"], box["y"] + 0.2 * box["height"])
    has_text(page, "#attention-caption", "(row 1, column 4)")
    print(f"click -> attention panel updated in {time.perf_counter() - t0:.2f} s")
    assert page.locator("#attention-caption").inner_text().startswith("Query pixel (153, 38)")
    assert page.locator("#attention-x input").input_value() == "153"
    assert page.locator("#attention-grid .hfgd-tiles").inner_html() != grid_before
    captions = page.locator("#attention-grid figcaption").all_inner_texts()
    assert len(captions) == 10 and captions[4] == "layer 1, head mean"
    settle(page)
    assert_readable(page, "attention")
    shot(page, "3_attention_click")


def test_a_bad_pixel_shows_a_message_and_keeps_the_last_result(page):
    grid = page.locator("#attention-grid .hfgd-tiles").inner_html()
    caption = page.locator("#attention-caption").inner_text()
    page.locator("#attention-x input").fill("5000")
    page.locator("#attention-y input").fill("10")
    page.locator("#attention-show").click()
    has_text(page, "#status", "outside the 192×192 image")
    has_text(page, "#status", "still show the last good result")
    assert page.locator("#attention-grid .hfgd-tiles").inner_html() == grid
    assert page.locator("#attention-caption").inner_text() == caption
    assert page.locator(".error").count() == 0  # no error badge over any output
    assert_readable(page, "attention with a message")
    shot(page, "4_bad_pixel_message")


def test_a_non_image_upload_shows_a_message_and_keeps_the_last_result(page, tmp_path):
    open_tab(page, "Segmentation")
    image_ready(page, "#seg-overlay", 384)
    overlay = page.locator("#seg-overlay img").get_attribute("src")
    banner = page.locator("#banner").inner_text()
    notes = tmp_path / "notes.png"
    notes.write_text("a text file named like an image")
    page.set_input_files("#input-image input[type=file]", str(notes))
    has_text(page, "#status", "not a readable image")
    settle(page)
    assert page.locator("#seg-overlay img").get_attribute("src") == overlay
    assert page.locator("#banner").inner_text() == banner
    assert page.locator(".error").count() == 0
    shot(page, "5_non_image_message")
    pick_example(page, "scene 0, 192 px")  # a good image clears the message
    page.wait_for_function("() => !document.querySelector('#status .hfgd-status')",
                           timeout=TIMEOUT)


def test_a_failed_model_load_resets_the_selector(page, models_dir):
    selector = page.locator("#model input")
    assert selector.input_value() == DEFAULT_MODEL
    banner = page.locator("#banner").inner_text()
    selector.click()
    page.get_by_role("option", name="broken").click()
    has_text(page, "#status", "cannot load model")
    page.wait_for_function(
        "(m) => document.querySelector('#model input').value === m", arg=DEFAULT_MODEL,
        timeout=TIMEOUT)
    settle(page)
    assert selector.input_value() == DEFAULT_MODEL
    assert "cannot load model" in page.locator("#status").inner_text()  # not redrawn away
    assert DEFAULT_MODEL in page.locator("#banner").inner_text()
    assert page.locator("#banner").inner_text() == banner
    assert page.locator(".error").count() == 0
    assert str(models_dir) not in page.locator("#status").inner_text()
    shot(page, "6_failed_model_load")
    # a model that loads changes the views
    selector.click()
    other = "hfgd_lite0_sg" if DEFAULT_MODEL == "hfgd_lite0_nosg" else "hfgd_lite0_nosg"
    page.get_by_role("option", name=other).click()
    has_text(page, "#banner", other)
    has_text(page, "#model-card", "stop-gradient " + ("on" if other.endswith("_sg") else "off"))
    page.wait_for_function("() => !document.querySelector('#status .hfgd-status')",
                           timeout=TIMEOUT)  # the message is gone
    selector.click()
    page.get_by_role("option", name=DEFAULT_MODEL).click()
    has_text(page, "#banner", DEFAULT_MODEL)


def test_every_tab_is_readable(page):
    pick_example(page, "scene 0, 192 px")
    for i, tab in enumerate(TABS):
        open_tab(page, tab)
        settle(page, 2500)
        assert_readable(page, tab)
        shot(page, f"7_{i}_{tab.replace(' ', '_')}")
    # the cosine panel has its colour bar and the changed-decisions panel its legend
    open_tab(page, "HFG vs upsampler")
    has_text(page, "#cosine-colorbar", "-1")
    has_text(page, "#changes-legend", "fixed by the upsampler")
    assert page.locator("#changes-legend .hfgd-legend-item").count() == 3


def test_the_imagenet_tab_names_a_photo(page):
    open_tab(page, "ImageNet features")
    pick_example(page, "chelsea")
    has_text(page, "#banner", "real photograph")
    has_text(page, "#banner", "ImageNet features")
    page.wait_for_function(
        "() => /Egyptian cat|tiger cat|tabby/.test(document.querySelector('#imagenet-top')"
        ".innerText)", timeout=TIMEOUT)
    assert page.locator("#imagenet-maps figcaption").count() == 5
    settle(page)
    assert_readable(page, "imagenet")
    shot(page, "8_imagenet_photo")


def test_the_stop_gradient_tab_says_what_each_number_is(page):
    open_tab(page, "Stop-gradient")
    has_text(page, "#sg-caption", "one bundled model")
    has_text(page, "#sg-table", "mean over seeds")
    settle(page)
    assert_readable(page, "stop-gradient")
    shot(page, "9_stop_gradient")
    assert not page.errors, page.errors


# ---- at a phone's width ---------------------------------------------------------------------

def test_phone_width(phone):
    assert phone.locator("#examples .thumbnail-item img").count() == 11
    assert_readable(phone, "phone, loaded")
    shot(phone, "1_loaded")
    pick_example(phone, "scene 0, 192 px")
    image_ready(phone, "#seg-overlay", 384)
    for i, tab in enumerate(TABS):
        open_tab(phone, tab)
        settle(phone, 2500)
        assert_readable(phone, f"phone, {tab}")
        shot(phone, f"2_{i}_{tab.replace(' ', '_')}")
    # a click still lands on the right pixel although the picture is shown smaller
    open_tab(phone, "CAE attention")
    image_ready(phone, "#attention-image", 384)
    img = phone.locator("#attention-image img")
    img.scroll_into_view_if_needed()
    box = img.bounding_box()
    assert box["width"] < 384  # shrunk to the phone's width
    phone.mouse.click(box["x"] + 0.8 * box["width"], box["y"] + 0.2 * box["height"])
    has_text(phone, "#attention-caption", "(row 1, column 4)")
    settle(phone)
    shot(phone, "3_attention_click")
    assert not phone.errors, phone.errors
