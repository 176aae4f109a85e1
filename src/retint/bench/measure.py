"""The measurements: the machine, each model's size, latency, full-resolution pipeline and the
reference pipeline, gathered into one JSON-ready dict (read by :mod:`.report`)."""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import gc
import os
import platform
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..color import gray_table
from ..device import cpu_name, describe_device, usable_cores
from ..inference import Colorizer, working_shape
from ..models import count_parameters
from .macs import count_macs
from .photo import make_photo, ours_stages
from .reference import reference_stages
from .settings import Settings
from .timing import measure_peaks, median_time, peak_mb, reset_peak, time_stages

MACS_SIZE = 256  # the size at which parameters' MACs are reported, whatever sizes are timed
Progress = Callable[[str], None]


def machine_info(device: torch.device) -> dict[str, Any]:
    try:
        ram_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (AttributeError, ValueError, OSError):
        ram_gb = None
    return {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "usable_cores": usable_cores(),
            "torch_threads": torch.get_num_threads(), "ram_gb": ram_gb,
            "torch": torch.__version__, "python": platform.python_version(),
            "device": str(device),
            "device_name": cpu_name() if device.type == "cpu" else describe_device(device),
            "date": datetime.datetime.now().isoformat(timespec="seconds")}


def bench_latency(model: nn.Module, device: torch.device, settings: Settings,
                  peak: dict[str, float], progress: Progress,
                  counted: nn.Module | None = None) -> dict[str, dict[str, Any]]:
    """Network alone on random L, batch 1 and ``settings.batch``, at each size (its FLOPs
    counted on ``counted``, the torch network an ONNX model was exported from)."""
    runs, warmup = settings.runs, settings.warmup
    cases: dict[str, dict[str, Any]] = {}
    for size in settings.sizes:
        flops = 2 * count_macs(counted if counted is not None else model, (1, 1, size, size))
        for b in sorted({1, settings.batch}):
            progress(f"{size}² batch {b}")
            x = torch.rand(b, 1, size, size, device=device)
            reset_peak(device)
            with torch.inference_mode():
                t = median_time(lambda x=x: model(x), runs, warmup, device)
            gflops = flops * b / t / 1e9
            cases[f"{size}px_b{b}"] = case = {
                "size": size, "batch": b, "ms_per_image": 1e3 * t / b, "images_per_s": b / t,
                "gflop_per_s": gflops, "of_matmul_peak": gflops / peak["matmul_gflops"],
                "of_conv_peak": gflops / peak["conv_gflops"], "peak_mem_mb": peak_mb(device)}
            encoder = getattr(model, "pretrained", None)
            if encoder is not None:  # the frozen pretrained encoder's share of that time
                with torch.inference_mode():
                    te = median_time(lambda x=x, e=encoder: e(x), runs, warmup, device)
                case["encoder_ms_per_image"] = 1e3 * te / b
                case["encoder_share"] = te / t
    return cases


