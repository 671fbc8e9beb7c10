"""ONNX export (hfgd_lab.engine.export, ``hfgd-lab export``, ``hfgd-lab bench --onnx``): the
exported graph run by onnxruntime matches PyTorch on odd and tiny sizes and batches, for two
backbones (the bundled Lite0 architecture through the README's commands, a ConvNeXt at
output stride 2 with the cosine classifier through the API), with its metadata; the CLI's
output checks; the README's "Deploy with ONNX" commands run as printed.

Exports take tens of seconds of CPU each (symbolic shape tracing), so each model is
exported once per module."""
import contextlib
import io
import json
import re
import shlex
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from hfgd_lab import HFGDConfig, build_model
from hfgd_lab.cli import main
from hfgd_lab.commands.export import check_out
from hfgd_lab.data.scenes import SCENE_CLASSES, SCENE_PALETTE
from hfgd_lab.engine import export as export_module
from hfgd_lab.engine import zoo
from hfgd_lab.engine.checkpoint import save_checkpoint
from hfgd_lab.engine.export import (FORMAT, ExportError, OnnxSegmenter, compare_onnx,
                                    export_onnx, is_hfgd_onnx, read_onnx_metadata)
from hfgd_lab.engine.loaded import from_pretrained

ROOT = Path(__file__).resolve().parents[1]
# (batch, (H, W)): odd, tiny (a 1x1 image is one padded 32x32 cell), wide, and batches
SIZES = [(1, (97, 131)), (1, (1, 1)), (1, (17, 23)), (3, (64, 64)), (2, (31, 200)),
         (1, (240, 160))]
# float32 logits of the same graph, summed in another order: observed up to 1.2e-5
# (ConvNeXt OS2 cosine at 97x131, logits up to ~4 in size, i.e. ~3e-6 relative); a
# wrong graph is off by 1e-2 and more
MAX_ABS = 5e-5


def _section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    """The README's "Deploy with ONNX" section run as printed, in a fresh folder, with
    random-weight stand-ins of the bundled models (the real architecture: Lite0, K=10)."""
    tmp = tmp_path_factory.mktemp("onnx_readme")
    weights = zoo.write_stand_ins(tmp / "weights", names=(zoo.DEFAULT_MODEL,))
    section = _section("Deploy with ONNX")
    bash = re.findall(r"```bash\n(.*?)```", section, re.S)
    python = re.findall(r"```python\n(.*?)```", section, re.S)
    commands = [line.split("#")[0].strip() for block in bash for line in block.splitlines()
                if line.strip().startswith("hfgd-lab ")]
    printed, namespaces = [], []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(zoo, "WEIGHTS_DIR", weights)
        mp.chdir(tmp)
        for cmd in commands:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                code = main(shlex.split(cmd)[1:])
            assert code == 0, cmd
            printed.append(out.getvalue())
        for block in python:
            ns = {}
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(block, "README.md", "exec"), ns)
            namespaces.append(ns)
        loaded = from_pretrained(zoo.DEFAULT_MODEL)
    onnx_file = tmp / re.search(r"hfgd-lab export \S+ --onnx (\S+)", section).group(1)
    return dict(commands=commands, printed=printed, namespaces=namespaces, loaded=loaded,
                onnx=onnx_file, folder=tmp, section=section)


@pytest.fixture(scope="module")
def convnext(tmp_path_factory):
    """A ConvNeXt HFGD at output stride 2 (the image stem path) with the cosine classifier
    (no folded projection), exported through the API without the labels output."""
    tmp = tmp_path_factory.mktemp("onnx_convnext")
    torch.manual_seed(3)
    model = build_model(HFGDConfig(
        backbone="convnext_atto", backbone_kwargs=dict(depths=(1, 1, 1, 1),
                                                       dims=(16, 32, 64, 128)),
        num_classes=7, embed_dim=64, cae_heads=4, cae_depth=2, decoder_channels=32,
        output_stride=2, classifier="cosine", dropout=0.0)).eval()
    names = [f"class {i}" for i in range(7)]
    save_checkpoint(tmp / "cnx", model, classes=names, palette=np.arange(21).reshape(7, 3))
    loaded = from_pretrained(tmp / "cnx")
    report = export_onnx(loaded, tmp / "cnx.onnx")
    return dict(loaded=loaded, report=report, onnx=tmp / "cnx.onnx")


