"""ONNX export, the onnx runtime and INT8: one file for every size and batch, the same colours
as PyTorch, a clear error without the optional packages."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

from retint.cli import main  # noqa: E402
from retint.inference import Colorizer  # noqa: E402
from retint.io import read_rgb, write_image  # noqa: E402
from retint.models import build_model, load_weights, save_weights  # noqa: E402
from retint.runtime import (  # noqa: E402
    CARD_KEY,
    INPUT,
    LICENCE_KEY,
    OPSET,
    OUTPUT,
    QUANTIZATION_KEY,
    export_onnx,
)

MODELS = {  # name -> (arch, backbone)
    "teacher": ("teacher", None),
    "student": ("student", None),
    "teacher-lite0": ("teacher", "efficientnet-lite0"),
}


def _rgb(name: str) -> np.ndarray:
    return np.ascontiguousarray(getattr(skimage.data, name)()[:, :, :3])


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    out = {}
    for name, (arch, backbone) in MODELS.items():
        torch.manual_seed(0)
        model = build_model(arch, 0.25, backbone=backbone).eval()
        out[name] = save_weights(model, root / name, {"name": f"tiny-{name}"})
    return out


@pytest.fixture(scope="module")
def exported(weights, tmp_path_factory) -> dict[str, Path]:
    out = {}
    for name, path in weights.items():
        model, card = load_weights(path)
        folder = tmp_path_factory.mktemp(f"onnx-{name}")
        out[name] = export_onnx(model, card, folder / f"{name}.onnx")
        assert [p.name for p in folder.iterdir()] == [f"{name}.onnx"]  # one file, no data
    return out


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("RETINT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "onnx"


@pytest.mark.parametrize("name", list(MODELS))
def test_one_file_gives_pytorchs_ab_at_every_size_and_batch(name, weights, exported):
    model, _ = load_weights(weights[name])
    session = ort.InferenceSession(exported[name].read_bytes(),  # stands alone: only its bytes
                                   providers=["CPUExecutionProvider"])
    torch.manual_seed(1)
    for shape in [(1, 1, 64, 64), (2, 1, 96, 160), (1, 1, 208, 144)]:
        l = torch.rand(shape)
        with torch.no_grad():
            want = model(l).numpy()
        got = session.run([OUTPUT], {INPUT: l.numpy()})[0]
        assert got.shape == (shape[0], 2, *shape[2:])
        np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)


def test_graph_io_opset_and_metadata(exported):
    import onnx

    proto = onnx.load(str(exported["teacher-lite0"]))
    assert {o.domain: o.version for o in proto.opset_import}[""] == OPSET
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert inp.name == INPUT and out.name == OUTPUT
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 1, "16*h16", "16*w16"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta[CARD_KEY])["name"] == "tiny-teacher-lite0"
    assert "Apache License" in meta[LICENCE_KEY]
    assert LICENCE_KEY not in {p.key for p in onnx.load(str(exported["student"])).metadata_props}


def test_the_frozen_encoder_is_inside_the_graph(weights, exported):
    import onnx

    model, _ = load_weights(weights["teacher-lite0"])
    encoder = sum(p.numel() for name, p in model.pretrained.net.named_parameters()
                  if not name.startswith("_fc."))  # the classifier is not used
    ours = sum(p.numel() for p in model.parameters())  # the encoder is not among them
    proto = onnx.load(str(exported["teacher-lite0"]))
    stored = sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
    assert stored > ours + 0.9 * encoder  # BatchNorm folding removes a few


def _colorize(photo: Path, out: Path, *args: str) -> np.ndarray:
    assert main(["colorize", str(photo), "-o", str(out), "-q", "--overwrite", *args]) == 0
    return read_rgb(out).astype(int)


def test_cli_runtime_onnx_gives_torchs_pixels(weights, exported, cache, tmp_path):
    photo = tmp_path / "chelsea.png"
    write_image(photo, _rgb("chelsea"))
    model = str(weights["teacher-lite0"])
    torch_rgb = _colorize(photo, tmp_path / "torch.png", "--model", model)
    onnx_rgb = _colorize(photo, tmp_path / "onnx.png", "--model", model, "--runtime", "onnx")
    assert np.abs(onnx_rgb - torch_rgb).max() <= 1
    (cached,) = cache.iterdir()  # exported once, keyed by the weights
    stamp = cached.stat().st_mtime_ns
    again = _colorize(photo, tmp_path / "again.png", "--model", model, "--runtime", "onnx")
    assert np.array_equal(again, onnx_rgb) and cached.stat().st_mtime_ns == stamp
    file_rgb = _colorize(photo, tmp_path / "file.png", "--model",
                         str(exported["teacher-lite0"]), "--runtime", "onnx")
    assert np.array_equal(file_rgb, onnx_rgb)


def test_colorizer_onnx_api(weights, exported, cache):
    c = Colorizer(exported["student"], runtime="onnx", working_size=64, batch_size=2)
    assert c.name == "tiny-student" and c.model.providers == ["CPUExecutionProvider"]
    out = c.colorize_many([_rgb("coffee"), _rgb("astronaut"), _rgb("chelsea")])
    assert [o.shape for o in out] == [(400, 600, 3), (512, 512, 3), (300, 451, 3)]
    with pytest.raises(ValueError, match="CPU"):
        Colorizer(weights["student"], device="cuda", runtime="onnx")
    with pytest.raises(ValueError, match="--runtime onnx"):
        Colorizer(exported["student"])
    with pytest.raises(ValueError, match="unknown runtime"):
        Colorizer(weights["student"], runtime="tensorrt")


def test_missing_onnxruntime_is_one_line_saying_what_to_install(weights, cache, tmp_path,
                                                                 monkeypatch, capsys):
    photo = tmp_path / "coffee.png"
    write_image(photo, _rgb("coffee"))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert main(["colorize", str(photo), "-o", str(tmp_path / "out.png"), "--model",
                 str(weights["student"]), "--runtime", "onnx"]) == 2
    assert main(["export", str(weights["student"]), "-o", str(tmp_path / "s.onnx")]) == 2
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    assert main(["export", str(weights["student"]), "-o", str(tmp_path / "s.onnx"),
                 "--no-verify"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all("pip install 'retint[onnx]'" in line for line in err), err
    assert "onnxruntime" in err[0] and "onnxscript" in err[2]
    assert not list(tmp_path.glob("*.onnx")) and not (tmp_path / "out.png").exists()


def test_export_cli_verifies_and_writes_atomically(weights, tmp_path, capsys):
    dst = tmp_path / "out" / "student.onnx"
    assert main(["export", str(weights["student"]), "-o", str(dst)]) == 0
    out = capsys.readouterr().out
    assert "256x256 (batch 3): max" in out and "208x320 (batch 3): max" in out
    assert [p.name for p in dst.parent.iterdir()] == ["student.onnx"]  # no temp file left
    assert main(["export", str(weights["student"]), "-o", str(tmp_path / "x.pt")]) == 2


def _calibration_folder(root: Path) -> Path:
    folder = root / "train"
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        write_image(folder / f"{name}.jpg", _rgb(name))
    write_image(folder / "held.jpg", _rgb("coffee")[::2, ::2])
    return folder


def test_int8_export_is_close_to_fp32(tmp_path, capsys):
    import onnx

    torch.manual_seed(0)
    model = build_model("student", 0.25).eval()
    card = {"name": "tiny-student", "data": {"val_photos_list": ["train/held.jpg"]}}
    weights = save_weights(model, tmp_path / "student", card)
    folder = _calibration_folder(tmp_path)
    dst = tmp_path / "student-int8.onnx"
    assert main(["export", str(weights), "-o", str(dst), "--int8", "--calibration",
                 str(folder), "--calibration-count", "8", "--calibration-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "calibrating on 4 photo(s)" in out and "1 held-out photo(s)" in out
    assert "int8" in out and "x)" in out  # the timing line, with the speed-up
    proto = onnx.load(str(dst))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    meta = {p.key: p.value for p in proto.metadata_props}
    quant = json.loads(meta[QUANTIZATION_KEY])
    assert quant["format"] == "QDQ" and quant["calibration_photos"] == 4
    assert json.loads(meta[CARD_KEY])["name"] == "tiny-student"
    session = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    from retint.export import photo_batch

    for shape in [(256, 256), (96, 160)]:
        l = photo_batch(shape)
        with torch.no_grad():
            want = model(torch.from_numpy(l)).numpy()
        diff = np.abs(session.run([OUTPUT], {INPUT: l})[0] - want)
        assert diff.mean() < 0.02 and diff.max() < 0.2, (diff.mean(), diff.max())
    c = Colorizer(dst, runtime="onnx", working_size=64)
    assert c.name == "tiny-student int8" and c.card[QUANTIZATION_KEY]["format"] == "QDQ"


def test_int8_needs_a_calibration_folder(weights, tmp_path):
    assert main(["export", str(weights["student"]), "-o", str(tmp_path / "q.onnx"),
                 "--int8"]) == 2
    assert main(["export", str(weights["student"]), "-o", str(tmp_path / "q.onnx"), "--int8",
                 "--calibration", str(tmp_path / "missing")]) == 2
