"""The app as a server (child processes, random-weight models): every named endpoint
and every named output through ``gradio_client`` (the README's example included), bad
inputs refused clearly while the server keeps serving, the pixel cap before decoding,
the upload cap, no file exposure, each server's uploads private to it, the model
allow-list over the API, and 8 concurrent requests."""
import io
import json
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from hfgd_lab.app.testing import ServerProcess, huge_png
from hfgd_lab.data.samples import photo_sources, scene_samples
from hfgd_lab.data.scenes import SCENE_CLASSES
from hfgd_lab.engine.zoo import BUNDLED, DEFAULT_MODEL, write_stand_ins

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError as ClientAppError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
OPTS = (256, False, 192, False)   # max_side, sliding, window, flip
MODEL = DEFAULT_MODEL
SLOW = {"timeout": 600}   # the machine is shared: a queued request may wait minutes
ENDPOINTS = {
    "/load_model": (["model"], ["model_card", "classes"]),
    "/segment": (["image", "model", "max_side", "sliding", "window", "flip", "opacity"],
                 ["overlay", "label_map", "classes", "areas", "banner", "summary"]),
    "/class_tokens": (["image", "model", "max_side", "sliding", "window", "flip", "class_name"],
                      ["f_high_similarity", "f_up_similarity", "colorbar", "class_name",
                       "classes", "caption"]),
    "/guidance": (["image", "model", "max_side", "sliding", "window", "flip"],
                  ["pca_f_high", "pca_f_up", "prediction_high", "cosine_agreement",
                   "changed_decisions", "statistics"]),
    "/attention": (["image", "model", "max_side", "sliding", "window", "flip", "x", "y"],
                   ["query_image", "attention_grid", "rollout", "caption", "x", "y"]),
    "/compare": (["image", "max_side", "sliding", "window", "flip", "opacity"],
                 ["overlay_hfgd_sg", "overlay_hfgd_nosg", "overlay_semantic_fpn", "caption",
                  "experiment"]),
    "/imagenet": (["image", "top_k"], ["top_classes", "similarity_maps", "caption"]),
}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_stand_ins(tmp_path_factory.getbasetemp() / "app_weights")


@pytest.fixture(scope="module")
def models_dir(weights, tmp_path_factory):
    """A --models-dir: one good checkpoint, one whose weights are junk."""
    d = tmp_path_factory.mktemp("allowed_models")
    for suffix in (".safetensors", ".json"):
        shutil.copy(weights / f"semantic_fpn_lite0{suffix}", d / f"mine{suffix}")
    shutil.copy(weights / "hfgd_lite0_sg.json", d / "broken.json")
    (d / "broken.safetensors").write_bytes(b"junk")
    return d


def _start(weights, name, tmp_path_factory, args=()):
    log = tmp_path_factory.mktemp(name) / "server.log"
    srv = ServerProcess(weights, args=args, log=log, threads=1)
    srv.wait_ready(timeout=900)
    return srv, log


@pytest.fixture(scope="module")
def server(weights, models_dir, tmp_path_factory):
    srv, log = _start(weights, "server", tmp_path_factory, ["--models-dir", models_dir])
    try:
        yield srv
    finally:
        srv.stop()
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(log, ARTIFACTS / "app_server.log")


