"""``python -m GuiDINOWeb --data FOLDER``: serve the GuiDINO web app for the volumes of FOLDER.

It binds to 127.0.0.1 unless told otherwise: the page serves patient data and has no authentication.
"""

import argparse
import atexit
import ipaddress
import logging
import os
import sys


def parseArguments(argv=None):
    parser = argparse.ArgumentParser(prog="python -m GuiDINOWeb", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="folder of volumes (NRRD, NIfTI, DICOM series folders); "
                        "saved segmentations go there under new names")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                        "only; see the README before exposing it)")
    parser.add_argument("--port", type=int, default=8080, help="port (0: any free port; default 8080)")
    parser.add_argument("--model", help="model bundle Run uses until Refine makes one (default $GUIDINO_MODEL)")
    parser.add_argument("--guide", help="guide (hub id, folder or .pth) for models Refine makes from nothing")
    parser.add_argument("--models-folder", help="where Refine saves model versions (default $GUIDINO_MODELS or "
                        "~/.cache/GuiDINO/models)")
    parser.add_argument("--refine-steps", type=int, help="train each Refine for exactly this many steps (no clock; "
                        "reproducible rounds) instead of the 20 s budget")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    return parser.parse_args(argv)


def main(argv=None):
    arguments = parseArguments(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    if not os.path.isdir(arguments.data):
        sys.exit(f"error: data folder {arguments.data} not found: give --data a folder holding your volumes")
    if not _loopback(arguments.host):
        logging.warning("GuiDINO web listens on %s: anyone who reaches this address sees the volumes of %s and can "
                        "change them; there is no authentication (see the README: put it behind a proxy that "
                        "authenticates, or reach it through an SSH tunnel)", arguments.host, arguments.data)
    from guidino.training.settings import RefineSettings
    from GuiDINOWeb.WebApp import GuiDINOWebApp

    settings = RefineSettings(seed=arguments.seed)
    if arguments.refine_steps is not None:
        settings = RefineSettings(seed=arguments.seed, steps=arguments.refine_steps, time_budget=None,
                                  min_steps=min(arguments.refine_steps, settings.min_steps))
    app = GuiDINOWebApp(arguments.data, model=arguments.model, guide=arguments.guide,
                        modelsFolder=arguments.models_folder, refineSettings=settings)
    from GuiDINOSegmentLib.WorkerClient import closeSharedWorker, startSharedWorker

    atexit.register(closeSharedWorker)  # the worker ends with the server, however it stops
    startSharedWorker()  # it imports torch while the page loads, not during the first Run
    app.server.start(host=arguments.host, port=arguments.port, open_browser=False)


def _loopback(host):
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


if __name__ == "__main__":
    main()
