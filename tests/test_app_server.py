"""The app as a server (a child process, random-weight models): every named endpoint
through ``gradio_client``, each bad input refused clearly while the server keeps
serving, huge images with bounded memory, the upload cap, no file exposure, and 8
concurrent requests."""
import io
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from hfgd_lab.app.testing import ServerProcess, huge_png
from hfgd_lab.zoo import write_stand_ins

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError as ClientAppError  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
OPTS = (256, False, 192, False)   # max_side, sliding, window, flip
MODEL = "hfgd_scenes_sg"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_stand_ins(tmp_path_factory.getbasetemp() / "app_weights")


@pytest.fixture(scope="module")
def server(weights, tmp_path_factory):
    log = tmp_path_factory.mktemp("server") / "server.log"
    srv = ServerProcess(weights, log=log, threads=1)
    try:
        srv.wait_ready(timeout=600)
        yield srv
    finally:
        srv.stop()
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(log, ARTIFACTS / "app_server.log")


@pytest.fixture(scope="module")
def client(server):
    return Client(server.url, verbose=False)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Every kind of input, on disk."""
    d = tmp_path_factory.mktemp("inputs")
    from hfgd_lab.data.scenes import SceneDataset
    scenes = SceneDataset(num=8, size=192, seed=3, split="server-test")
    for i in range(8):
        Image.fromarray(scenes.load(i)[0]).save(d / f"scene{i}.png")
    base = scenes.load(0)[0]
    (d / "notes.png").write_text("this is a text file, not an image")
    jpg = io.BytesIO()
    Image.fromarray(base).save(jpg, "JPEG")
    (d / "corrupt.jpg").write_bytes(jpg.getvalue()[: len(jpg.getvalue()) // 3])
    Image.new("RGB", (1, 1), (10, 20, 30)).save(d / "one_pixel.png")
    Image.fromarray(base).convert("L").save(d / "gray.png")
    rgba = np.dstack([base, np.full(base.shape[:2], 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(d / "rgba.png")
    Image.fromarray((base[..., 0].astype(np.uint16) * 257)).save(d / "gray16.png")
    Image.fromarray(base).convert("CMYK").save(d / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(base[:, :128]).save(d / "exif6.jpg", exif=exif)  # stored 128 x 192
    return d


@pytest.fixture(scope="module")
def huge(tmp_path_factory):
    folder = tmp_path_factory.getbasetemp() / "huge"
    folder.mkdir(exist_ok=True)
    png, jpg = folder / "solid_20000.png", folder / "solid_20000.jpg"
    if not png.is_file():
        huge_png(png)
    if not jpg.is_file():
        Image.new("RGB", (20000, 20000), (90, 140, 200)).save(jpg, quality=50)
    return png, jpg


def segment(client, path, model=MODEL, opts=OPTS, opacity=0.5):
    return client.predict(handle_file(str(path)), model, *opts, opacity, api_name="/segment")


def size_of(path) -> tuple:
    with Image.open(path) as im:
        return im.size


def healthy(client, images):
    out = segment(client, images / "scene1.png")
    assert size_of(out[0]) == (192, 192)


# ---- the API --------------------------------------------------------------------------

def test_named_endpoints(client):
    api = client.view_api(return_format="dict", print_info=False)
    assert set(api["named_endpoints"]) == {"/segment", "/class_tokens", "/guidance",
                                           "/attention", "/compare", "/load_model"}
    params = {n: [p["parameter_name"] for p in e["parameters"]]
              for n, e in api["named_endpoints"].items()}
    assert params["/attention"] == ["image", "model", "max_side", "sliding", "window", "flip",
                                    "x", "y"]
    assert params["/compare"] == ["image", "max_side", "sliding", "window", "flip", "opacity"]


def test_safety_settings(server):
    cfg = httpx.get(server.url + "config").json()
    assert cfg["max_file_size"] == 10 * 1024 * 1024
    assert cfg["enable_queue"] and not cfg["show_error"]


def test_every_endpoint(client, images):
    img = handle_file(str(images / "scene0.png"))
    overlay, legend, areas, banner, summary = client.predict(img, MODEL, *OPTS, 0.5,
                                                             api_name="/segment")
    assert size_of(overlay) == (192, 192)
    assert areas["headers"][:2] == ["class", "area %"]
    assert abs(sum(r[1] for r in areas["data"]) - 100) < 0.5
    assert "hfgd_scenes_sg" in banner and "Trained on" in banner
    assert "hfgd-legend" in legend and "one forward pass" in summary

    high, up, bar, cls, caption = client.predict(img, MODEL, *OPTS, "water",
                                                 api_name="/class_tokens")
    assert size_of(high) == size_of(up) == (192, 192) and "water" in caption

    *pics, stats = client.predict(img, MODEL, *OPTS, api_name="/guidance")
    assert len(pics) == 5 and all(size_of(p) == (192, 192) for p in pics)
    assert "Shared PCA" in stats and "agree" in stats

    marked, grid, rollout, text, x, y = client.predict(img, MODEL, *OPTS, 150, 20,
                                                       api_name="/attention")
    assert (x, y) == (150, 20) and "Query pixel (150, 20)" in text
    assert "(row 0, column 4)" in text
    gw, gh = size_of(grid)
    assert gw > 4 * 100 and gh > 2 * 100  # 2 layers x (4 heads + mean)

    *overlays, caption, table = client.predict(img, *OPTS, 0.5, api_name="/compare")
    assert all(size_of(o) == (192, 192) for o in overlays)
    assert "stop-gradient on" in caption and "drift C2" in table

    info, classes = client.predict("hfgd_scenes_nosg", api_name="/load_model")
    assert "stop-gradient off" in info and "Trained on" in info


def test_attention_on_a_downscaled_image(client, images, tmp_path):
    big = np.asarray(Image.open(images / "scene2.png").resize((600, 400)))
    Image.fromarray(big).save(tmp_path / "wide.png")
    marked, grid, rollout, text, x, y = client.predict(
        handle_file(str(tmp_path / "wide.png")), MODEL, 300, False, 192, False, 599, 399,
        api_name="/attention")
    assert size_of(marked) == (300, 200) and (x, y) == (599, 399)
    assert "(row 6, column 9)" in text  # the bottom-right token of a 7 x 10 grid


def test_checkpoint_paths(client, weights, tmp_path):
    for suffix in (".safetensors", ".json"):
        shutil.copy(weights / f"semantic_fpn_scenes{suffix}", tmp_path / f"user{suffix}")
    info, _ = client.predict(str(tmp_path / "user.json"), api_name="/load_model")
    assert "SemanticFPN" in info
    scene = Image.new("RGB", (96, 64), (40, 120, 200))
    scene.save(tmp_path / "blue.png")
    overlay, _, _, banner, _ = segment(client, tmp_path / "blue.png", model=str(tmp_path / "user"))
    assert size_of(overlay) == (96, 64) and "`user`" in banner
    torch.save({"w": torch.zeros(2)}, tmp_path / "pickle.pt")
    with pytest.raises(ClientAppError, match="no checkpoint card"):
        client.predict(str(tmp_path / "pickle.pt"), api_name="/load_model")


# ---- bad inputs: refused clearly, and the server keeps serving ---------------------------

@pytest.mark.parametrize("name, message", [
    ("notes.png", "not a readable image"),
    ("corrupt.jpg", "corrupt or truncated"),
    ("one_pixel.png", "too small"),
])
def test_bad_files_are_refused(client, images, name, message):
    with pytest.raises(ClientAppError, match=message):
        segment(client, images / name)
    healthy(client, images)


@pytest.mark.parametrize("name, size, note", [
    ("gray.png", (192, 192), None),
    ("rgba.png", (192, 192), "transparency composited on white"),
    ("gray16.png", (192, 192), "16-bit"),
    ("cmyk.jpg", (192, 192), "converted from CMYK"),
    ("exif6.jpg", (192, 128), "EXIF orientation (6)"),  # stored 128 wide, shown upright
])
def test_unusual_images_are_handled(client, images, name, size, note):
    overlay, _, _, banner, _ = segment(client, images / name)
    assert size_of(overlay) == size
    if note:
        assert note in banner


@pytest.mark.slow
def test_huge_images_downscaled_with_bounded_memory(server, client, images, huge):
    png, jpg = huge
    before = server.memory()
    out = segment(client, jpg)
    after_jpg = server.memory()
    assert size_of(out[0]) == (256, 256) and "downscaled from 20000x20000" in out[3]
    out = segment(client, png)
    after_png = server.memory()
    assert size_of(out[0]) == (256, 256) and "downscaled from 20000x20000" in out[3]
    healthy(client, images)
    report = {"rss_before_mb": before["rss"], "peak_before_mb": before["peak"],
              "peak_after_jpeg_mb": after_jpg["peak"], "peak_after_png_mb": after_png["peak"],
              "rss_after_mb": server.memory()["rss"]}
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "app_huge_image_memory.json").write_text(json.dumps(report, indent=1))
    print("server memory (MB):", report)
    # the JPEG decodes at 1/8 scale; the PNG once at full size (1526 MB in PIL's RGBX)
    assert after_jpg["peak"] - before["peak"] < 300, report
    assert after_png["peak"] - before["rss"] < 2200, report
    assert server.memory()["rss"] - before["rss"] < 500, report  # and it is given back


def test_upload_cap(server, client, images, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(np.random.default_rng(0).bytes(11 * 1024 * 1024))
    with open(big, "rb") as f:
        r = httpx.post(server.url + "gradio_api/upload",
                       files={"files": ("big.png", f, "image/png")}, timeout=60)
    assert r.status_code == 413
    with pytest.raises(ValueError, match="maximum file size"):
        segment(client, big)  # the client refuses it too
    healthy(client, images)


def test_no_files_exposed(server, weights):
    repo = Path(__file__).resolve().parents[1]
    for path in [repo / "README.md", repo / "app.py", weights / "hfgd_scenes_sg.json",
                 Path("/etc/passwd")]:
        r = httpx.get(f"{server.url}gradio_api/file={path}")
        assert r.status_code in (403, 404), (path, r.status_code)
    # a path the user did not upload is not read as an input either
    r = httpx.post(server.url + "gradio_api/call/segment", json={"data": [
        {"path": str(repo / "README.md"), "meta": {"_type": "gradio.FileData"}}, MODEL,
        *OPTS, 0.5]})
    eid = r.json()["event_id"]
    events = httpx.get(f"{server.url}gradio_api/call/segment/{eid}", timeout=60).text
    assert "event: error" in events and "README" not in events


def test_eight_concurrent_requests(client, images):
    def one(i):
        c = Client(client.src, verbose=False)
        return segment(c, images / f"scene{i}.png")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    assert len(results) == 8
    for overlay, _, areas, banner, _ in results:
        assert size_of(overlay) == (192, 192) and areas["data"]


def test_server_still_alive(server, client, images):
    assert server.alive()
    healthy(client, images)
