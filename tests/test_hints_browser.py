"""Colour hints on the page, end to end in real headless Chromium (Debian's, driven by
Playwright; never a downloaded browser): colorize a real gray photo, open its hints, click a red
point onto a gray patch of ground, and check in the returned image that the pixels around it
turned red while a far region barely moved; then drag, undo, delete, and download the hints,
which give the same pixels through the Python API.

The hint model is the bundled one (the default teacher and its trained hint layers).
"""

from __future__ import annotations

import base64
import io
import json
import os
import time

import numpy as np
import pytest
import torch
from conftest import photo
from PIL import Image
from test_hints import lab
from test_serve import Server
from test_serve_browser import ARGS, CHROMIUM, pytestmark  # noqa: F401 - skip without chromium

from retint.inference import Colorizer
from retint.io import read_rgb, write_image

POINT = (0.8, 0.75)  # the ground of skimage's "camera", mid gray (L about 63)
FAR = (0.15, 0.1)  # the sky, far from it
SIZE = 128


def result_pixels(page) -> np.ndarray:
    """The image the editor shows (the last answer of /api/colorize), decoded."""
    b64 = page.evaluate("""async () => {
        const blob = await (await fetch(document.querySelector('#hint-img').src)).blob();
        const bytes = new Uint8Array(await blob.arrayBuffer());
        let text = ''; for (const b of bytes) text += String.fromCharCode(b);
        return btoa(text);
    }""")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def renders(page) -> int:
    return int(page.get_attribute("#hint-state", "data-renders") or 0)


def wait_render(page, after: int) -> float:
    """Wait for the next rendered result after render number ``after``; its seconds."""
    t0 = time.perf_counter()
    page.wait_for_function(f"Number(document.querySelector('#hint-state').dataset.renders || 0) "
                           f"> {after}", timeout=60_000)
    return time.perf_counter() - t0


def region(img: np.ndarray, at: tuple[float, float], half: int = 6):
    y, x = int(at[1] * img.shape[0]), int(at[0] * img.shape[1])
    return lab(np.ascontiguousarray(img[y - half : y + half + 1, x - half : x + half + 1]))


def test_a_red_hint_turns_its_region_red_in_chromium(tmp_path):
    from playwright.sync_api import sync_playwright

    model = "hints"  # the bundled hint model, trained: what users get
    src = tmp_path / "camera.png"
    write_image(src, photo("camera"))  # a real black-and-white photo
    server = Server("--model", str(model), "--size", str(SIZE))
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1000, "height": 900}, bypass_csp=True,
                                    accept_downloads=True)
            page.goto(server.url + "/")
            page.wait_for_function("document.querySelectorAll('#model option').length > 0")
            page.select_option("#format", "png")
            page.set_input_files("#file", [str(src)])
            page.wait_for_selector(".card.done .hint-open:not([disabled])", timeout=60_000)
            page.click(".card.done .hint-open")
            wait_render(page, 0)  # no hints yet: the model's automatic colour
            before = result_pixels(page)
            assert before.shape == (512, 512, 3)

            page.fill("#hint-colour", "#e02020")
            page.fill("#hint-radius", "0.03")
            box = page.locator("#hint-img").bounding_box()
            n = renders(page)
            page.mouse.click(box["x"] + POINT[0] * box["width"],
                             box["y"] + POINT[1] * box["height"])
            seconds = wait_render(page, n)
            assert page.locator(".hint-point").count() == 1
            assert "1 hint" in page.inner_text("#hint-state")
            after = result_pixels(page)
            near_before, near = region(before, POINT), region(after, POINT)
            assert float(near[1].mean()) > 25 and float(near[1].mean()) > float(
                near_before[1].mean()) + 20  # red: a* well up
            assert float(near[2].mean()) > 0  # and warm (red, not magenta)
            # far away the colour barely moves: a few levels at most where the lightness is
            # the ground's (the spread follows lightness), nothing in the bright sky
            far_moved = np.abs(after.astype(int) - before.astype(int))[:200, :200]
            assert far_moved.mean() < 3.0 and np.percentile(far_moved, 50) <= 2
            assert abs(float(region(after, FAR)[1].mean() - region(before, FAR)[1].mean())) < 1
            print(f"re-rendered with the hint in {seconds:.2f} s")
            assert seconds < 5, f"re-render took {seconds:.1f} s"  # ~1 s on an idle 2-core CPU
            # the card follows the hinted result
            assert page.get_attribute(".card .after", "src") == page.get_attribute("#hint-img",
                                                                                  "src")

            # drag the point to the sky: the colour goes with it; undo brings it back
            dot = page.locator(".hint-point").bounding_box()
            page.mouse.move(dot["x"] + dot["width"] / 2, dot["y"] + dot["height"] / 2)
            page.mouse.down()
            n = renders(page)
            for k in range(1, 6):  # up into the sky: another lightness, far away
                page.mouse.move(box["x"] + POINT[0] * box["width"],
                                box["y"] + (POINT[1] - 0.12 * k) * box["height"])
            page.mouse.up()
            wait_render(page, n)
            page.screenshot(path=str(tmp_path / "dragged.png"))
            moved = result_pixels(page)
            assert float(region(moved, POINT)[1].mean()) < float(near[1].mean()) - 10
            n = renders(page)
            page.click("#hint-undo")
            wait_render(page, n)
            assert np.array_equal(result_pixels(page), after)

            with page.expect_download() as dl:
                page.click("#hint-save")
            assert dl.value.suggested_filename == "camera.hints.json"
            saved = json.loads(open(dl.value.path()).read())
            assert len(saved) == 1 and saved[0]["colour"] == "#e02020"
            assert saved[0]["radius"] == 0.03
            assert saved[0]["x"] == pytest.approx(POINT[0], abs=0.01)
            # the page's pixels are the Python API's for the same hints (with the server's
            # number of threads: the last bit of a convolution may depend on it)
            threads = torch.get_num_threads()
            torch.set_num_threads(os.cpu_count() or 1)
            try:
                api = Colorizer(model, device="cpu", working_size=SIZE).colorize(
                    read_rgb(src), hints=saved)
            finally:
                torch.set_num_threads(threads)
            assert np.array_equal(api, after)

            page.click(".hint-point")
            n = renders(page)
            page.keyboard.press("Delete")
            wait_render(page, n)
            assert page.locator(".hint-point").count() == 0
            assert np.array_equal(result_pixels(page), before)  # no hint: automatic again
            page.screenshot(path=str(tmp_path / "hints.png"), full_page=True)
            browser.close()
    finally:
        server.stop()
