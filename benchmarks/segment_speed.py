"""Speed and memory of slice-by-slice segmentation (BENCHMARKS.md section 2).

Guides are built with the real DINOv3 architectures but *random* weights (no pretrained weights
are reachable here): speed and memory do not depend on the weights, accuracy does.

    python benchmarks/segment_speed.py --device cpu --json out.json
    python benchmarks/segment_speed.py --device cuda --sizes 256,512 --batch-sizes 32,128,256 --json out.json
"""

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from torch.utils.flop_counter import FlopCounterMode

from guidino.bundle import build_model, save_bundle
from guidino.guides import GuideGenerator
from guidino.guides.hf_vit import RANDOM_ARCHITECTURES, make_tiny_guide
from guidino.model import ModelConfig
from guidino.runtime import tune_cpu_allocator
from machine import cpu_times, steal_since



def synthetic_ct(path, shape=(300, 512, 512), seed=0):
    """A CT-like int16 volume: a body ellipse of soft tissue with brighter organs and noise, oblique geometry."""
    rng = np.random.default_rng(seed)
    d, h, w = shape
    yy, xx = np.mgrid[:h, :w]
    body = ((yy - h / 2) / (0.42 * h)) ** 2 + ((xx - w / 2) / (0.46 * w)) ** 2 <= 1
    volume = np.full(shape, -1000, np.int16)
    for k in range(d):
        organ = ((yy - h * 0.45) / (0.12 * h)) ** 2 + ((xx - w * (0.4 + 0.1 * k / d)) / (0.1 * w)) ** 2 <= 1
        volume[k] = np.where(body, 40, -1000) + np.where(organ, 60, 0)
    volume += rng.normal(0, 20, shape).astype(np.int16)
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing((0.8, 0.8, 1.5))
    image.SetOrigin((-200.0, -180.0, -300.0))
    sitk.WriteImage(image, str(path), False)
    return path


def timed(fn, repeats, sync):
    fn()  # warm-up
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - start) / repeats