def _status_mb(field: str) -> float | None:
    """A memory figure of this process from Linux's /proc/self/status (VmRSS, VmHWM), in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 2**10
    except (OSError, ValueError, IndexError):
        pass
    return None


def _restart_rss_peak() -> float | None:
    """Restart the process's peak-RSS count (Linux: /proc/self/clear_refs), so that a case's
    peak is its own rather than the largest of every case before it; the RSS it starts from
    in MB, or None where that is not possible. Memory the allocator still holds from earlier
    cases, freed but not returned, is handed back first (glibc's malloc_trim)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return _status_mb("VmRSS")


def bench_fullres(colorizer: Colorizer, src: Path, dst: Path, shape: tuple[int, int],
                  settings: Settings) -> dict[str, Any]:
    """Our pipeline stage by stage on the big photo; predict_ab is also timed on an L already
    at the working size, which splits 'model+resize' into the network and the resizing. On the
    CPU under Linux the peak memory is this case's own peak RSS (the process's, with the models
    loaded, from the start of the case), elsewhere the process-wide peak so far."""
    dev, (h, w), runs, warmup = colorizer.device, shape, settings.runs, settings.warmup
    reset_peak(dev)
    rss_start = _restart_rss_peak() if dev.type == "cpu" else None
    with torch.inference_mode():
        # each run as a fresh process's first photo: the gray table as a new Colorizer leaves
        # it (its common colours filled), none of this photo's other colours
        stages = time_stages(ours_stages(colorizer, src, dst), runs, warmup, dev,
                             before=lambda: gray_table(fresh=True).prefill())
        peak = _status_mb("VmHWM") if rss_start is not None else None
        small = [torch.rand(1, *working_shape(h, w, colorizer.working_size))]
        network = median_time(lambda: colorizer.predict_ab(small, full_size=False), runs,
                              warmup, dev)
    out = {"height": h, "width": w, "stages_s": stages, "total_s": sum(stages.values()),
           "network_s": network, "slowest": max(stages, key=stages.__getitem__),
           "peak_mem_mb": peak if peak is not None else peak_mb(dev)}
    if peak is not None:
        out["rss_start_mb"] = rss_start
    return out


def bench_reference(colorizer: Colorizer, src: Path, dst: Path, ours_s: float,
                    settings: Settings) -> dict[str, Any]:
    """The original project's pipeline on the same photo with the same model."""
    stages = reference_stages(colorizer.model, colorizer.device, src, dst)
    ref = time_stages(stages, settings.runs, settings.warmup, colorizer.device)
    total = sum(ref.values())
    return {"stages_s": ref, "total_s": total, "ours_over_reference": ours_s / total}


def bench_model(colorizer: Colorizer, photo: Path, shape: tuple[int, int], settings: Settings,
                peak: dict[str, float], progress: Progress,
                network: nn.Module | None = None) -> dict[str, Any]:
    """Every figure of one model (``photo`` is the test photo, of ``shape``). An ONNX model is
    counted as the torch ``network`` it was exported from, and has no reference run (that
    pipeline is torch's)."""
    model, tmp = colorizer.model, photo.parent
    counted = network if network is not None else model
    macs = count_macs(counted, (1, 1, MACS_SIZE, MACS_SIZE))
    rec: dict[str, Any] = {"path": str(colorizer.model_path), "runtime": colorizer.runtime,
                           "parameters": count_parameters(counted),
                           "macs_256": macs, "gflops_256": 2 * macs / 1e9}
    rec["latency"] = bench_latency(model, colorizer.device, settings, peak, progress, counted)
    progress(f"full resolution {shape[1]}x{shape[0]}")
    rec["fullres"] = bench_fullres(colorizer, photo, tmp / "ours.jpg", shape, settings)
    if settings.reference and colorizer.runtime == "torch":
        progress("reference pipeline")
        rec["reference"] = bench_reference(colorizer, photo, tmp / "ref.jpg",
                                           rec["fullres"]["total_s"], settings)
    return rec


def run_bench(colorizers: Mapping[str, Colorizer], settings: Settings | None = None,
              progress: Progress = lambda _: None,
              networks: Mapping[str, nn.Module] | None = None) -> dict[str, Any]:
    """Run every measurement of each colorizer (by its label) on the first one's device, at
    ``settings.working_size``; return them as one JSON-ready dict (see ``format_report``).
    ``networks`` gives, by label, the torch network an ONNX colorizer runs (for its size)."""
    networks = networks or {}
    settings = settings or Settings()
    if not colorizers:
        raise ValueError("no model to benchmark")
    dev = next(iter(colorizers.values())).device
    progress(f"measuring peak GFLOP/s on {dev}")
    peak = measure_peaks(dev, settings.runs, settings.warmup, settings.peak_n, settings.peak_hw)
    out: dict[str, Any] = {"settings": settings.as_json(list(colorizers)),
                           "machine": machine_info(dev), "peak": peak, "models": {}}
    with tempfile.TemporaryDirectory(prefix="retint-bench-") as tmp:
        photo = Path(tmp) / "photo.jpg"
        shape = make_photo(photo, settings.megapixels)
        for key, colorizer in colorizers.items():
            out["models"][key] = bench_model(
                colorizer.resized(settings.working_size), photo, shape, settings, peak,
                lambda msg, key=key: progress(f"{key}: {msg}"), networks.get(key))
    return out
