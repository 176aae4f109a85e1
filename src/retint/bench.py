"""``retint bench``: how big, how fast and where the time goes, for the teacher and the student.

Figures: parameters and MACs; latency/throughput at the working sizes; peak memory; a 12 MP
photo end to end, stage by stage, against the original project's pipeline run in the same process;
and achieved GFLOP/s as a fraction of this machine's measured matmul and conv peaks, so a number
can be judged without knowing the hardware. ``--json`` keeps it all; ``--compare`` diffs two runs.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch and numpy are imported where used: `retint --help` stays instant
    import numpy as np
    import torch
    from torch import Tensor, nn

Stage = Callable[[dict[str, Any]], None]
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")
REFERENCE_SIZE = 384  # the original project's fixed, distorting input size (24 x 16)


# ---------------------------------------------------------------- counting


def count_macs(model: nn.Module, shape: Sequence[int]) -> int:
    """Multiply-accumulates per sample of one forward pass on an input of ``shape`` (B,C,H,W).

    Counted by forward hooks on a copy moved to the meta device: exact shapes, no arithmetic,
    so MACs at 256² cost nothing even where the benchmark itself runs tiny sizes. Only convs
    and Linear layers count (biases, BatchNorm, activations and SE gating do not), as usual.
    """
    import torch
    from torch import nn

    total = 0

    def hook(m: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.ConvTranspose2d):  # each input element is spread over a kernel
            total += inputs[0].numel() * m.out_channels // m.groups * math.prod(m.kernel_size)
        elif isinstance(m, nn.Conv2d):
            total += out.numel() * m.in_channels // m.groups * math.prod(m.kernel_size)
        elif isinstance(m, nn.Linear):
            total += inputs[0].numel() * m.out_features

    meta = copy.deepcopy(model).to("meta")
    modules = list(meta.modules())
    for m in list(modules):  # a frozen pretrained encoder sits outside the module tree
        if getattr(m, "_net", None):
            modules += list(m.net.modules())
    for m in modules:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            m.register_forward_hook(hook)
    with torch.inference_mode():
        meta(torch.empty(*shape, device="meta"))
    return total // shape[0]


# ---------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    """Kernels are asynchronous on GPUs: without this a timing measures only the launch."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _median_time(fn: Callable[[], object], runs: int, warmup: int, device: torch.device) -> float:
    times = []
    for i in range(warmup + runs):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_stages(stages: Sequence[tuple[str, Stage]], runs: int, warmup: int,
                device: torch.device) -> dict[str, float]:
    """Median seconds of each stage of a pipeline whose stages pass results through a dict."""
    times: dict[str, list[float]] = {name: [] for name, _ in stages}
    for i in range(warmup + runs):
        state: dict[str, Any] = {}
        for name, fn in stages:
            _sync(device)
            t0 = time.perf_counter()
            fn(state)
            _sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def _reset_peak(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device) -> float | None:
    """Per case on CUDA; on CPU the process's peak RSS so far (it only ever grows)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:  # Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes there, KiB on Linux


# (in_channels, out_channels, kernel, padding, dilation, side, batch): a 3x3 conv as in the
# classic probe, and shapes that dominate our models (the dilated kernel-4 bottleneck, a wide 3x3).
_PEAK_CONVS = ((128, 128, 3, 1, 1, 64, 8), (256, 512, 4, 3, 2, 16, 8), (512, 512, 3, 1, 1, 16, 16))


def measure_peaks(device: torch.device, runs: int, warmup: int, n: int = 2048,
                  hw: int = 64) -> dict[str, float]:
    """GFLOP/s of a large float32 matmul and the best of a few convolutions (fastest of the
    runs: a peak is a best case), to read the models' own GFLOP/s against. The two differ a
    lot on some CPUs (e.g. a BLAS that takes only its AVX2 path where oneDNN's convolutions
    use AVX-512), so the conv figure is the fairer ceiling for these conv nets."""
    import torch
    from torch import nn

    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best_conv = 0.0
    with torch.inference_mode():
        t_mm = _median_time(lambda: a @ b, runs, warmup, device)
        for cin, cout, k, pad, dil, side, batch in _PEAK_CONVS:
            side = min(side, hw)
            conv = nn.Conv2d(cin, cout, k, padding=pad, dilation=dil, bias=False).to(device)
            x = torch.randn(batch, cin, side, side, device=device)
            out_pixels = conv(x).shape[-2] * conv(x).shape[-1]
            t = min(_median_time(lambda c=conv, x=x: c(x), 1, warmup, device)
                    for _ in range(max(1, runs)))
            best_conv = max(best_conv, 2 * batch * out_pixels * cin * cout * k * k / t / 1e9)
    return {"matmul_gflops": 2 * n**3 / t_mm / 1e9, "conv_gflops": best_conv}


# ---------------------------------------------------------------- photos and pipelines


def make_photo(path: Path, megapixels: float) -> tuple[int, int]:
    """A 4:3 JPEG of about ``megapixels``: real skimage photos tiled near their native
    resolution (cells of at most 500 px), so decode and encode meet camera-like detail rather
    than an upscaled blur that JPEG compresses (and decompresses) far too easily."""
    import numpy as np
    import skimage.data
    from PIL import Image, ImageOps

    from .io import write_image

    w = max(32, round(math.sqrt(megapixels * 1e6 * 4 / 3)))
    h = max(24, round(w * 3 / 4))
    cols, rows = math.ceil(w / 500), math.ceil(h / 500)
    photos = [Image.fromarray(getattr(skimage.data, name)()[:, :, :3]) for name in PHOTOS]
    canvas = Image.new("RGB", (w, h))
    for i in range(rows * cols):
        r, c = divmod(i, cols)
        x0, y0, x1, y1 = c * w // cols, r * h // rows, (c + 1) * w // cols, (r + 1) * h // rows
        tile = photos[i % len(photos)]
        tile = ImageOps.mirror(tile) if i // len(photos) % 2 else tile
        canvas.paste(tile.resize((x1 - x0, y1 - y0), Image.BICUBIC), (x0, y0))
    write_image(path, np.asarray(canvas), quality=95)
    return h, w


def ours_stages(colorizer, src: Path, dst: Path) -> list[tuple[str, Stage]]:
    """``Colorizer.colorize_file`` cut at its public stages."""
    from .io import read_rgb, write_image

    def decode(s: dict) -> None:
        s["img"] = read_rgb(src)

    def lightness(s: dict) -> None:
        s["l"] = colorizer.lightness(s["img"])

    def model(s: dict) -> None:
        s["ab"] = colorizer.predict_ab([s["l"]])[0]

    def rgb(s: dict) -> None:
        s["rgb"] = colorizer.compose(s["l"], s["ab"], s["img"].dtype)

    def encode(s: dict) -> None:
        write_image(dst, s["rgb"])

    return [("decode", decode), ("L", lightness), ("model+resize", model), ("RGB", rgb),
            ("encode", encode)]


def seed_quantize(l_norm: np.ndarray, ab_norm: np.ndarray) -> np.ndarray:
    """The original project's ``rgb_image`` reconstruction (HxW, HxWx2 -> HxWx3 float64 LAB):
    L*100 cast to uint8 and ab*128 to int8 before lab2rgb. Its a-from-L bug is not kept; its
    quantization is, since it costs both time and banding."""
    import numpy as np

    l = np.clip(l_norm * 100, 0, 100).astype(np.uint8)
    ab = np.clip(ab_norm * 128, -128, 127).astype(np.int8)
    return np.concatenate((l[..., None], ab), axis=-1).astype(np.float64)


def reference_stages(model: nn.Module, device: torch.device, src: Path,
                     dst: Path) -> list[tuple[str, Stage]]:
    """The original project's pipeline: a fixed distorting 384² resize, float64 skimage LAB,
    the model, a quantized reconstruction at 384², and a resize back up to the photo's size."""
    import numpy as np
    import skimage.color
    import torch
    from PIL import Image

    def load(s: dict) -> None:
        with Image.open(src) as im:
            s["size"] = im.size
            s["rgb"] = np.asarray(im.convert("RGB").resize((REFERENCE_SIZE, REFERENCE_SIZE)))

    def to_lab(s: dict) -> None:
        lab = skimage.color.rgb2lab(s["rgb"])
        s["l"], s["ab"] = lab[..., 0] / 100, lab[..., 1:] / 128

    def run_model(s: dict) -> None:
        x = torch.from_numpy(s["l"]).float()[None, None].to(device)
        with torch.no_grad():
            s["pred"] = model(x)[0].permute(1, 2, 0).cpu().numpy()

    def to_rgb(s: dict) -> None:
        rgb = skimage.color.lab2rgb(seed_quantize(s["l"], s["pred"]))
        s["out"] = (rgb * 255).astype(np.uint8)

    def save(s: dict) -> None:
        Image.fromarray(s["out"]).resize(s["size"]).save(dst)  # Pillow's default quality, 75

    return [("open+resize", load), ("rgb2lab", to_lab), ("model", run_model),
            ("quantize+lab2rgb", to_rgb), ("resize+save", save)]


