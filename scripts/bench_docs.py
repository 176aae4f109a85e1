"""Run ``retint bench`` with the given arguments and put its report into the results document
(block ``bench``), so the published figures are the command's own output, never copied by hand.

    .venv/bin/python scripts/bench_docs.py --runs 3 --warmup 1 --batch-size 8 \\
        --runtime onnx --int8 --calibration .data/pool/imagenet-sample
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # docblock.py, beside
from docblock import write_block  # noqa: E402


def main() -> None:
    argv = [sys.executable, "-m", "retint", "bench", *sys.argv[1:]]
    report = subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True).stdout
    print(report)
    command = "retint bench " + " ".join(sys.argv[1:])
    write_block(Path("docs/results.md"), "bench", f"`{command}`\n\n{report}")


if __name__ == "__main__":
    main()
