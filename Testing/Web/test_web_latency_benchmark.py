"""``benchmarks/web_latency.py`` (BENCHMARKS.md section 6) still runs: a smoke run, two strokes and one short round."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_web_latency_benchmark_measures_strokes_and_a_round(tmp_path):
    out = tmp_path / "latency.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "web_latency.py"), "--strokes", "2", "--rounds",
                           "1", "--refine-steps", "5", "--architecture", "tiny", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    result = json.loads(out.read_text())
    assert len(result["stroke_to_pixels_s"]["each"]) == 2 and 0 < result["stroke_to_pixels_s"]["median"] < 10
    assert len(result["refine_round_trip_s"]["each"]) == 1 and result["refine_round_trip_s"]["median"] > 0
    assert result["guide"] == "random tiny (UNTRAINED GUIDE)"
    assert "Saved brain1_image-v001" in done.stdout
