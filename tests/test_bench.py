"""Tests for ``retint bench``: exact MAC counts, the original pipeline's quantization, and the
command end to end at tiny settings (``--quick``), including its JSON and ``--compare``."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from retint.bench import add_command, count_macs, seed_quantize
from retint.models import build_model


def bench(*argv: str) -> tuple[int, str]:
    """Run ``retint bench ARGV`` through our own parser; (exit code, stdout)."""
    parser = argparse.ArgumentParser()
    add_command(parser.add_subparsers())
    args = parser.parse_args(["bench", *argv])
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        rc = args.func(args)
    return rc, out.getvalue()


def test_macs_of_single_layers() -> None:
    # conv: output elements x in/groups x kernel area; 7x7 kept by padding 1
    assert count_macs(nn.Conv2d(4, 6, 3, padding=1, groups=2), (2, 4, 7, 7)) == 7 * 7 * 6 * 2 * 9
    # stride 2: 10x10 -> 5x5
    assert count_macs(nn.Conv2d(3, 8, 3, stride=2, padding=1), (1, 3, 10, 10)) == 5 * 5 * 8 * 3 * 9
    # transposed conv: input elements x out channels x kernel area
    convt = nn.ConvTranspose2d(4, 6, 4, stride=2, padding=1)
    assert count_macs(convt, (3, 4, 5, 5)) == 5 * 5 * 4 * 6 * 16
    assert count_macs(nn.Linear(10, 7), (3, 10)) == 10 * 7  # per sample


def test_teacher_macs_match_the_architecture_by_hand() -> None:
    def conv(cin: int, cout: int, out_side: int) -> int:  # kernel 4
        return out_side**2 * cout * cin * 16

    def convt(cin: int, cout: int, in_side: int) -> int:  # kernel 4, stride 2
        return in_side**2 * cin * cout * 16

    def se(c: int) -> int:  # Linear c -> c/16 -> c
        return 2 * c * (c // 16)

    expected = (
        conv(1, 32, 128) + conv(32, 64, 64) + conv(64, 128, 32) + conv(128, 256, 16)
        + conv(256, 512, 16) + conv(512, 256, 16)  # dilated bottleneck, stride 1
        + convt(256 + 256, 128, 16) + convt(128 + 128, 64, 32) + convt(64 + 64, 32, 64)
        + convt(32 + 32, 2, 128)
        + 256 * 256 * 2 * (2 + 1) * 9  # head: 3x3 conv on ab + L
        + sum(se(c) for c in (32, 64, 128, 256, 512, 256, 128, 64, 32))
    )
    assert count_macs(build_model("teacher"), (1, 1, 256, 256)) == expected


def test_seed_quantization_really_quantizes() -> None:
    rng = np.random.default_rng(0)
    l = rng.uniform(-0.2, 1.2, (64, 64))
    ab = rng.uniform(-1.2, 1.2, (64, 64, 2))
    lab = seed_quantize(l, ab)
    assert lab.dtype == np.float64 and lab.shape == (64, 64, 3)
    assert len(np.unique(lab[..., 0])) <= 101
    assert set(np.unique(lab[..., 0])) <= set(range(101))
    assert np.array_equal(lab, np.round(lab))  # every channel whole numbers
    assert lab[..., 1:].min() >= -128 and lab[..., 1:].max() <= 127
    # a comes from a and b from b (the seed's a-from-L bug is not kept)
    np.testing.assert_array_equal(lab[..., 1], np.clip(ab[..., 0] * 128, -128, 127).astype(int))
    np.testing.assert_array_equal(lab[..., 2], np.clip(ab[..., 1] * 128, -128, 127).astype(int))


@pytest.fixture(scope="module")
def quick_run(model_files, tmp_path_factory) -> tuple[str, Path]:
    path = tmp_path_factory.mktemp("bench") / "run.json"
    rc, out = bench("--quick", "--device", "cpu", "--model", str(model_files["teacher"]),
                    "--model", str(model_files["student"]), "--json", str(path))
    assert rc == 0
    return out, path


def test_report_has_every_section(quick_run) -> None:
    out, _ = quick_run
    for text in ("CPU", "torch threads", "RAM", "parameters", "6,321,814", "MACs @256²",
                 "GFLOPs @256²", "ms/image", "images/s", "peak RSS (process)",
                 "## Full resolution, tiny-teacher", "## Full resolution, tiny-student",
                 "model+resize", "Reference pipeline", "quantize+lab2rgb",
                 "of the matmul peak", "of the conv peak"):
        assert text in out, text
    assert len(re.findall(r"slowest stage: (decode|L|model\+resize|RGB|encode) \(", out)) == 2
    assert len(re.findall(r"tiny-\w+: ours \d+\.\d\dx the reference time", out)) == 2


def test_json_and_compare_with_itself(quick_run) -> None:
    _, path = quick_run
    saved = json.loads(path.read_text())
    assert set(saved) == {"settings", "machine", "peak", "models"}
    teacher = saved["models"]["tiny-teacher"]
    assert teacher["parameters"] == 6_321_814
    assert set(teacher["fullres"]["stages_s"]) == {"decode", "L", "model+resize", "RGB", "encode"}
    assert teacher["reference"]["ours_over_reference"] > 0
    rc, out = bench("--compare", str(path), str(path))
    assert rc == 0
    ratios = re.findall(r"\| +(\S+) \|$", out, flags=re.M)[1:]  # last column, header dropped
    assert len(ratios) > 20 and set(ratios) == {"1.00"}


def test_bench_takes_the_shared_colorizer_options(model_files, tmp_path) -> None:
    """--size is the full-resolution test's working size, --batch-size the larger latency batch
    (default 8); sizes are checked when parsed."""
    parser = argparse.ArgumentParser()
    add_command(parser.add_subparsers())
    assert parser.parse_args(["bench"]).batch_size == 4  # the shared default
    for wrong in (["--sizes", "24"], ["--size", "40"], ["--working-size", "64"]):
        with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit):
            parser.parse_args(["bench", *wrong])
    rc, out = bench("--device", "cpu", "--skip-reference", "--model", str(model_files["student"]),
                    "--sizes", "32", "--size", "48", "--batch-size", "3", "--runs", "1",
                    "--warmup", "0", "--megapixels", "0.05", "--json", str(tmp_path / "b.json"))
    assert rc == 0 and "working size 48" in out
    saved = json.loads((tmp_path / "b.json").read_text())
    assert saved["settings"]["working_size"] == 48 and saved["settings"]["batch"] == 3
    assert set(saved["models"]["tiny-student"]["latency"]) == {"32px_b1", "32px_b3"}


def test_skip_reference(model_files) -> None:
    rc, out = bench("--quick", "--device", "cpu", "--skip-reference", "--model",
                    str(model_files["student"]))
    assert rc == 0 and "tiny-student" in out and "Reference pipeline" not in out


def test_bench_reports_video_flicker_off_and_on(model_files, tmp_path) -> None:
    """The flicker measure of ``retint video`` is also a bench figure, stabilisation off vs on."""
    from test_video import make_clip, scene_frames

    frames, _ = scene_frames()
    clip = make_clip(tmp_path / "clip.mp4", frames)
    rc, out = bench("--quick", "--skip-reference", "--model", str(model_files["teacher"]),
                    "--video", str(clip), "--json", str(tmp_path / "b.json"))
    assert rc == 0
    match = re.search(r"(\d+) frames .* flicker .*: off ([\d.]+), on ([\d.]+)", out)
    assert match, out
    assert int(match.group(1)) == len(frames)
    off, on = float(match.group(2)), float(match.group(3))
    assert 0 < on < off  # the random teacher flickers; stabilisation removes part of it
    saved = json.loads((tmp_path / "b.json").read_text())["video"][0]
    assert saved["flicker_on"] == pytest.approx(on, rel=1e-3)


def test_encoder_macs_and_share_are_reported(tmp_path) -> None:
    """A teacher with the frozen encoder: its MACs count the encoder, and bench times its share."""
    from retint.models import save_weights

    fused = build_model("teacher", backbone="efficientnet-lite0").eval()
    seed = build_model("teacher")
    extra = count_macs(fused, (1, 1, 256, 256)) - count_macs(seed, (1, 1, 256, 256))
    # EfficientNet-Lite0 is ~0.39 GMACs at 224² (0.51 at 256²), plus the small fusion block
    assert 0.45e9 < extra < 0.75e9
    save_weights(fused, tmp_path / "fused", {"name": "fused"})
    rc, out = bench("--quick", "--device", "cpu", "--skip-reference", "--model",
                    str(tmp_path / "fused"), "--json", str(tmp_path / "b.json"))
    assert rc == 0
    assert re.search(r"fused: its frozen pretrained encoder takes [\d.]+ of [\d.]+ ms", out)
    case = next(iter(json.loads((tmp_path / "b.json").read_text())["models"]["fused"]
                     ["latency"].values()))
    assert 0 < case["encoder_share"] < 1


def test_onnx_and_int8_side_by_side_with_torch(model_files, photos_dir, tmp_path) -> None:
    """--runtime onnx adds each model's ONNX twin, --int8 its quantized twin, in one run; the
    twins are counted as the torch network (same parameters and MACs) and timed as ONNX."""
    pytest.importorskip("onnxruntime")
    rc, out = bench("--quick", "--device", "cpu", "--skip-reference", "--model",
                    str(model_files["student"]), "--runtime", "onnx", "--int8",
                    "--calibration", str(photos_dir), "--json", str(tmp_path / "b.json"))
    assert rc == 0
    models = json.loads((tmp_path / "b.json").read_text())["models"]
    assert list(models) == ["tiny-student", "tiny-student onnx", "tiny-student int8"]
    assert [m["runtime"] for m in models.values()] == ["torch", "onnx", "onnx"]
    assert len({m["macs_256"] for m in models.values()}) == 1
    assert models["tiny-student int8"]["path"].endswith(".onnx")
    for name in models:
        assert f"| {name} " in out  # each in the latency table
    with pytest.raises(ValueError, match="--runtime onnx and --calibration"):
        bench("--quick", "--model", str(model_files["student"]), "--int8")