def synchronizer(device):
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def autocast(device):
    """bf16 on the GPU, fp32 on the CPU: as ``segment_volume`` runs."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def component_speed(guide, network_model, size, batch, device, repeats):
    """Slices per second of the guide alone and of the gated network alone, at one size and batch."""
    sync = synchronizer(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    steal = cpu_times()
    images = torch.rand(batch, 1, size, size, device=device).contiguous(memory_format=torch.channels_last)
    gate = torch.rand(batch, 1, size // 16, size // 16, device=device)
    with torch.inference_mode(), autocast(device):
        guide_s = timed(lambda: guide(images), repeats, sync)
        net_s = timed(lambda: network_model.network(images, gate), repeats, sync)
        with FlopCounterMode(display=False) as counter:
            guide(images[:1])
    return {"size": size, "batch": batch, "guide_slices_per_s": batch / guide_s,
            "network_slices_per_s": batch / net_s, "guide_ms_per_slice": 1000 * guide_s / batch,
            "network_ms_per_slice": 1000 * net_s / batch, "guide_gflop_per_slice": counter.get_total_flops() / 1e9,
            "guide_tflops_achieved": counter.get_total_flops() * batch / guide_s / 1e12,
            "gpu_peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
            "cpu_steal": steal_since(steal)}


PEAK_MEMORY_REPORTER = """
import sys
from guidino.cli import main
code = main(sys.argv[1:])
peak = [line for line in open('/proc/self/status') if line.startswith('VmHWM')]
print('peak resident memory:', peak[0].split(':')[1].strip() if peak else 'unknown')
sys.exit(code)
"""


def end_to_end(bundle, volume, device, batch, guide_stride):
    """``guidino segment`` as a user runs it, in its own process: seconds and peak resident memory.

    The peak is the process's own high-water mark (VmHWM), read when the command ends: rusage of a
    child started from this (large) process would report this process's memory instead.
    """
    out = Path(tempfile.mkdtemp()) / "seg.nrrd"
    command = [sys.executable, "-c", PEAK_MEMORY_REPORTER, "segment", "--model", str(bundle), "--input", str(volume),
               "--output", str(out), "--device", device.type, "--batch-size", str(batch), "--guide-stride", guide_stride]
    start, steal = time.perf_counter(), cpu_times()
    run = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if run.returncode:
        raise RuntimeError(run.stderr)
    report, peak = run.stdout.strip().splitlines()[-2:]
    kib = peak.split(":")[1].split()[0]
    return {"seconds_including_startup": seconds, "cli_report": report, "cpu_steal": steal_since(steal),
            "peak_rss_gib": int(kib) / 2**20 if kib.isdigit() else None}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--guides", default="vits16")
    parser.add_argument("--sizes", default="256")
    parser.add_argument("--batch-sizes", default="8")
    parser.add_argument("--network", default="wnet")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--volume-shape", default="300,512,512", help="slices,rows,columns of the synthetic CT; 'none' to skip it")
    parser.add_argument("--real-volume", default=None, help="also time a real volume, e.g. ../shared/data/volumes/mni152_t1.nii.gz")
    parser.add_argument("--end-to-end-batch", default="auto", help="guidino segment --batch-size")
    parser.add_argument("--guide-strides", default="auto,1", help="--guide-stride values for the end-to-end runs")
    parser.add_argument("--skip-end-to-end", action="store_true")
    parser.add_argument("--skip-components", action="store_true", help="only the end-to-end runs")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    tune_cpu_allocator()  # as the guidino command does
    device = torch.device(args.device)
    work = Path(tempfile.mkdtemp(prefix="guidino-bench-"))
    report = {"machine": {"python": platform.python_version(), "torch": torch.__version__, "device": args.device,
                          "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
                          "cpu_threads": torch.get_num_threads(), "processor": platform.processor()},
              "weights": "random (architecture only): speed and memory, not accuracy", "components": [], "end_to_end": []}
    for name in args.guides.split(","):
        folder = make_tiny_guide(work / name, **RANDOM_ARCHITECTURES[name])
        guide = GuideGenerator.load(str(folder)).to(device)
        for size in map(int, args.sizes.split(",")):
            model = build_model(ModelConfig(network=args.network, input_size=size), guide)
            baseline = build_model(ModelConfig(network=args.network, input_size=size, guided=False))
            model, baseline = (m.to(device, memory_format=torch.channels_last).eval() for m in (model, baseline))
            for batch in [] if args.skip_components else map(int, args.batch_sizes.split(",")):
                row = component_speed(guide, model, size, batch, device, args.repeats)
                sync = synchronizer(device)
                images = torch.rand(batch, 1, size, size, device=device).contiguous(memory_format=torch.channels_last)
                with torch.inference_mode(), autocast(device):
                    full = timed(lambda: model.predict(images), args.repeats, sync)
                    alone = timed(lambda: baseline.predict(images), args.repeats, sync)
                row.update({"guide": name, "guided_ms_per_slice": 1000 * full / batch,
                            "unguided_ms_per_slice": 1000 * alone / batch, "guide_overhead": full / alone})
                report["components"].append(row)
                print(json.dumps(row), flush=True)
            if not args.skip_end_to_end and size == int(args.sizes.split(",")[0]):
                bundle = save_bundle(model.cpu(), work / f"bundle-{name}-{size}")
                model.to(device)
                volumes = [Path(args.real_volume)] if args.real_volume else []
                if args.volume_shape != "none":
                    volumes.append(synthetic_ct(work / "ct.nrrd", tuple(map(int, args.volume_shape.split(",")))))
                for volume in volumes:
                    for stride in args.guide_strides.split(","):
                        row = {"guide": name, "size": size, "volume": volume.name, "guide_stride": stride,
                               **end_to_end(bundle, volume, device, args.end_to_end_batch, stride)}
                        report["end_to_end"].append(row)
                        print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
