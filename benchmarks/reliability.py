"""Reliability totals for RELIABILITY.md: the bad-input table and the randomized Slicer sessions.

Runs ``Testing/test_bad_inputs.py`` and ``Testing/test_random_sessions.py`` (with ``--sessions``
sessions from seed ``--seed-start``, 160 from seed 0 by default; CI runs seeds 0-39 and the regression seeds)
under pytest, and prints the totals as markdown. Seeds no test uses find what CI's fixed ones cannot:

    .venv/bin/python benchmarks/reliability.py --sessions 1000 --seed-start 200000
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(test, env):
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"Testing/{test}"],
                          cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True)
    return done.returncode, done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "", \
        time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=160)
    parser.add_argument("--seed-start", type=int, default=0, help="the first session's seed (default 0)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        bad, sessions = Path(folder) / "bad.json", Path(folder) / "sessions.json"
        code1, line1, seconds1 = run("test_bad_inputs.py", {"GUIDINO_BAD_INPUT_REPORT": str(bad)})
        code2, line2, seconds2 = run("test_random_sessions.py", {
            "GUIDINO_SESSIONS": str(args.sessions), "GUIDINO_SESSIONS_SEED_START": str(args.seed_start),
            "GUIDINO_SESSIONS_REPORT": str(sessions)})
        bad, sessions = json.loads(bad.read_text()), json.loads(sessions.read_text())
    ended = ": killed by a signal, the sessions did not all run" if code2 < 0 else ""
    print(f"bad-input table: {line1} ({seconds1:.0f} s, exit code {code1})")
    print(f"random sessions (seeds {args.seed_start}-{args.seed_start + args.sessions - 1} and the regression "
          f"seeds): {line2} ({seconds2:.0f} s, exit code {code2}{ended})\n")
    print("| what | total |\n|---|---|")
    print(f"| bad-input cases | {bad['cases']} |")
    print(f"| clear refusals (exit code and one line naming the problem and the fix) | {bad['clear_refusals']} |")
    print(f"| accepted (the input was in fact fine) | {bad['accepted']} |")
    print(f"| tracebacks | {bad['tracebacks']} |")
    print(f"| user files changed | {bad['user_files_changed']} |")
    print(f"| random sessions / steps | {sessions['sessions']} / {sessions['steps']} |")
    print(f"| user voxels lost | {sessions['user_voxels_lost']} |")
    print(f"| refusals during sessions (e.g. refine before any correction) | {sessions['refused']} |")
    print("| steps by action | " + ", ".join(f"{k} {v}" for k, v in sorted(sessions["by_action"].items())) + " |")
    return code1 or code2


if __name__ == "__main__":
    sys.exit(main())
