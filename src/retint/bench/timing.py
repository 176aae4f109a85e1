"""Timing on any device, peak memory, and this device's own matmul and convolution peaks."""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

#: A pipeline stage: reads and writes the results it passes on in a shared dict.
Stage = Callable[[dict[str, Any]], None]

# (in_channels, out_channels, kernel, padding, dilation, side, batch): a 3x3 conv as in the
# classic probe, and shapes that dominate our models (the dilated kernel-4 bottleneck, a wide 3x3).
PEAK_CONVS = ((128, 128, 3, 1, 1, 64, 8), (256, 512, 4, 3, 2, 16, 8), (512, 512, 3, 1, 1, 16, 16))


def sync(device: torch.device) -> None:
    """Kernels are asynchronous on GPUs: without this a timing measures only the launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def median_time(fn: Callable[[], object], runs: int, warmup: int, device: torch.device) -> float:
    """Median seconds of ``runs`` calls of ``fn`` after ``warmup`` untimed ones."""
    times = []
    for i in range(warmup + runs):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_stages(stages: Sequence[tuple[str, Stage]], runs: int, warmup: int,
                device: torch.device, before: Callable[[], object] = lambda: None
                ) -> dict[str, float]:
    """Median seconds of each stage of a pipeline whose stages pass results through a dict;
    ``before`` runs, untimed, before each run."""
    times: dict[str, list[float]] = {name: [] for name, _ in stages}
    for i in range(warmup + runs):
        before()
        state: dict[str, Any] = {}
        for name, fn in stages:
            sync(device)
            t0 = time.perf_counter()
            fn(state)
            sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device: torch.device) -> float | None:
    """Per case on CUDA; on CPU the process's peak RSS so far (it only ever grows)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:  # Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes there, KiB on Linux


def measure_peaks(device: torch.device, runs: int, warmup: int, n: int = 2048,
                  hw: int = 64) -> dict[str, float]:
    """GFLOP/s of a large float32 matmul and the best of a few convolutions (fastest of the
    runs: a peak is a best case), to read the models' own GFLOP/s against. The two differ a
    lot on some CPUs (e.g. a BLAS that takes only its AVX2 path where oneDNN's convolutions
    use AVX-512), so the conv figure is the fairer ceiling for these conv nets."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best_conv = 0.0
    with torch.inference_mode():
        t_mm = median_time(lambda: a @ b, runs, warmup, device)
        for cin, cout, k, pad, dil, side, batch in PEAK_CONVS:
            side = min(side, hw)
            conv = nn.Conv2d(cin, cout, k, padding=pad, dilation=dil, bias=False).to(device)
            x = torch.randn(batch, cin, side, side, device=device)
            out_pixels = math.prod(conv(x).shape[-2:])
            t = min(median_time(lambda c=conv, x=x: c(x), 1, warmup, device)
                    for _ in range(max(1, runs)))
            best_conv = max(best_conv, 2 * batch * out_pixels * cin * cout * k * k / t / 1e9)
    return {"matmul_gflops": 2 * n**3 / t_mm / 1e9, "conv_gflops": best_conv}
