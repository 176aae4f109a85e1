"""Video: fps and colour flicker of a clip, with temporal stabilisation off and on."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..inference import Colorizer
from ..video import colorize_video


def video_flicker(clip: str | Path, colorizers: Mapping[str, Colorizer]) -> list[dict[str, Any]]:
    """Colorize a clip with each colorizer (the same path as ``retint video``) and report fps
    and colour flicker with temporal stabilisation off and on."""
    rows = []
    for name, colorizer in colorizers.items():
        with tempfile.TemporaryDirectory(prefix="retint-bench-") as tmp:
            report = colorize_video(clip, Path(tmp) / "out.mp4", colorizer, measure_flicker=True)
        rows.append({"clip": str(clip), "model": name, "frames": report.frames,
                     "width": report.width, "height": report.height, "fps": report.fps,
                     "flicker_off": report.flicker["off"], "flicker_on": report.flicker["on"],
                     "peak_mb": report.peak_rss_mb})
    return rows
