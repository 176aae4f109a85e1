"""What one benchmark run measures; its defaults are the command's (no torch here)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..options import DEFAULT_BATCH_SIZE, DEFAULT_SIZE


@dataclass(frozen=True)
class Settings:
    """What to measure: latency ``sizes`` at batch 1 and ``batch``, medians of ``runs`` after
    ``warmup``, a photo of ``megapixels`` colorized at ``working_size``, the peak probes'
    matmul side ``peak_n`` and largest conv side ``peak_hw``."""

    sizes: tuple[int, ...] = (256, 512)
    batch: int = DEFAULT_BATCH_SIZE
    runs: int = 5
    warmup: int = 2
    megapixels: float = 12.0
    working_size: int = DEFAULT_SIZE
    reference: bool = True
    peak_n: int = 2048
    peak_hw: int = 64

    def __post_init__(self) -> None:
        from ..models import check_size

        for size in (*self.sizes, self.working_size):
            check_size("a benchmark size", size)
        if self.runs < 1 or self.warmup < 0 or self.batch < 1:
            raise ValueError("need --runs >= 1, --warmup >= 0 and --batch-size >= 1")

    def quick(self) -> Settings:
        """Tiny sizes, one run: checks that everything works, in seconds."""
        from ..models import SIZE_MULTIPLE

        tiny = 2 * SIZE_MULTIPLE
        return replace(self, sizes=(tiny,), batch=2, runs=1, warmup=0, megapixels=0.05,
                       working_size=tiny, peak_n=256, peak_hw=16)

    def as_json(self, models: Sequence[str]) -> dict[str, Any]:
        return {"models": list(models), "sizes": list(self.sizes), "batch": self.batch,
                "runs": self.runs, "warmup": self.warmup, "megapixels": self.megapixels,
                "working_size": self.working_size, "reference": self.reference,
                "peak_matmul_n": self.peak_n, "peak_conv_hw": self.peak_hw}