def _check_parity(model, path):
    for batch, size in SIZES:
        (row,) = compare_onnx(model, path, [size], batch=batch, seed=batch)
        assert row["max_abs_diff"] <= MAX_ABS, (batch, size, row)
        # labels may differ only where PyTorch's top two logits are within 2 * max |diff|
        # (random weights make such near ties: 1 pixel in 38,400 seen at 240x160)
        assert row["clear_mismatches"] == 0, (batch, size, row)
        assert row["label_agreement"] >= 1.0 - row["near_ties"], (batch, size, row)


def test_lite0_graph_matches_pytorch_at_odd_tiny_and_batched_sizes(readme_run):
    _check_parity(readme_run["loaded"].model, readme_run["onnx"])


def test_convnext_os2_cosine_graph_matches_pytorch(convnext):
    assert [c["size"] for c in convnext["report"].checks] == [[97, 131], [64, 64], [33, 75]]
    assert all(c["max_abs_diff"] <= MAX_ABS for c in convnext["report"].checks)
    _check_parity(convnext["loaded"].model, convnext["onnx"])


def test_labels_output_is_the_argmax_at_the_input_size(readme_run):
    seg = OnnxSegmenter(readme_run["onnx"])
    x = torch.randn(2, 3, 45, 77, generator=torch.Generator().manual_seed(5))
    out = seg.run(x.numpy())
    assert sorted(out) == ["labels", "logits"]
    assert out["logits"].shape == (2, 10, 45, 77) and out["logits"].dtype == np.float32
    assert out["labels"].shape == (2, 45, 77) and out["labels"].dtype == np.int64
    with torch.no_grad():
        ref = readme_run["loaded"].model.predict(x)
    assert np.array_equal(out["labels"], ref.argmax(1).numpy())


def test_graph_dims_and_opset(readme_run, convnext):
    proto = onnx.load(str(readme_run["onnx"]))
    onnx.checker.check_model(proto)

    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
    assert [(v.name, dims(v)) for v in proto.graph.input] == [
        ("image", ["batch", 3, "height", "width"])]
    assert [(v.name, dims(v)) for v in proto.graph.output] == [
        ("logits", ["batch", 10, "height", "width"]), ("labels", ["batch", "height", "width"])]
    assert {o.domain: o.version for o in proto.opset_import}[""] == 18
    assert [v.name for v in onnx.load(str(convnext["onnx"])).graph.output] == ["logits"]


def test_metadata_carries_classes_palette_normalisation_and_card(readme_run, convnext):
    meta = read_onnx_metadata(readme_run["onnx"])
    loaded = readme_run["loaded"]
    assert meta["format"] == FORMAT and meta["source"] == zoo.DEFAULT_MODEL
    assert meta["classes"] == list(SCENE_CLASSES)
    assert meta["palette"] == np.asarray(SCENE_PALETTE).tolist()
    assert meta["mean"] == meta["std"] == [0.5, 0.5, 0.5]        # Lite0's tf_ normalisation
    assert (meta["mean"], meta["std"]) == tuple(loaded.normalization)
    assert meta["output_stride"] == 4 and meta["num_classes"] == 10
    assert meta["backbone"] == "tf_efficientnet_lite0"
    assert meta["card"]["config"] == loaded.card["config"] and meta["card"]["stand_in"]
    assert "train_state" not in meta["card"]
    other = read_onnx_metadata(convnext["onnx"])
    assert other["classes"] == [f"class {i}" for i in range(7)]
    assert other["palette"] == np.arange(21).reshape(7, 3).tolist()
    assert other["mean"] == [0.485, 0.456, 0.406] and other["output_stride"] == 2