# ---------------------------------------------------------------- the benchmark


def machine_info(device: torch.device) -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in
                   Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        ram_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (AttributeError, ValueError, OSError):
        ram_gb = None
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else "Apple GPU (MPS)" if device.type == "mps" else cpu)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "usable_cores": usable,
            "torch_threads": torch.get_num_threads(), "ram_gb": ram_gb,
            "torch": torch.__version__, "python": platform.python_version(),
            "device": str(device), "device_name": name,
            "date": datetime.datetime.now().isoformat(timespec="seconds")}


def bench_latency(model: nn.Module, device: torch.device, sizes: Sequence[int], batch: int,
                  runs: int, warmup: int, peak: dict[str, float],
                  progress: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """Network alone on random L, batch 1 and ``batch``, at each size."""
    import torch

    cases: dict[str, dict[str, Any]] = {}
    for size in sizes:
        flops = 2 * count_macs(model, (1, 1, size, size))
        for b in sorted({1, batch}):
            progress(f"{size}² batch {b}")
            x = torch.rand(b, 1, size, size, device=device)
            _reset_peak(device)
            with torch.inference_mode():
                t = _median_time(lambda x=x: model(x), runs, warmup, device)
            gflops = flops * b / t / 1e9
            cases[f"{size}px_b{b}"] = case = {
                "size": size, "batch": b, "ms_per_image": 1e3 * t / b, "images_per_s": b / t,
                "gflop_per_s": gflops, "of_matmul_peak": gflops / peak["matmul_gflops"],
                "of_conv_peak": gflops / peak["conv_gflops"], "peak_mem_mb": _peak_mb(device)}
            encoder = getattr(model, "pretrained", None)
            if encoder is not None:  # the frozen pretrained encoder's share of that time
                with torch.inference_mode():
                    te = _median_time(lambda x=x, e=encoder: e(x), runs, warmup, device)
                case["encoder_ms_per_image"] = 1e3 * te / b
                case["encoder_share"] = te / t
    return cases


def bench_fullres(colorizer, src: Path, dst: Path, shape: tuple[int, int], runs: int,
                  warmup: int) -> dict[str, Any]:
    """Our pipeline stage by stage on the big photo; predict_ab is also timed on an L already
    at the working size, which splits 'model+resize' into the network and the resizing."""
    import torch

    dev, (h, w) = colorizer.device, shape
    _reset_peak(dev)
    with torch.inference_mode():
        stages = time_stages(ours_stages(colorizer, src, dst), runs, warmup, dev)
        scale = colorizer.working_size / max(h, w)
        small = [torch.rand(1, max(1, round(h * scale)), max(1, round(w * scale)))]
        network = _median_time(lambda: colorizer.predict_ab(small), runs, warmup, dev)
    return {"height": h, "width": w, "stages_s": stages, "total_s": sum(stages.values()),
            "network_s": network, "slowest": max(stages, key=stages.__getitem__),
            "peak_mem_mb": _peak_mb(dev)}


def run_bench(models: Sequence[str] = ("teacher", "student"), device: str = "auto",
              sizes: Sequence[int] = (256, 512), batch: int = 8, runs: int = 5, warmup: int = 2,
              megapixels: float = 12.0, working_size: int = 256, reference: bool = True,
              peak_n: int = 2048, peak_hw: int = 64,
              progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Run every measurement and return them as one JSON-ready dict (see ``format_report``)."""
    from .inference import Colorizer
    from .train import pick_device

    if any(s < 16 or s % 16 for s in sizes):
        raise ValueError(f"sizes must be multiples of 16, got {list(sizes)}")
    if runs < 1 or warmup < 0 or batch < 1:
        raise ValueError("need --runs >= 1, --warmup >= 0 and --batch >= 1")
    dev = pick_device(device)
    settings = {"models": list(models), "sizes": list(sizes), "batch": batch, "runs": runs,
                "warmup": warmup, "megapixels": megapixels, "working_size": working_size,
                "reference": reference, "peak_matmul_n": peak_n, "peak_conv_hw": peak_hw}
    progress(f"measuring peak GFLOP/s on {dev}")
    out: dict[str, Any] = {"settings": settings, "machine": machine_info(dev),
                           "peak": measure_peaks(dev, runs, warmup, peak_n, peak_hw), "models": {}}
    with tempfile.TemporaryDirectory(prefix="retint-bench-") as tmp:
        src = Path(tmp) / "photo.jpg"
        shape = make_photo(src, megapixels)
        for spec in models:
            colorizer = Colorizer(spec, device=str(dev), working_size=working_size, batch_size=1)
            model, key, n = colorizer.model, colorizer.name, 2
            while key in out["models"]:
                key, n = f"{colorizer.name}-{n}", n + 1
            macs = count_macs(model, (1, 1, 256, 256))
            rec: dict[str, Any] = {"path": str(colorizer.model_path),
                                   "parameters": sum(p.numel() for p in model.parameters()),
                                   "macs_256": macs, "gflops_256": 2 * macs / 1e9}
            rec["latency"] = bench_latency(model, dev, sizes, batch, runs, warmup, out["peak"],
                                           lambda msg, key=key: progress(f"{key}: {msg}"))
            progress(f"{key}: full resolution {shape[1]}x{shape[0]}")
            rec["fullres"] = bench_fullres(colorizer, src, Path(tmp) / "ours.jpg", shape, runs,
                                           warmup)
            if reference:
                progress(f"{key}: reference pipeline")
                ref = time_stages(reference_stages(model, dev, src, Path(tmp) / "ref.jpg"),
                                  runs, warmup, dev)
                total = sum(ref.values())
                rec["reference"] = {"stages_s": ref, "total_s": total,
                                    "ours_over_reference": rec["fullres"]["total_s"] / total}
            out["models"][key] = rec
    return out


# ---------------------------------------------------------------- report


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table, aligned so it also reads well as plain text."""
    cells = [list(map(str, headers))] + [list(map(str, r)) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: list[str]) -> str:
        return "| " + " | ".join(c.ljust(wd) if i == 0 else c.rjust(wd)
                                 for i, (c, wd) in enumerate(zip(r, widths, strict=True))) + " |"

    rule = "|" + "|".join("-" * (wd + 1) + ("-" if i == 0 else ":")
                          for i, wd in enumerate(widths)) + "|"
    return "\n".join([line(cells[0]), rule, *map(line, cells[1:])])


def _mb(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f} MB"


def _fullres_section(name: str, v: dict[str, Any], working_size: int, rss: bool) -> list[str]:
    f = v["fullres"]
    stages, total = f["stages_s"], f["total_s"]
    resize = stages["model+resize"] - f["network_s"]
    out = ["", f"## Full resolution, {name}: {f['height'] * f['width'] / 1e6:.3g} MP "
           f"({f['width']}x{f['height']}), working size {working_size}", "",
           _table(["stage", "seconds", "share"],
                  [[n, f"{t:.3f}", f"{t / total:.0%}"] for n, t in stages.items()]
                  + [["total", f"{total:.3f}", "100%"]]),
           "", f"slowest stage: {f['slowest']} ({stages[f['slowest']] / total:.0%} of the total)",
           f"model+resize = the network at the working size ({f['network_s']:.3f} s) + shrinking L "
           f"and upsampling ab (~{max(0.0, resize):.3f} s, the difference)",
           f"peak memory: {_mb(f['peak_mem_mb'])}" + (" (process-wide peak RSS)" if rss else "")]
    if "reference" in v:
        ref = v["reference"]
        out += ["", "Reference pipeline (the original project's way; same photo, same model):", "",
                _table(["stage", "seconds"], [[n, f"{t:.3f}"] for n, t in ref["stages_s"].items()]
                       + [["total", f"{ref['total_s']:.3f}"]]),
                "", f"{name}: ours {ref['ours_over_reference']:.2f}x the reference time "
                f"({total:.3f} s vs {ref['total_s']:.3f} s)"]
    return out


def format_report(r: dict[str, Any]) -> str:
    m, s, peak = r["machine"], r["settings"], r["peak"]
    cpu_mem = not m["device"].startswith("cuda")
    ram = "n/a" if m["ram_gb"] is None else f"{m['ram_gb']:.1f} GiB"
    out = ["# retint bench", "",
           _table(["machine", ""], [
               ["CPU", m["cpu"]],
               ["cores", f"{m['cpu_count']} ({m['usable_cores']} usable), "
                         f"torch threads {m['torch_threads']}"],
               ["RAM", ram], ["torch", m["torch"]],
               ["device", f"{m['device']} ({m['device_name']})"], ["date", m["date"]]]),
           "", f"Medians of {s['runs']} run(s) after {s['warmup']} warm-up run(s).", "",
           "## Peak of this device", "",
           f"matmul {s['peak_matmul_n']}² float32: {peak['matmul_gflops']:.1f} GFLOP/s; "
           f"best of {len(_PEAK_CONVS)} float32 convolutions: {peak['conv_gflops']:.1f} GFLOP/s",
           "",
           "## Parameters and MACs", "",
           _table(["model", "parameters", "MACs @256²", "GFLOPs @256²"],
                  [[k, f"{v['parameters']:,}", f"{v['macs_256'] / 1e9:.3f} G",
                    f"{v['gflops_256']:.3f}"] for k, v in r["models"].items()]),
           "", "## Latency and throughput", "",
           _table(["model", "size", "batch", "ms/image", "images/s", "GFLOP/s",
                   "of matmul peak", "of conv peak",
                   "peak RSS (process)" if cpu_mem else "peak memory"],
                  [[k, f"{c['size']}²", c["batch"], f"{c['ms_per_image']:.2f}",
                    f"{c['images_per_s']:.1f}", f"{c['gflop_per_s']:.1f}",
                    f"{c['of_matmul_peak']:.0%}", f"{c['of_conv_peak']:.0%}",
                    _mb(c["peak_mem_mb"])]
                   for k, v in r["models"].items() for c in v["latency"].values()])]
    for k, v in r["models"].items():
        for c in v["latency"].values():
            if "encoder_ms_per_image" in c:
                out.append(f"\n{k}: its frozen pretrained encoder takes "
                           f"{c['encoder_ms_per_image']:.2f} of {c['ms_per_image']:.2f} ms per "
                           f"image at {c['size']}² batch {c['batch']} ({c['encoder_share']:.0%})")
        enc = v["latency"].get(f"{s['working_size']}px_b1", {}).get("encoder_ms_per_image")
        if enc is not None:
            total = v["fullres"]["total_s"]
            out.append(f"\n{k}: on the {s['megapixels']:g} MP photo the encoder is "
                       f"{enc / 1e3:.3f} of {total:.3f} s ({enc / 1e3 / total:.0%})")
    if cpu_mem:
        out += ["", "Memory on CPU is the process-wide peak RSS so far (ru_maxrss): it only grows "
                "from case to case, so it bounds each case from above."]
    for k, v in r["models"].items():
        out += _fullres_section(k, v, s["working_size"], cpu_mem)
    out += ["", "## Throughput as a fraction of the measured peak", ""]
    for k, v in r["models"].items():
        cases = list(v["latency"].values())
        c = next((c for c in cases if c["size"] == 256 and c["batch"] == s["batch"]), cases[-1])
        out.append(f"{k} at {c['size']}² batch {c['batch']}: {c['gflop_per_s']:.1f} GFLOP/s = "
                   f"{c['of_matmul_peak']:.0%} of the matmul peak, "
                   f"{c['of_conv_peak']:.0%} of the conv peak")
    return "\n".join(out)


def _figures(r: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Every measured number, by dotted path (settings and machine are context, not figures)."""
    found: dict[str, float] = {}
    for k, v in r.items():
        if not prefix and k in ("settings", "machine"):
            continue
        if isinstance(v, dict):
            found.update(_figures(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("size",
                                                                                  "batch"):
            found[prefix + k] = float(v)
    return found


def format_compare(old: dict[str, Any], new: dict[str, Any]) -> str:
    """old, new and new/old for each figure present in both runs."""
    a, b = _figures(old), _figures(new)
    rows = [[k, f"{a[k]:.4g}", f"{b[k]:.4g}", f"{b[k] / a[k]:.2f}" if a[k] else "n/a"]
            for k in a if k in b]
    return "\n".join([f"## Compared with {old['machine'].get('date', '?')} "
                      f"({old['machine'].get('device_name', '?')})", "",
                      _table(["figure", "old", "new", "new/old"], rows)])


# ---------------------------------------------------------------- command


def video_flicker(clip: str, models: Sequence[str], device: str) -> list[dict]:
    """Colorize a clip with each model (the same path as ``retint video``) and report fps and
    colour flicker with temporal stabilisation off and on."""
    import tempfile

    from .inference import Colorizer
    from .video import colorize_video

    rows = []
    for name in models:
        with tempfile.TemporaryDirectory() as tmp:
            report = colorize_video(clip, Path(tmp) / "out.mp4", Colorizer(name, device=device),
                                    measure_flicker=True)
        rows.append({"clip": str(clip), "model": name, "frames": report.frames,
                     "width": report.width, "height": report.height, "fps": report.fps,
                     "flicker_off": report.flicker["off"], "flicker_on": report.flicker["on"],
                     "peak_mb": report.peak_rss_mb})
    return rows


def cmd_bench(args: argparse.Namespace) -> int:
    if args.compare and len(args.compare) > 2:
        raise ValueError("--compare takes OLD.json, or OLD.json NEW.json")
    if args.compare and len(args.compare) == 2:  # two saved runs: compare, measure nothing
        old, new = (json.loads(Path(p).read_text()) for p in args.compare)
        print(format_compare(old, new))
        return 0
    quick = dict(sizes=[32], batch=2, runs=1, warmup=0, megapixels=0.05, working_size=32,
                 peak_n=256, peak_hw=16) if args.quick else {}
    options = dict(models=args.model or ["teacher", "student"], device=args.device,
                   sizes=args.sizes, batch=args.batch, runs=args.runs, warmup=args.warmup,
                   megapixels=args.megapixels, working_size=args.working_size,
                   reference=not args.skip_reference)
    results = run_bench(**{**options, **quick},
                        progress=lambda msg: print(f"bench: {msg}", file=sys.stderr, flush=True))
    if args.video:
        results["video"] = video_flicker(args.video, options["models"], args.device)
    print(format_report(results))
    for v in results.get("video", []):
        print(f"\nvideo {v['clip']}, {v['model']}: {v['frames']} frames "
              f"{v['width']}x{v['height']} at {v['fps']:.2f} fps; flicker (mean |delta ab| on "
              f"still pixels): off {v['flicker_off']:.4f}, on {v['flicker_on']:.4f} "
              f"({1 - v['flicker_on'] / v['flicker_off']:.0%} less); peak {v['peak_mb']:.0f} MB")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nsaved {args.json}")
    if args.compare:
        print("\n" + format_compare(json.loads(Path(args.compare[0]).read_text()), results))
    return 0


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure size, speed and memory of the models")
    p.add_argument("--model", action="append",
                   help="teacher, student or a path to weights; repeatable "
                        "(default: --model teacher --model student)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512],
                   help="working sizes for latency (multiples of 16)")
    p.add_argument("--batch", type=int, default=8, help="the larger batch (beside batch 1)")
    p.add_argument("--runs", type=int, default=5, help="timed runs; the median is reported")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs before them")
    p.add_argument("--megapixels", type=float, default=12.0,
                   help="size of the full-resolution test photo")
    p.add_argument("--working-size", type=int, default=256,
                   help="the Colorizer's working size for the full-resolution test")
    p.add_argument("--skip-reference", action="store_true",
                   help="skip the original project's pipeline")
    p.add_argument("--video", metavar="CLIP",
                   help="also colorize this clip: fps and flicker with stabilisation off/on")
    p.add_argument("--json", metavar="PATH", help="save settings, machine and every figure")
    p.add_argument("--compare", nargs="+", metavar="JSON",
                   help="OLD.json: compare this run with it; OLD.json NEW.json: compare two "
                        "saved runs without measuring")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes, one run: checks that everything works, in seconds")
    p.set_defaults(func=cmd_bench)
