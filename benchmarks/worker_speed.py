"""Segmenting through the GuiDINO worker process (what the Slicer modules do) against ``guidino segment``.

Headless: a real MRML scene (slicer-core), the Segment Logic's prepare -> worker -> apply path, and the
command line in its own process, on the same volume, bundle, batch size and guide stride. Reports
  - first-job latency: from pressing Run to the segment written, with a cold worker (process start,
    imports, model load, segmenting, applying);
  - later-job latency: the same with the worker (and its model) already loaded;
  - per-slice speed of the segmenting itself in the worker and in the command line.
Weights are random (architecture only): speed, not accuracy.
"""

import argparse
import json
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "GuiDINOSegment"), str(ROOT / "Testing")]

import torch  # noqa: E402

from command import guidino  # noqa: E402
from machine import cpu_times, steal_since  # noqa: E402
from segment_speed import synthetic_ct  # noqa: E402


def _bundle(work, guide, size, network):
    from guidino.bundle import build_model, save_bundle
    from guidino.guides.hf_vit import RANDOM_ARCHITECTURES, make_tiny_guide
    from guidino.model import ModelConfig

    torch.manual_seed(0)
    folder = make_tiny_guide(work / guide, **RANDOM_ARCHITECTURES[guide])
    return save_bundle(build_model(ModelConfig(network=network, input_size=size), str(folder)), work / "bundle")


def _through_the_worker(logic, volume, segmentation, settings):
    """One Run as the panel does it: prepare (main thread), the worker, apply. Seconds and the worker's result."""
    start = time.perf_counter()
    job = logic.prepareSegmentation(volume, segmentation, settings)
    state = logic.startSegmentation(job).wait(interval=0.005)
    if state.error is not None:
        raise RuntimeError(f"{state.error}\n{state.errorDetails}")
    result = logic.applySegmentation(job, state.result)
    return time.perf_counter() - start, state.result, result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--volume", default=None, help="a volume file (default: a synthetic CT of --shape)")
    parser.add_argument("--shape", default="120,512,512", help="slices,rows,columns of the synthetic CT")
    parser.add_argument("--guide", default="vits16")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--network", default="wnet")
    parser.add_argument("--batch-size", default="auto")
    parser.add_argument("--guide-stride", default="auto")
    parser.add_argument("--later-jobs", type=int, default=2, help="jobs after the first, on the warm worker")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from slicer_harness import HeadlessSlicer

    from GuiDINOSegmentLib import GuiDINOSegmentLogic
    from GuiDINOSegmentLib import WorkerClient
    from GuiDINOSegmentLib.SegmentSettings import SegmentSettings

    work = Path(tempfile.mkdtemp(prefix="guidino-worker-bench-"))
    bundle = _bundle(work, args.guide, args.size, args.network)
    volumePath = Path(args.volume) if args.volume else synthetic_ct(work / "ct.nrrd", tuple(map(int, args.shape.split(","))))
    report = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                          "cpu_threads": torch.get_num_threads(), "processor": platform.processor()},
              "weights": "random (architecture only): speed, not accuracy", "volume": volumePath.name,
              "guide": args.guide, "size": args.size, "batch_size": args.batch_size, "guide_stride": args.guide_stride}

    steal = cpu_times()
    start = time.perf_counter()
    printed = guidino("segment", "--model", bundle, "--input", volumePath, "--output", work / "cli.nrrd",
                      "--device", "cpu", "--batch-size", args.batch_size, "--guide-stride", args.guide_stride,
                      capture=True)
    wall = time.perf_counter() - start
    slices, seconds = re.search(r"\((\d+) slices, ([\d.]+) s", printed).groups()
    report["cli"] = {"seconds_including_startup": wall, "segmenting_seconds": float(seconds), "slices": int(slices),
                     "ms_per_slice": 1000 * float(seconds) / int(slices), "cpu_steal": steal_since(steal)}
    print(json.dumps({"cli": report["cli"]}), flush=True)

    app = HeadlessSlicer()
    try:
        volume = app.load_volume(volumePath)
        segmentation = app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "GuiDINO")
        segmentation.CreateDefaultDisplayNodes()
        logic = GuiDINOSegmentLogic()
        settings = SegmentSettings(model=str(bundle), device="cpu", batchSize=args.batch_size,
                                   guideStride=args.guide_stride)
        jobs = []
        for n in range(1 + args.later_jobs):
            steal = cpu_times()
            seconds, answer, result = _through_the_worker(logic, volume, segmentation, settings)
            row = {"job": n + 1, "worker": "cold" if n == 0 else "warm", "seconds_run_to_written": seconds,
                   "segmenting_seconds": answer.seconds, "slices": int(answer.processed.sum()),
                   "ms_per_slice": 1000 * answer.seconds / max(int(answer.processed.sum()), 1),
                   "overhead_seconds": seconds - answer.seconds, "cpu_steal": steal_since(steal)}
            jobs.append(row)
            print(json.dumps(row), flush=True)
        report["worker"] = jobs
    finally:
        WorkerClient.sharedWorker().close()
        app.close()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
