"""The EfficientNet-Lite1 judge: what it reads from real photos, and the set figures built on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import COLOR_PHOTOS, photo
from scipy.ndimage import gaussian_filter

from retint.metrics import frechet_distance, top1_agreement
from retint.semantic import FEATURES, Lite1Judge


@pytest.fixture(scope="module")
def judge() -> Lite1Judge:
    return Lite1Judge()


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [photo(name) for name in COLOR_PHOTOS]


def _blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    return np.clip(gaussian_filter(rgb.astype(float), (sigma, sigma, 0)), 0, 255).round() \
        .astype(np.uint8)


def test_reads_real_photos_once_at_240(judge, photos):
    x = judge.input(photos[0])
    assert x.shape == (3, 240, 240) and x.dtype == torch.float32
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0
    features, classes = judge(photos)
    assert features.shape == (len(photos), FEATURES) and features.dtype == torch.float64
    assert classes.shape == (len(photos),) and classes.dtype == torch.int64
    cat = COLOR_PHOTOS.index("chelsea")
    assert int(classes[cat]) in range(281, 286)  # ImageNet's domestic cats
    assert int(classes[COLOR_PHOTOS.index("coffee")]) == 967  # espresso
    again, _ = judge([photos[cat]])  # alone or in a batch, the same reading
    assert torch.allclose(again[0], features[cat], atol=1e-5)
    deep, _ = judge([photos[cat].astype(np.uint16) * 257])  # 16 bits: read as its 8 bits
    assert torch.equal(deep[0], again[0])
    empty, none = judge([])
    assert empty.shape == (0, FEATURES) and none.shape == (0,)
    assert judge.info()["sha256"].startswith("77cc7160") and judge.info()["input_size"] == 240


def test_identical_sets_agree_and_degraded_sets_drift_away(judge, photos):
    features, classes = judge(photos)
    same, same_classes = judge([p.copy() for p in photos])
    assert frechet_distance(features, same) == pytest.approx(0.0, abs=1e-6)
    assert top1_agreement(same_classes, classes) == 1.0
    distances = []
    for sigma in (1, 3, 8):  # blur: the further from the truth, the larger the distance
        blurred, blurred_classes = judge([_blur(p, sigma) for p in photos])
        distances.append(frechet_distance(blurred, features))
    assert 1.0 < distances[0] < distances[1] < distances[2]
    assert top1_agreement(blurred_classes, classes) < 0.5  # heavy blur: objects are lost
    tinted = [np.clip(p.astype(int) + [60, 0, -60], 0, 255).astype(np.uint8) for p in photos]
    tinted_features, _ = judge(tinted)  # a strong warm cast
    assert frechet_distance(tinted_features, features) > 10.0
