"""retint evaluate: end to end on real photos with small random models, checked independently."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import photo
from PIL import Image
from skimage.color import deltaE_ciede2000, lab2rgb, rgb2lab
from skimage.metrics import peak_signal_noise_ratio

from retint.color import no_colour
from retint.evaluate import BASELINE, METRICS, add_command, cmd_evaluate, evaluate

COLOUR = ["photos/astronaut.jpg", "photos/chelsea.jpg", "photos/hubble_deep_field.jpg",
          "photos/nested/coffee.jpg", "photos/nested/immunohistochemistry.jpg",
          "photos/nested/rocket.jpg"]
MONOTONE = ["photos/gray_camera.png", "photos/sepia_coffee.jpg"]


def _run(*argv: str) -> tuple[int, str]:
    """Parse with a parser of our own (as cli.py will) and run; returns (exit code, stdout)."""
    p = argparse.ArgumentParser()
    add_command(p.add_subparsers())
    args = p.parse_args(["evaluate", *argv])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = args.func(args)
    return rc, out.getvalue()


@pytest.fixture(scope="module")
def folder(photos_dir, tmp_path_factory) -> Path:
    """The shared photo folder (6 colour, 1 gray, 1 sepia), copied, plus one unreadable file."""
    root = tmp_path_factory.mktemp("evaluate") / "photos"
    shutil.copytree(photos_dir, root)
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


@pytest.fixture(scope="module")
def main_run(folder, model_files):
    out = folder.parent
    rc, stdout = _run(str(folder), "--model", str(model_files["teacher"]), "--model",
                      str(model_files["student"]), "--size", "64", "--batch-size", "4",
                      "--json", str(out / "eval.json"), "--sheet", str(out / "sheet.jpg"),
                      "--sheet-count", "3", "-q")
    return rc, stdout, json.loads((out / "eval.json").read_text()), out


def test_table(main_run):
    rc, stdout, _, _ = main_run
    assert rc == 0
    for res in ("full", "working"):
        header = next(line for line in stdout.splitlines() if line.startswith(f"**{res} "))
        assert "6 photos evaluated of 9 files (2 gray/monotone skipped, 1 unreadable)" in header
        assert "truth CF " in header and " ± " in header
    titles = "| | PSNR_ab | SSIM_ab | PSNR_rgb | SSIM_rgb | ΔE00 | CF | CF/truth | ΔCF |"
    assert stdout.count(titles) == 2
    rows = [line for line in stdout.splitlines() if line.startswith("| ") and " ± " in line]
    assert [r.split(" | ")[0] for r in rows] == [f"| {BASELINE}", "| tiny-teacher",
                                                 "| tiny-student"] * 2
    assert all(r.count(" ± ") == 7 for r in rows)
    assert "FID and LPIPS are not reported" in stdout
    assert "unreadable:" in stdout and "broken.jpg" in stdout


def test_json_per_image_and_counts(main_run, folder):
    _, _, result, _ = main_run
    assert result["counts"] == {"files": 9, "evaluated": 6, "skipped_monotone": 2,
                                "unreadable": 1}
    assert sorted(result["skipped_monotone"]) == MONOTONE
    assert [u["key"] for u in result["unreadable"]] == ["photos/broken.jpg"]
    assert [m["card_name"] for m in result["settings"]["models"]] == ["tiny-teacher",
                                                                       "tiny-student"]
    assert result["settings"]["working_size"] == 64
    labels = [BASELINE, "tiny-teacher", "tiny-student"]
    for res in ("full", "working"):
        entries = result["images"][res]
        assert [e["key"] for e in entries] == COLOUR
        for e in entries:
            assert list(e["scores"]) == labels
            assert all(set(s) == set(METRICS) for s in e["scores"].values())
            size = (e["height"], e["width"])
            if res == "working":
                assert max(size) == 64
            else:
                assert size == Image.open(folder.parent / e["key"]).size[::-1]
        summary = result["summary"][res]
        assert summary["photos"] == 6
        for label in labels:
            for m in METRICS:
                values = [e["scores"][label][m] for e in entries]
                assert summary["rows"][label][m]["mean"] == pytest.approx(np.mean(values))
                assert summary["rows"][label][m]["std"] == pytest.approx(np.std(values))
        base = summary["rows"][BASELINE]
        assert base["cf"]["mean"] < 1 and base["cf_ratio"] < 0.05  # no colour is gray
        assert base["psnr_ab"]["mean"] > 15 and 0 < base["ssim_rgb"]["mean"] < 1


def test_sheet(main_run):
    _, _, _, out = main_run
    sheet = Image.open(out / "sheet.jpg")
    assert sheet.height == 24 + 3 * (256 + 6) + 6  # 3 rows: gray | 2 models | truth
    assert sheet.width > 4 * 256
    assert "sheet: " in main_run[1]


def test_baseline_matches_skimage_independently(main_run, folder):
    """The no-colour ΔE00 and PSNR_ab of one photo, recomputed with scikit-image alone."""
    _, _, result, _ = main_run
    entry = result["images"]["full"][0]
    truth = np.asarray(Image.open(folder.parent / entry["key"]).convert("RGB"))
    lab = rgb2lab(truth)
    lab_gray = lab.copy()
    lab_gray[..., 1:] = 0
    neutral = lab2rgb(lab_gray).mean(axis=2, keepdims=True).repeat(3, axis=2)  # exactly gray
    gray = np.round(neutral * 255).astype(np.uint8)
    assert np.abs(no_colour(truth).astype(int) - gray).max() <= 1
    expected_de = deltaE_ciede2000(lab, rgb2lab(gray)).mean()
    assert entry["scores"][BASELINE]["delta_e00"] == pytest.approx(expected_de, abs=1e-4)
    expected_psnr = peak_signal_noise_ratio(lab[..., 1:] / 128, np.zeros_like(lab[..., 1:]),
                                            data_range=2)
    assert entry["scores"][BASELINE]["psnr_ab"] == pytest.approx(expected_psnr, abs=2e-3)


def test_repeat_run_is_identical(folder, model_files, tmp_path):
    args = [str(folder), "--model", str(model_files["student"]), "--size", "64", "--limit", "4",
            "--resolution", "full", "-q"]
    results = []
    for n in range(2):
        rc, _ = _run(*args, "--json", str(tmp_path / f"{n}.json"))
        assert rc == 0
        results.append(json.loads((tmp_path / f"{n}.json").read_text()))
    assert results[0] == results[1]
    assert results[0]["counts"] == {"files": 4, "evaluated": 2, "skipped_monotone": 1,
                                    "unreadable": 1}
    assert list(results[0]["images"]) == ["full"]


@pytest.mark.parametrize("kind", ["split.json", "model card"])
def test_split_keeps_the_validation_photos(folder, model_files, tmp_path, kind):
    val = ["photos/chelsea.jpg", "photos/nested/rocket.jpg", "photos/gray_camera.png",
           "elsewhere/missing.jpg"]
    doc = {"seed": 0, "train": [], "val": val} if kind == "split.json" else {
        "name": "x", "data": {"val_photos": 4, "val_photos_list": val}}
    split = tmp_path / "split.json"
    split.write_text(json.dumps(doc))
    rc, stdout = _run(str(folder), "--model", str(model_files["student"]), "--size", "64",
                      "--resolution", "working", "--split", str(split), "--json",
                      str(tmp_path / "e.json"), "-q")
    assert rc == 0 and "**full" not in stdout
    assert "3 of 9 files are among its 4 validation keys" in stdout
    result = json.loads((tmp_path / "e.json").read_text())
    assert [e["key"] for e in result["images"]["working"]] == val[:2]
    assert result["skipped_monotone"] == ["photos/gray_camera.png"]
    assert result["settings"]["split"]["kept"] == 3


def test_library_on_arrays_without_models():
    gray = photo("camera")
    result = evaluate([("cat", photo("chelsea")), ("gray", gray), ("tiny", photo("coffee")[:5])],
                      [], resolutions=["working"], working_size=48)
    assert result["counts"] == {"files": 3, "evaluated": 1, "skipped_monotone": 1,
                                "unreadable": 1}
    entry = result["images"]["working"][0]
    assert (entry["height"], entry["width"]) == (32, 48)
    assert list(entry["scores"]) == [BASELINE]
    with pytest.raises(ValueError, match="resolutions"):
        evaluate([], [], resolutions=["half"])


def test_usage_errors(folder, tmp_path, capsys):
    assert _run(str(tmp_path / "nowhere"))[0] == 2
    bad = tmp_path / "bad.json"
    bad.write_text('{"val_photos": 3}')
    assert _run(str(folder), "--split", str(bad))[0] == 2
    assert _run(str(folder), "--sheet", str(tmp_path / "sheet.txt"))[0] == 2
    assert _run(str(folder), "--limit", "0")[0] == 2
    assert "no validation list" in capsys.readouterr().err


def test_parser_defaults():
    p = argparse.ArgumentParser()
    add_command(p.add_subparsers())
    args = p.parse_args(["evaluate", "a", "b"])
    assert args.data == ["a", "b"] and args.model is None and args.func is cmd_evaluate
    assert (args.size, args.device, args.batch_size, args.resolution, args.sheet_count) == (
        256, "auto", 4, "both", 6)
    assert args.limit is args.split is args.json is args.sheet is None and not args.quiet


def test_recipe_default_rule_counts_goals_then_delta_e():
    """scripts/recipes.py picks the default by goals met on held-out photos, then ΔE00."""
    import importlib.util

    from retint.evaluate import BASELINE

    path = Path(__file__).resolve().parent.parent / "scripts" / "recipes.py"
    spec = importlib.util.spec_from_file_location("recipes", path)
    recipes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipes)

    def row(psnr, de, cf):
        return {"psnr_ab": {"mean": psnr}, "delta_e00": {"mean": de}, "cf_ratio": cf}

    summary = {"rows": {BASELINE: row(25.0, 12.0, 0.0),
                        "sepia": row(25.6, 11.5, 0.40),    # 2 goals, best ΔE00
                        "vivid": row(25.5, 11.9, 0.65),    # all 3 goals
                        "wild": row(24.0, 14.0, 0.90)}}    # 1 goal
    assert recipes.goals_met(summary, "vivid") == 3 and recipes.goals_met(summary, "wild") == 1
    assert recipes.pick_default(summary, ["sepia", "vivid", "wild"]) == "vivid"
    assert recipes.pick_default(summary, ["sepia", "wild"]) == "sepia"
    assert recipes.config("student-enc", ["d"]).teacher.endswith("enc-long/final")
