"""The ``guidino`` command line as the benchmarks run it: the way a user would, in its own process."""

import subprocess
import sys


def guidino(*args, capture=False):
    """Run ``guidino <args>`` with this Python, printing the command first.

    Returns its standard output when ``capture`` (else it goes to the terminal); a failure raises
    ``RuntimeError`` with the command's error output.
    """
    args = [str(a) for a in args]
    print("$ guidino " + " ".join(args), flush=True)
    run = subprocess.run([sys.executable, "-m", "guidino.cli", *args], capture_output=capture, text=True)
    if run.returncode:
        raise RuntimeError(f"guidino {args[0]} failed (exit {run.returncode})" + (f":\n{run.stderr}" if capture else ""))
    return run.stdout if capture else None
