"""The models that ship inside the package: loadable without unpickling, documented, and
better than leaving a photo gray on their held-out validation photos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import photo
from safetensors import safe_open

from retint.goals import fast_goal_met, goals_met, pick_default
from retint.inference import Colorizer
from retint.models import BUNDLED_DIR, load_weights, resolve_model_path

# trained parameters only: the frozen encoder is not part of our weights
PINNED_PARAMETERS = {"teacher": 7_190_870, "student": 1_394_146}
pytestmark = pytest.mark.skipif(not (BUNDLED_DIR / "default.json").exists(),
                                reason="bundled weights not built yet")


@pytest.mark.parametrize("name", ["teacher", "student"])
def test_bundled_model_loads_and_its_card_is_complete(name):
    model, card = load_weights(resolve_model_path(name))
    assert card["arch"] == name and card["parameters"] == PINNED_PARAMETERS[name]
    with safe_open(str(resolve_model_path(name)), "pt") as f:  # fp16 on disk, halving the size
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} >= {"torch.float16"}
    val = card["validation"]
    # a colorizer worse than leaving the photo gray would be a defect
    assert val["val_psnr_ab"] > val["base_psnr_ab"]
    assert card["steps"] > 0 and card["train_seconds"] > 0 and card["device"]
    data = card["data"]
    assert len(data["val_photos_list"]) == data["val_photos"] > 50
    assert all(s["note"] for s in data["sources"])  # attribution and licence of each set
    assert {s["folder"] for s in data["sources"]} == {"photos", "imagenet-sample", "people",
                                                      "streets"}
    assert "benchmarks" in data["not_used"]
    assert card["command"].startswith("python scripts/recipes.py train")
    assert set(card["evaluation"]) >= {"held-out", "bsd100", "urban100"}
    if name == "teacher":  # the card names the frozen encoder, its licence, versions and hash
        assert card["backbone"]["name"] == "efficientnet-lite0"
        assert card["backbone"]["licence"] == "Apache-2.0"
        assert len(card["backbone"]["sha256"]) == 64 and all(card["backbone"]["packages"].values())
    else:  # the fast model needs no encoder at all
        assert "backbone" not in card and not hasattr(model, "pretrained")


def _held_out(card: dict) -> tuple[dict, dict]:
    held = card["evaluation"]["held-out"]
    return held["model"], held["no_colour"]


def test_default_follows_the_written_rule():
    """The rule of retint.goals (quoted in the README) picks the installed default."""
    default = json.loads((BUNDLED_DIR / "default.json").read_text())["model"]
    cards = {n: load_weights(resolve_model_path(n))[1] for n in PINNED_PARAMETERS}
    rows = {n: _held_out(c)[0] for n, c in cards.items()}
    assert default == pick_default(rows, _held_out(cards["teacher"])[1])
    assert Colorizer().name == default


def test_default_model_meets_the_color_goals_on_its_held_out_photos():
    card = load_weights(resolve_model_path("default"))[1]
    assert goals_met(*_held_out(card)) == 3


def test_the_student_card_states_the_fast_model_goal_truly():
    """The card records whether the student is within the fast-model goal of the teacher (its
    speed is measured by `retint bench`, not here); the README says the same."""
    cards = {n: load_weights(resolve_model_path(n))[1] for n in PINNED_PARAMETERS}
    rows = {n: {s: e["model"] for s, e in c["evaluation"].items()} for n, c in cards.items()}
    met = fast_goal_met(rows["teacher"], rows["student"])
    assert cards["student"]["fast_goal"]["met"] == met
    readme = " ".join((Path(__file__).resolve().parent.parent / "README.md").read_text().split())
    assert ("within the fast-model goal" if met else "not yet within the fast-model goal") \
        in readme


def test_default_model_gives_color_and_keeps_size():
    gray = photo("camera")[:301, :457]
    out = Colorizer().colorize(gray)
    assert out.shape == gray.shape and out.dtype == np.uint8
    chroma = np.abs(out.astype(int) - out.mean(axis=2, keepdims=True)).mean()
    assert chroma > 1.0  # not a gray copy of the input


def test_bundled_hint_model_is_the_teacher_without_hints_and_carries_a_hint():
    """The bundled hint model on a real black-and-white photo: without hints exactly the
    bundled teacher's pixels; a red hint on the mid-gray ground turns that ground red, keeps
    L, and leaves the bright sky (another lightness, far away) nearly as it was."""
    import torch

    from retint.color import rgb_to_lab
    from retint.hints import hint_model_for

    assert hint_model_for("default") == "hints"
    hinted = Colorizer("hints", device="cpu")
    card = hinted.card
    assert card["arch"] == "hinted" and card["base"]["bundled"] == "teacher"
    assert {"held-out", "bsd100"} <= set(card["evaluation_hints"])
    gray = photo("camera")  # a real black-and-white photo, as RGB
    teacher = Colorizer("teacher", device="cpu").colorize(gray)
    assert np.array_equal(hinted.colorize(gray), teacher)
    out = hinted.colorize(gray, hints=[{"x": 0.8, "y": 0.75, "colour": "#c02020"}])

    def lab(img, x, y, half=8):
        r, c = int(y * img.shape[0]), int(x * img.shape[1])
        patch = img[r - half : r + half + 1, c - half : c + half + 1]
        return rgb_to_lab(torch.from_numpy(np.ascontiguousarray(patch)).permute(2, 0, 1)
                          .double() / 255).mean((1, 2))

    near, before = lab(out, 0.8, 0.75), lab(teacher, 0.8, 0.75)
    assert near[1] > before[1] + 15 and near[1] > 15  # red: a* up
    assert abs(float(near[0] - lab(gray, 0.8, 0.75)[0])) < 0.5  # lightness kept
    sky_after, sky_before = lab(out, 0.15, 0.1), lab(teacher, 0.15, 0.1)
    assert float((sky_after[1:] - sky_before[1:]).abs().max()) < 3.0
