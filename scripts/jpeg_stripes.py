"""Time a 12 MP JPEG encoded in one pass against in stripes on every core (io.jpeg_in_stripes),
in one process, and check that both decode to the same pixels.

    .venv/bin/python scripts/jpeg_stripes.py [--runs 8] [--quality 95]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time

import numpy as np
from PIL import Image
from skimage import data

from retint.device import usable_cores
from retint.io import jpeg_in_stripes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--quality", type=int, default=95)
    args = ap.parse_args()
    rgb = np.asarray(Image.fromarray(data.astronaut()).resize((4000, 3000)))

    def one_pass() -> bytes:
        with tempfile.TemporaryFile() as f:  # a real file, as write_image's
            Image.fromarray(rgb).save(f, format="JPEG", quality=args.quality, subsampling=0)
            f.seek(0)
            return f.read()

    def striped() -> bytes:
        out = jpeg_in_stripes(rgb, args.quality, "4:4:4")
        if out is None:
            raise SystemExit("one core here: the one-pass encoder is what runs")
        return out

    same = np.array_equal(np.asarray(Image.open(io.BytesIO(one_pass()))),
                          np.asarray(Image.open(io.BytesIO(striped()))))
    times: dict[str, list[float]] = {"one pass": [], "striped": []}
    for _ in range(args.runs):  # alternated, so both see the same machine
        for name, encode in (("one pass", one_pass), ("striped", striped)):
            t = time.perf_counter()
            encode()
            times[name].append(time.perf_counter() - t)
    a, b = (float(np.median(times[k])) for k in ("one pass", "striped"))
    cores = usable_cores()
    print(f"12 MP JPEG, quality {args.quality}, 4:4:4, {cores} cores: one pass "
          f"{a * 1e3:.0f} ms, striped {b * 1e3:.0f} ms (medians of {args.runs}), {a / b:.2f}x; "
          f"same pixels: {same}")


if __name__ == "__main__":
    main()
