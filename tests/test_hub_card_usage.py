"""The usage code a model folder's README.md gives runs as printed and reads the photo
with the one reader (EXIF orientation applied), so its labels fit the upright photo."""
import io
import os
import re

import numpy as np
import torch
from PIL import Image

import hfgd_lab
from hfgd_lab import HFGDConfig, build_model

from test_engine import TINY_MODEL  # noqa: F401  (tests/ is on sys.path under pytest)


def test_readme_usage_runs_and_reads_photos_upright(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = build_model(HFGDConfig(**{**TINY_MODEL, "num_classes": 3})).eval()
    folder = hfgd_lab.save_pretrained(model, tmp_path / "m", classes=["a", "b", "c"])
    readme = (folder / "README.md").read_text()
    code = re.search(r"## Usage\n\n```python\n(.*?)```", readme, re.S).group(1)
    assert "Image.open" not in code and "read_image" in code
    # a 40 x 64 photo stored sideways (EXIF orientation 6): upright it is 64 high, 40 wide
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 64, 3), np.uint8)).save(
        buf, "JPEG", exif=exif)
    (tmp_path / "photo.jpg").write_bytes(buf.getvalue())
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(code, scope)
    assert scope["labels"].shape == (64, 40) and scope["confidence"].shape == (64, 40)
    assert os.path.isfile(tmp_path / "photo.jpg")