@pytest.fixture(scope="module")
def client(server):
    return Client(server.url, verbose=False, httpx_kwargs=SLOW)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Every kind of input, on disk."""
    d = tmp_path_factory.mktemp("inputs")
    scenes = scene_samples(8, size=192, seed=3, split="server-test")
    for i, s in enumerate(scenes):
        Image.fromarray(s.image).save(d / f"scene{i}.png")
    base = scenes[0].image
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
    Image.fromarray(base).resize((600, 400)).save(d / "wide.png")
    return d


def segment(client, path, model=MODEL, opts=OPTS, opacity=0.5):
    return client.predict(handle_file(str(path)), model, *opts, opacity, api_name="/segment")


def size_of(path) -> tuple:
    with Image.open(path) as im:
        return im.size


def healthy(client, images):
    out = segment(client, images / "scene1.png")
    assert size_of(out[0]) == (192, 192)


# ---- the API --------------------------------------------------------------------------

def test_named_endpoints_and_outputs(client):
    api = client.view_api(return_format="dict", print_info=False)
    named = api["named_endpoints"]
    assert set(named) == set(ENDPOINTS)
    for name, (params, returns) in ENDPOINTS.items():
        assert [p["parameter_name"] for p in named[name]["parameters"]] == params, name
        assert [r["label"] for r in named[name]["returns"]] == returns, name
        assert all(re.fullmatch(r"[a-z][a-z0-9_]*", r["label"]) for r in named[name]["returns"])
    params = {p["parameter_name"]: p for p in named["/class_tokens"]["parameters"]}
    kinds = params["class_name"]["python_type"]["type"]
    assert kinds.startswith("Literal[") and "'sky'" in kinds and "''" in kinds
    models = params["model"]["python_type"]["type"]
    assert all(f"'{m}'" in models for m in (MODEL, "mine", "broken"))
    assert not api["unnamed_endpoints"]


def test_safety_settings(server):
    cfg = httpx.get(server.url + "config").json()
    assert cfg["max_file_size"] == 10 * 1024 * 1024
    assert cfg["enable_queue"] and not cfg["show_error"]


def test_segment_returns_the_label_map_and_the_classes(client, images):
    overlay, label_map, classes, areas, banner, summary = client.predict(
        handle_file(str(images / "wide.png")), MODEL, 300, False, 192, False, 0.5,
        api_name="/segment")
    assert size_of(overlay) == (300, 200)
    assert classes == list(SCENE_CLASSES)
    with Image.open(label_map) as im:
        assert im.format == "PNG" and im.mode == "L" and im.size == (600, 400)
        labels = np.asarray(im)
    present = {row[0] for row in areas["data"]}
    assert {classes[k] for k in np.unique(labels)} <= present
    assert areas["headers"][:3] == ["class", "area %", "mean confidence %"]
    assert abs(sum(r[1] for r in areas["data"]) - 100) < 0.5
    assert f"`{MODEL}`" in banner and "analysed at 300×200" in banner
    assert "one forward pass" in summary


def test_every_other_endpoint(client, images):
    img = handle_file(str(images / "scene0.png"))
    high, up, bar, name, classes, caption = client.predict(img, MODEL, *OPTS, "water",
                                                           api_name="/class_tokens")
    assert size_of(high) == size_of(up) == (192, 192) and name == "water"
    assert classes == list(SCENE_CLASSES) and "water" in caption and size_of(bar)[0] == 256
    _, _, _, name, _, _ = client.predict(img, MODEL, *OPTS, "", api_name="/class_tokens")
    assert name in SCENE_CLASSES  # "": the largest predicted class

    *pics, stats = client.predict(img, MODEL, *OPTS, api_name="/guidance")
    assert len(pics) == 5 and all(size_of(p) == (192, 192) for p in pics)
    assert "Shared PCA" in stats and "agree" in stats

    marked, grid, rollout, text, x, y = client.predict(img, MODEL, *OPTS, 150, 20,
                                                       api_name="/attention")
    assert (x, y) == (150, 20) and "Query pixel (150, 20)" in text
    assert "(row 0, column 4)" in text and size_of(marked) == (192, 192)
    gw, gh = size_of(grid)
    assert gw > 5 * 150 and gh > 2 * 150  # 2 layers x (4 heads + mean), titled

    *overlays, caption, experiment = client.predict(img, *OPTS, 0.5, api_name="/compare")
    assert all(size_of(o) == (192, 192) for o in overlays)
    assert "one bundled model" in caption and "mean over seeds" in experiment

    info, classes = client.predict(MODEL, api_name="/load_model")
    said = {"hfgd_sg": "stop-gradient on", "hfgd_nosg": "stop-gradient off",
            "semantic_fpn": "SemanticFPN"}[BUNDLED[MODEL]]
    assert said in info and classes == list(SCENE_CLASSES)


def test_imagenet_endpoint_on_a_real_photo(client):
    chelsea = next(p for p in photo_sources() if p.name == "chelsea")
    top, maps, caption = client.predict(handle_file(str(chelsea.path)), 3,
                                        api_name="/imagenet")
    assert [t["class"] for t in top][0] in ("Egyptian cat", "tiger cat", "tabby")
    assert len(top) == 3 and top[0]["probability"] >= top[1]["probability"]
    assert size_of(maps)[0] > 3 * 200 and "Before any fine-tuning" in caption


def test_the_allow_list_over_the_api(client, models_dir, weights):
    info, _ = client.predict("mine", api_name="/load_model")
    assert "SemanticFPN" in info
    scene = _scene_file(models_dir)
    overlay, *_ = segment(client, scene, model="mine")
    assert size_of(overlay) == size_of(scene)
    with pytest.raises(ClientAppError) as e:
        client.predict("broken", api_name="/load_model")
    message = str(e.value)
    assert "cannot load model" in message and str(models_dir) not in message
    # paths are off by default: a real checkpoint path and a system file are refused alike
    answers = []
    for spec in [str(weights / "hfgd_lite0_nosg"), "/etc/passwd"]:
        r = httpx.post(client.src.rstrip("/") + "/gradio_api/call/load_model",
                       json={"data": [spec]}).json()
        events = httpx.get(client.src.rstrip("/") + f"/gradio_api/call/load_model/"
                           f"{r['event_id']}", timeout=60).text
        assert "event: error" in events and "hfgd_lite0_nosg." not in events
        answers.append(events.replace(spec, "SPEC"))
    assert answers[0] == answers[1]


def _scene_file(folder) -> Path:
    path = Path(folder).parent / "allowlist_scene.png"
    if not path.is_file():
        Image.fromarray(scene_samples(1, size=96, seed=5)[0].image).save(path)
    return path


def test_readme_api_example_runs(server):
    """The README's gradio_client example, run as printed (its URL pointed here)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## The app's API", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    assert "Client(" in code and "/segment" in code and "label_map" in code
    scope = {}
    exec(compile(code.replace("http://127.0.0.1:7860/", server.url), "README", "exec"), scope)
    assert scope["classes"] == list(SCENE_CLASSES)
    with Image.open(scope["label_map"]) as im:
        assert im.mode == "L"


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


def test_bad_values_are_refused(client, images):
    img = handle_file(str(images / "scene0.png"))
    with pytest.raises(ClientAppError, match=r"outside the 192×192 image: x must be 0..191"):
        client.predict(img, MODEL, *OPTS, 500, 20, api_name="/attention")
    # the slider's range, checked by Gradio before the handler runs
    with pytest.raises(ClientAppError, match="5000 is greater than maximum value 2048"):
        client.predict(img, MODEL, 5000, False, 192, False, 0.5, api_name="/segment")
    healthy(client, images)


@pytest.mark.parametrize("name, size, note", [
    ("gray.png", (192, 192), None),
    ("rgba.png", (192, 192), "transparency composited on white"),
    ("gray16.png", (192, 192), "16-bit"),
    ("cmyk.jpg", (192, 192), "converted from CMYK"),
    ("exif6.jpg", (192, 128), "EXIF orientation (6)"),  # stored 128 wide, shown upright
])
def test_unusual_images_are_handled(client, images, name, size, note):
    overlay, _, _, _, banner, _ = segment(client, images / name)
    assert size_of(overlay) == size
    if note:
        assert note in banner


def test_a_decompression_bomb_is_refused_before_decoding(server, client, images,
                                                         tmp_path_factory):
    """A 1.2 MB PNG of 20000 x 20000 pixels passes the 10 MB upload cap; its header says
    400 MP, above the app's 40 MP cap, so it is refused before any pixel is decoded
    (decoding it would take ~1.5 GB)."""
    png = huge_png(tmp_path_factory.mktemp("huge") / "solid_20000.png")
    before = server.memory()
    with pytest.raises(ClientAppError, match=r"20000x20000 pixels is more than this tool "
                                             r"decodes \(40 MP\)"):
        segment(client, png)
    after = server.memory()
    report = {"peak_before_mb": before["peak"], "peak_after_mb": after["peak"],
              "rss_after_mb": after["rss"], "file_mb": png.stat().st_size / 2 ** 20}
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "app_huge_image_memory.json").write_text(json.dumps(report, indent=1))
    assert after["peak"] - before["peak"] < 100, report
    healthy(client, images)


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
    for path in [ROOT / "README.md", ROOT / "app.py", weights / f"{MODEL}.json",
                 Path("/etc/passwd")]:
        r = httpx.get(f"{server.url}gradio_api/file={path}")
        assert r.status_code in (403, 404), (path, r.status_code)
    # a path the user did not upload is not read as an input either
    r = httpx.post(server.url + "gradio_api/call/segment", json={"data": [
        {"path": str(ROOT / "README.md"), "meta": {"_type": "gradio.FileData"}}, MODEL,
        *OPTS, 0.5]})
    eid = r.json()["event_id"]
    events = httpx.get(f"{server.url}gradio_api/call/segment/{eid}", timeout=60).text
    assert "event: error" in events and "README" not in events


