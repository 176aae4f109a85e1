"""The benchmark as Markdown: the report of one run, and the comparison of two saved runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..options import DEFAULT_SIZE
from .timing import PEAK_CONVS


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table, aligned so it also reads well as plain text."""
    cells = [list(map(str, headers))] + [list(map(str, r)) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: list[str]) -> str:
        return "| " + " | ".join(c.ljust(wd) if i == 0 else c.rjust(wd)
                                 for i, (c, wd) in enumerate(zip(r, widths, strict=True))) + " |"

    rule = "|" + "|".join("-" * (wd + 1) + ("-" if i == 0 else ":")
                          for i, wd in enumerate(widths)) + "|"
    return "\n".join([line(cells[0]), rule, *map(line, cells[1:])])


def _section(title: str, *body: str) -> list[str]:
    return ["", f"## {title}", "", *body]


def _mb(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f} MB"


def _machine(r: dict[str, Any]) -> list[str]:
    m, s = r["machine"], r["settings"]
    ram = "n/a" if m["ram_gb"] is None else f"{m['ram_gb']:.1f} GiB"
    rows = [["CPU", m["cpu"]],
            ["cores", f"{m['cpu_count']} ({m['usable_cores']} usable), "
                      f"torch threads {m['torch_threads']}"],
            ["RAM", ram], ["torch", m["torch"]],
            ["device", f"{m['device']} ({m['device_name']})"], ["date", m["date"]]]
    return ["# retint bench", "", table(["machine", ""], rows), "",
            f"Medians of {s['runs']} run(s) after {s['warmup']} warm-up run(s)."]


def _peak(r: dict[str, Any]) -> list[str]:
    s, peak = r["settings"], r["peak"]
    return _section("Peak of this device",
                    f"matmul {s['peak_matmul_n']}² float32: {peak['matmul_gflops']:.1f} GFLOP/s; "
                    f"best of {len(PEAK_CONVS)} float32 convolutions: "
                    f"{peak['conv_gflops']:.1f} GFLOP/s")


def _sizes(r: dict[str, Any]) -> list[str]:
    rows = [[k, f"{v['parameters']:,}", f"{v['macs_256'] / 1e9:.3f} G", f"{v['gflops_256']:.3f}"]
            for k, v in r["models"].items()]
    return _section("Parameters and MACs",
                    table(["model", "parameters", "MACs @256²", "GFLOPs @256²"], rows))


def _latency(r: dict[str, Any], cpu_mem: bool) -> list[str]:
    headers = ["model", "size", "batch", "ms/image", "images/s", "GFLOP/s", "of matmul peak",
               "of conv peak", "peak RSS (process)" if cpu_mem else "peak memory"]
    rows = [[k, f"{c['size']}²", c["batch"], f"{c['ms_per_image']:.2f}",
             f"{c['images_per_s']:.1f}", f"{c['gflop_per_s']:.1f}", f"{c['of_matmul_peak']:.0%}",
             f"{c['of_conv_peak']:.0%}", _mb(c["peak_mem_mb"])]
            for k, v in r["models"].items() for c in v["latency"].values()]
    return _section("Latency and throughput", table(headers, rows))


def _encoder_shares(r: dict[str, Any]) -> list[str]:
    """For models with a frozen pretrained encoder: its share of the time."""
    s, out = r["settings"], []
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
    return out


def _stage_table(stages: dict[str, float], total: float, shares: bool) -> str:
    if shares:
        return table(["stage", "seconds", "share"],
                     [[n, f"{t:.3f}", f"{t / total:.0%}"] for n, t in stages.items()]
                     + [["total", f"{total:.3f}", "100%"]])
    return table(["stage", "seconds"], [[n, f"{t:.3f}"] for n, t in stages.items()]
                 + [["total", f"{total:.3f}"]])


def _peak_scope(f: dict[str, Any], rss: bool) -> str:
    if "rss_start_mb" in f:
        return (f" (peak RSS of the process during this case, models loaded: "
                f"{_mb(f['rss_start_mb'])} when it began, so the photo took "
                f"{_mb(f['peak_mem_mb'] - f['rss_start_mb'])} at most)")
    return " (process-wide peak RSS)" if rss else ""


def _fullres(name: str, v: dict[str, Any], working_size: int, rss: bool) -> list[str]:
    f = v["fullres"]
    stages, total, slowest = f["stages_s"], f["total_s"], f["slowest"]
    resize = stages["model+resize"] - f["network_s"]
    out = _section(
        f"Full resolution, {name}: {f['height'] * f['width'] / 1e6:.3g} MP "
        f"({f['width']}x{f['height']}), working size {working_size}",
        _stage_table(stages, total, shares=True), "",
        f"slowest stage: {slowest} ({stages[slowest] / total:.0%} of the total)",
        f"model+resize = the network at the working size ({f['network_s']:.3f} s) + shrinking L "
        f"and upsampling ab (~{max(0.0, resize):.3f} s, the difference)",
        f"peak memory: {_mb(f['peak_mem_mb'])}" + _peak_scope(f, rss))
    if "reference" in v:
        ref = v["reference"]
        out += ["", "Reference pipeline (the original project's way; same photo, same model):", "",
                _stage_table(ref["stages_s"], ref["total_s"], shares=False), "",
                f"{name}: ours {ref['ours_over_reference']:.2f}x the reference time "
                f"({total:.3f} s vs {ref['total_s']:.3f} s, end to end)"]
    return out


def _of_peak(r: dict[str, Any]) -> list[str]:
    """Each model's throughput at the default working size and the larger batch."""
    out = []
    for k, v in r["models"].items():
        cases = list(v["latency"].values())
        c = next((c for c in cases if c["size"] == DEFAULT_SIZE
                  and c["batch"] == r["settings"]["batch"]), cases[-1])
        out.append(f"{k} at {c['size']}² batch {c['batch']}: {c['gflop_per_s']:.1f} GFLOP/s = "
                   f"{c['of_matmul_peak']:.0%} of the matmul peak, "
                   f"{c['of_conv_peak']:.0%} of the conv peak")
    return _section("Throughput as a fraction of the measured peak", *out)


def _video(v: dict[str, Any]) -> str:
    return (f"video {v['clip']}, {v['model']}: {v['frames']} frames "
            f"{v['width']}x{v['height']} at {v['fps']:.2f} fps; flicker (mean |delta ab| on "
            f"still pixels): off {v['flicker_off']:.4f}, on {v['flicker_on']:.4f} "
            f"({1 - v['flicker_on'] / v['flicker_off']:.0%} less); peak {v['peak_mb']:.0f} MB")


def format_report(r: dict[str, Any]) -> str:
    """The whole run (as :func:`~retint.bench.measure.run_bench` returns it) as Markdown."""
    cpu_mem = not r["machine"]["device"].startswith("cuda")
    out = [*_machine(r), *_peak(r), *_sizes(r), *_latency(r, cpu_mem), *_encoder_shares(r)]
    if cpu_mem:
        out += ["", "Memory on CPU is the process-wide peak RSS so far (ru_maxrss): it only grows "
                "from case to case, so it bounds each case from above."]
    for k, v in r["models"].items():
        out += _fullres(k, v, r["settings"]["working_size"], cpu_mem)
    out += _of_peak(r)
    for v in r.get("video", []):
        out += ["", _video(v)]
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
                      table(["figure", "old", "new", "new/old"], rows)])
