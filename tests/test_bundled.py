"""The models that ship inside the package: loadable without unpickling, documented, and
better than leaving a photo gray on their held-out validation photos."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import photo
from safetensors import safe_open

from retint.inference import Colorizer
from retint.models import BUNDLED_DIR, load_weights, resolve_model_path

PINNED_PARAMETERS = {"teacher": 6_321_814, "student": 5_573_570}
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
    assert "benchmarks" in data["not_used"]
    assert card["command"].startswith("python scripts/train_bundled.py")


def test_default_is_the_best_bundled_model():
    default = json.loads((BUNDLED_DIR / "default.json").read_text())["model"]
    scores = {n: load_weights(resolve_model_path(n))[1]["validation"]["val_psnr_ab"]
              for n in PINNED_PARAMETERS}
    assert default == max(scores, key=scores.get)
    assert Colorizer().name == default


def test_default_model_gives_colour_and_keeps_size():
    gray = photo("camera")[:301, :457]
    out = Colorizer().colorize(gray)
    assert out.shape == gray.shape and out.dtype == np.uint8
    chroma = np.abs(out.astype(int) - out.mean(axis=2, keepdims=True)).mean()
    assert chroma > 1.0  # not a gray copy of the input