def test_uploads_are_private_to_each_server(server, weights, tmp_path_factory, images):
    """Gradio's default upload folder is shared by every Gradio app on the machine, and
    each serves the others' uploads; here each server has its own."""
    other, _ = _start(weights, "other_server", tmp_path_factory, ["--no-warmup"])
    try:
        mine = server.private_folder()
        theirs = other.private_folder()
        assert mine != theirs and mine.stat().st_mode & 0o777 == 0o700
        data = (images / "scene2.png").read_bytes()
        up = httpx.post(other.url + "gradio_api/upload", files={"files": ("s.png", data)},
                        timeout=60)
        path = up.json()[0]
        assert Path(path).is_relative_to(theirs), path
        assert httpx.get(f"{other.url}gradio_api/file={path}").status_code == 200
        assert httpx.get(f"{server.url}gradio_api/file={path}").status_code == 403
        up = httpx.post(server.url + "gradio_api/upload", files={"files": ("s.png", data)},
                        timeout=60)
        assert httpx.get(f"{other.url}gradio_api/file={up.json()[0]}").status_code == 403
    finally:
        other.stop()
    assert not theirs.exists()  # removed when its server stopped


def test_eight_concurrent_requests(client, images):
    def one(i):
        c = Client(client.src, verbose=False, httpx_kwargs=SLOW)
        return segment(c, images / f"scene{i}.png")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    assert len(results) == 8
    for overlay, label_map, _, areas, _, _ in results:
        assert size_of(overlay) == size_of(label_map) == (192, 192) and areas["data"]


def test_server_still_alive(server, client, images):
    assert server.alive()
    healthy(client, images)
