"""Video: fps and colour flicker of a clip, with temporal stabilisation off and on."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..inference import Colorizer
from ..video import colorize_video


def video_flicker(clips: Sequence[str | Path], colorizers: Mapping[str, Colorizer]
                  ) -> list[dict[str, Any]]:
    """Colorize each clip with each colorizer (the same path as ``retint video``): fps as users
    get it (a run that measures nothing else), then colour flicker with temporal stabilisation
    off and on (a second run, measuring)."""
    rows = []
    for clip in clips:
        for name, colorizer in colorizers.items():
            with tempfile.TemporaryDirectory(prefix="retint-bench-") as tmp:
                timed = colorize_video(clip, Path(tmp) / "out.mp4", colorizer)
                measured = colorize_video(clip, Path(tmp) / "out.mp4", colorizer,
                                          measure_flicker=True)
            rows.append({"clip": str(clip), "model": name, "frames": timed.frames,
                         "width": timed.width, "height": timed.height, "fps": timed.fps,
                         "flicker_off": measured.flicker["off"],
                         "flicker_on": measured.flicker["on"], "peak_mb": timed.peak_rss_mb})
    return rows
