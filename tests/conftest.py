"""Shared fixtures: real photos that ship with scikit-image, and small saved models.

Nothing here needs ../shared or the network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch

from retint.io import write_image
from retint.models import build_model, save_weights

COLOR_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
                 "immunohistochemistry")

torch.set_num_threads(1)  # tiny models: threads cost more than they give


def photo(name: str) -> np.ndarray:
    """A real photo from skimage.data as HxWx3 uint8 (gray ones replicated to 3 channels)."""
    img = getattr(skimage.data, name)()
    img = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[:, :, :3]
    return np.ascontiguousarray(img)


def sepia(rgb: np.ndarray) -> np.ndarray:
    """A sepia-toned version of a photo: one brown tint, no real colour."""
    gray = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    tint = np.array([1.07, 0.74, 0.43], np.float32)
    return np.clip(gray[..., None] * tint, 0, 255).round().astype(np.uint8)


@pytest.fixture(scope="session")
def photos_dir(tmp_path_factory) -> Path:
    """A folder of real colour photos (nested), plus one gray and one sepia photo to skip."""
    root = tmp_path_factory.mktemp("photos")
    for i, name in enumerate(COLOR_PHOTOS):
        sub = root / ("nested" if i % 2 else "")
        write_image(sub / f"{name}.jpg", photo(name))
    write_image(root / "gray_camera.png", photo("camera"))
    write_image(root / "sepia_coffee.jpg", sepia(photo("coffee")))
    return root


@pytest.fixture(scope="session")
def model_files(tmp_path_factory) -> dict[str, Path]:
    """Randomly initialised teacher and student saved as safetensors + JSON (seeded)."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for arch in ("teacher", "student"):
        torch.manual_seed(0)
        out[arch] = save_weights(build_model(arch).eval(), root / arch, {"name": f"tiny-{arch}"})
    return out