def test_onnx_segmenter_on_a_real_photo_equals_pytorch_segment(readme_run):
    """From uint8 pixels through the file's own mean/std to labels: the same labels as
    LoadedModel.segment (the project's one preprocessing)."""
    from skimage import data as skdata
    photo = skdata.coffee()[::4, ::4]                             # 100 x 150, real photo
    seg = OnnxSegmenter(readme_run["onnx"])
    labels, _ = readme_run["loaded"].segment(photo)
    assert np.array_equal(seg.segment(photo), labels)


def test_readme_section_commands_and_snippet(readme_run):
    assert readme_run["commands"][0].startswith("hfgd-lab export ")
    assert any(c.startswith("hfgd-lab bench --onnx") for c in readme_run["commands"])
    export_out = readme_run["printed"][0]
    assert "onnxruntime vs PyTorch at 97x131: max abs logit difference" in export_out
    assert "labels agree on 100.00% of pixels" in export_out
    # the snippet, plain onnxruntime and the metadata: the labels PyTorch gives
    ns = next(ns for ns in readme_run["namespaces"] if "session" in ns)
    labels, _ = readme_run["loaded"].segment(ns["image"])
    assert np.array_equal(ns["labels"][0], labels)
    assert ns["classes"] == list(SCENE_CLASSES)


def test_bench_onnx_times_both_runtimes_in_one_run(readme_run):
    i = next(i for i, c in enumerate(readme_run["commands"]) if c.startswith("hfgd-lab bench"))
    printed = readme_run["printed"][i]
    assert "PyTorch vs ONNX Runtime (CPU)" in printed and "ONNX/PyTorch" in printed
    json_out = re.search(r"--json (\S+)", readme_run["commands"][i])
    results = json.loads((readme_run["folder"] / json_out.group(1)).read_text())
    assert results["mode"] == "onnx" and results["environment"]["onnxruntime"]
    (row,) = results["models"].values()
    assert row["max_abs_diff"] <= 1e-4 and row["label_agreement"] >= 0.999
    for clock in ("wall", "cpu"):
        t = row[clock]
        assert t["torch"]["median_ms"] > 0 and t["onnxruntime"]["median_ms"] > 0
        assert t["ratio"] == pytest.approx(t["onnxruntime"]["median_ms"]
                                           / t["torch"]["median_ms"])


# ---- output checks and failures (no export needed) ------------------------------------

