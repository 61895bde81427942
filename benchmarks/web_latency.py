"""The web app as a person feels it, in a real browser (Debian's chromium through playwright, headless):

- a paint stroke: from mouse-up to the painted pixels showing in a screenshot of the axial view (10 strokes on
  slices without a segment yet; median and each);
- a Refine round: from the click to the page's status line saying the round is done (new version saved and the
  slices re-segmented), with the default settings (the 20 s training budget) unless ``--refine-steps`` is given.

Run in the web venv (``make web-setup``) on an otherwise idle machine:

    .venv-web/bin/python benchmarks/web_latency.py --out runs/web-latency.json

It serves the bundled sample volume from a temporary folder with a random ViT-S/16 guide (UNTRAINED GUIDE: speed
does not depend on the weights).
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "Testing" / "Web"), str(ROOT / "Testing"), str(ROOT / "benchmarks")]

import numpy as np  # noqa: E402
from PIL import Image, ImageChops  # noqa: E402
from playwright.sync_api import expect, sync_playwright  # noqa: E402
from test_browser import (SAMPLE, VIEWPORT, open_volume, screen_point, show_axial_slice, stroke)  # noqa: E402
from webharness import CHROMIUM, ServedApp  # noqa: E402
from machine import cpu_times, steal_since  # noqa: E402

from guidino.training.settings import RefineSettings  # noqa: E402


def view_image(page):
    """The axial view as the page shows it now (a screenshot of its image element)."""
    from io import BytesIO

    return Image.open(BytesIO(page.locator("img.image-display-area").first.screenshot())).convert("RGB")


def stroke_latency(page, served, point, timeout=10.0):
    """Seconds from mouse-up to the first screenshot where the pixels around ``point`` changed."""
    box = page.locator("img.image-display-area").first.bounding_box()
    before = view_image(page)
    x, y = point
    stroke(page, x, y)  # ends with mouse-up
    released = time.perf_counter()
    cx, cy = int(x - box["x"]), int(y - box["y"])
    region = (cx - 4, cy - 4, cx + 5, cy + 5)
    while time.perf_counter() - released < timeout:
        now = view_image(page)
        if ImageChops.difference(before.crop(region), now.crop(region)).getbbox() is not None:
            return time.perf_counter() - released
    raise TimeoutError(f"the stroke at {point} did not show within {timeout} s")


def _cpuName():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strokes", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="Refine rounds (each after one more painted slice)")
    parser.add_argument("--refine-steps", type=int, help="fixed steps per round instead of the 20 s budget")
    parser.add_argument("--architecture", default="vits16", help="random guide size (tiny: a smoke run)")
    parser.add_argument("--out", help="write the measurements as JSON here")
    arguments = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="guidino-web-latency-"))
    (work / "data").mkdir()
    shutil.copy(SAMPLE / "brain1_image.nrrd", work / "data")
    from guidino.guides.hf_vit import RANDOM_ARCHITECTURES, make_tiny_guide

    guide = make_tiny_guide(work / "guide", seed=0, **RANDOM_ARCHITECTURES[arguments.architecture])
    settings = (RefineSettings() if arguments.refine_steps is None else
                RefineSettings(steps=arguments.refine_steps, time_budget=None))
    served = ServedApp(work / "data", guide=str(guide), modelsFolder=work / "models", refineSettings=settings)
    label = np.asarray(__import__("SimpleITK").GetArrayFromImage(
        __import__("SimpleITK").ReadImage(str(SAMPLE / "brain1_label.nrrd"))))

    def script(served):
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(served.url)
            open_volume(page, "brain1_image.nrrd")
            expect(page.locator(".guidino-status")).to_contain_text("Opened")
            page.locator("button:has(i.mdi-brush)").first.click()
            strokes = []
            for n in range(arguments.strokes):  # slices 0-9, each stroke at a new place on an empty slice
                show_axial_slice(page, served, n)
                strokes.append(stroke_latency(page, served, screen_point(page, served, (90 + 8 * n, 120, n))))
            page.locator(".guidino-discard input").check()  # Discard changes not saved
            open_volume(page, "brain1_image.nrrd")  # the strokes above were no corrections: start again
            expect(page.locator(".guidino-corrections")).to_contain_text("none yet")
            page.locator("button:has(i.mdi-brush)").first.click()
            rounds = []
            before = cpu_times()
            for k in (12, 15, 13, 11, 16)[:arguments.rounds]:
                show_axial_slice(page, served, k)
                rows, columns = np.nonzero(label[k])
                stroke(page, *screen_point(page, served, (columns.mean(), rows.mean(), k)))
                page.wait_for_timeout(500)
                started = time.perf_counter()
                page.locator(".guidino-refine").click()
                cancel = page.locator(".guidino-cancel")
                expect(cancel).to_be_enabled(timeout=30000)  # the round runs (the previous status is gone)
                expect(cancel).to_be_disabled(timeout=300000)
                expect(page.locator(".guidino-status")).to_contain_text("slices re-segmented", timeout=30000)
                rounds.append(time.perf_counter() - started)
                status = served.call(lambda: served.session.status)
                print(f"round: {rounds[-1]:.1f} s; {status}", flush=True)
            browser.close()
            return strokes, rounds, steal_since(before)

    try:
        strokes, rounds, steal = served.drive(script, timeout=3600)
    finally:
        served.close()
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "machine": f"{_cpuName()}, {os.cpu_count()} CPUs",
        "cpu_steal_during_rounds": steal,
        "date": time.strftime("%Y-%m-%d"),
        "guide": f"random {arguments.architecture} (UNTRAINED GUIDE)",
        "stroke_to_pixels_s": {"median": statistics.median(strokes), "each": [round(s, 3) for s in strokes]},
        "refine_round_trip_s": {"median": statistics.median(rounds), "each": [round(s, 2) for s in rounds],
                                "settings": "fixed %d steps" % arguments.refine_steps if arguments.refine_steps
                                else "default (20 s training budget)"},
    }
    print(json.dumps(result, indent=2))
    if arguments.out:
        Path(arguments.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
