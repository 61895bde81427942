"""``python -m GuiDINOWeb`` as a real process: it serves on 127.0.0.1, starts the GuiDINO worker, and ends the worker
when it stops (SIGTERM or SIGINT, as a service manager or Ctrl+C stops it)."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "GuiDINOSegment" / "Resources" / "SampleData" / "brain1_image.nrrd"


def _free_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_server_serves_locally_and_its_worker_ends_with_it(tmp_path, stop):
    data = tmp_path / "data"
    data.mkdir()
    (data / SAMPLE.name).write_bytes(SAMPLE.read_bytes())
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "GuiDINOWeb", "--data", str(data), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "GUIDINO_MODELS": str(tmp_path / "models")})
    try:
        deadline, page, workers = time.monotonic() + 120, None, []
        while time.monotonic() < deadline and (page is None or not workers):
            time.sleep(0.5)
            assert server.poll() is None, server.stdout.read()
            try:
                page = page or urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
            except OSError:
                pass
            workers = [p for p in psutil.Process(server.pid).children(recursive=True)
                       if "guidino.worker" in " ".join(p.cmdline())]
        assert page and workers, "no page or no worker within 120 s"
        listening = {c.laddr.ip for c in psutil.Process(server.pid).net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN}
        assert listening == {"127.0.0.1"}, listening  # this machine only, unless told otherwise
        server.send_signal(stop)
        server.wait(60)
        gone, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, f"the worker outlived the server: {alive}"
    finally:
        if server.poll() is None:
            server.kill()