def test_cli_refuses_a_foreign_file_and_bad_options(tmp_path, capsys, readme_run):
    ckpt = str(readme_run["folder"] / "weights" / zoo.DEFAULT_MODEL)
    foreign = tmp_path / "model.onnx"
    foreign.write_bytes(b"not mine")
    assert main(["export", ckpt, "--onnx", str(foreign)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists and was not written by hfgd-lab" in err
    assert foreign.read_bytes() == b"not mine"
    assert main(["export", ckpt, "--onnx", str(tmp_path / "model.txt")]) == 2
    assert "expected a file name ending in .onnx" in capsys.readouterr().err
    assert main(["export", ckpt, "--onnx", str(tmp_path / "a.onnx"), "--opset", "17"]) == 2
    assert "--opset" in capsys.readouterr().err
    # its own earlier file may be replaced; a foreign one only with --overwrite
    assert is_hfgd_onnx(readme_run["onnx"]) and not is_hfgd_onnx(foreign)
    check_out(readme_run["onnx"], overwrite=False)
    check_out(foreign, overwrite=True)


def test_failed_export_or_check_writes_nothing(tmp_path, monkeypatch, readme_run):
    loaded = readme_run["loaded"]
    target = tmp_path / "m.onnx"

    def broken(*a, **k):
        raise RuntimeError("unsupported operator aten::mystery")
    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(ExportError, match=f"cannot export '{zoo.DEFAULT_MODEL}'.*aten::mystery"):
        export_onnx(loaded, target)
    assert not target.exists()

    # a graph that does not match PyTorch is not written, an existing file stays
    proto = onnx.load(str(readme_run["onnx"]))
    monkeypatch.setattr(torch.onnx, "export",
                        lambda *a, **k: type("P", (), {"model_proto": proto})())
    monkeypatch.setattr(export_module, "compare_onnx", lambda *a, **k: [
        {"size": [97, 131], "max_abs_diff": 0.5, "label_agreement": 0.9,
         "near_ties": 0.0, "clear_mismatches": 3}])
    target.write_bytes(b"earlier")
    with pytest.raises(ExportError, match="does not match PyTorch: max abs logit difference "
                                          "0.5 at \\[97, 131\\]"):
        export_onnx(loaded, target)
    assert target.read_bytes() == b"earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]      # no temp file left
    with pytest.raises(ValueError, match="opset 17"):
        export_onnx(loaded, target, opset=17)


def test_static_same_padding_equals_timm_on_multiples_of_32_and_is_undone():
    from timm.layers import Conv2dSame

    from hfgd_lab.engine.export import static_same_padding
    from hfgd_lab.models.backbone import Backbone
    bb = Backbone("tf_efficientnet_lite0").eval()
    convs = [m for m in bb.modules() if isinstance(m, Conv2dSame)]
    assert len(convs) == 5                                  # its five stride-2 layers
    x = torch.randn(1, 3, 96, 160)
    with torch.no_grad():
        ref = bb(x)
        with static_same_padding(bb) as n:
            assert n == 5 and all("forward" in vars(m) for m in convs)
            got = bb(x)
    assert all(torch.equal(a, b) for a, b in zip(ref, got))
    assert not any("forward" in vars(m) or "_export_pad" in vars(m) for m in convs)


def test_read_metadata_of_a_foreign_onnx_file(tmp_path):
    from onnx import TensorProto, helper
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                          [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(tmp_path / "other.onnx"))
    with pytest.raises(ExportError, match="without hfgd-lab metadata"):
        read_onnx_metadata(tmp_path / "other.onnx")
    with pytest.raises(ExportError, match="not a readable ONNX model"):
        read_onnx_metadata(tmp_path / "missing.onnx")


def test_compare_onnx_tells_near_ties_from_wrong_labels(monkeypatch):
    """A label flip where PyTorch's top two logits are within 2 * max |diff| is a near
    tie (allowed); any other flip (here: a labels output that is not the argmax) is a
    clear mismatch (a wrong graph)."""
    ref = torch.zeros(1, 3, 1, 3)
    ref[0, :, 0, 0] = torch.tensor([1.0, 1.0 + 1e-7, 0.0])   # near tie: class 1 by 1e-7
    ref[0, :, 0, 1] = torch.tensor([2.0, 0.0, 0.0])          # clearly class 0
    ref[0, :, 0, 2] = torch.tensor([0.0, 0.0, 3.0])          # clearly class 2

    class Fixed(torch.nn.Module):
        def predict(self, x):
            return ref.clone()
    got = ref.numpy().copy()
    got[0, 0, 0, 0] += 2e-7                                  # flips the near tie to 0
    monkeypatch.setattr(export_module, "_session", lambda path: None)
    monkeypatch.setattr(export_module, "_run", lambda s, x: {"logits": got})
    (row,) = compare_onnx(Fixed(), "x.onnx", [(1, 3)])
    assert row["clear_mismatches"] == 0 and row["near_ties"] == pytest.approx(1 / 3)
    assert row["label_agreement"] == pytest.approx(2 / 3)
    # a labels output that is not the argmax (pixel 2 says class 1): a clear mismatch
    monkeypatch.setattr(export_module, "_run", lambda s, x: {
        "logits": got, "labels": np.array([[[0, 0, 1]]])})
    (row,) = compare_onnx(Fixed(), "x.onnx", [(1, 3)])
    assert row["clear_mismatches"] == 1 and row["label_agreement"] == pytest.approx(1 / 3)
