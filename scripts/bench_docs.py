"""Run ``retint bench`` with the given arguments and put its report into the results document
(block ``bench``) and its end-to-end photo figures into the README (block ``bench-summary``),
so the published figures are the command's own output, never copied by hand.

    .venv/bin/python scripts/bench_docs.py --runs 3 --warmup 1 --batch-size 8 \\
        --runtime onnx --int8 --calibration ../shared/data/imagenet-sample \\
        --compare docs/bench-before.json
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # docblock.py, beside
from docblock import write_block  # noqa: E402

GOAL = 0.6  # ours at most this fraction of the original pipeline's time, end to end


def summary(command: str, r: dict[str, Any]) -> str:
    """The 12 MP photo end to end for each model that has a reference run."""
    machine = r["machine"]
    rows = []
    for name, m in r["models"].items():
        if "reference" not in m:
            continue
        ours, ref = m["fullres"]["total_s"], m["reference"]["total_s"]
        ratio = ours / ref
        rows.append(f"| {name} | {ours:.3f} s | {ref:.3f} s | {ratio:.2f}x "
                    f"({'met' if ratio <= GOAL else 'not met'}) |")
    h, w = next(iter(r["models"].values()))["fullres"]["height"], \
        next(iter(r["models"].values()))["fullres"]["width"]
    return "\n".join([
        f"`{command}` on {machine.get('cpu', '?')} ({machine.get('date', '?')[:10]}): a "
        f"{h * w / 1e6:.0f} MP black-and-white JPEG ({w}x{h}) read, colorized at full "
        "resolution and written as a JPEG (quality 95), against the original project's "
        "pipeline on the same file with the same model (384², stretched back, quality 75):", "",
        f"| model | ours | original pipeline | ours / original (goal ≤ {GOAL}) |",
        "|---|---|---|---|", *rows, "",
        "Stage by stage, and against the code before the fast path (`--compare`), in "
        "[docs/results.md](docs/results.md#speed)."])


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "bench.json"
        argv = [sys.executable, "-m", "retint", "bench", *sys.argv[1:], "--json", str(saved)]
        report = subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True).stdout
        result = json.loads(saved.read_text())
    report = "\n".join(line for line in report.splitlines() if not line.startswith("saved "))
    print(report)
    command = "retint bench " + " ".join(sys.argv[1:])
    write_block(Path("docs/results.md"), "bench", f"`{command}`\n\n{report}")
    write_block(Path("README.md"), "bench-summary", summary(command, result))


if __name__ == "__main__":
    main()
