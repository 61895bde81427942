"""The GuiDINO web app served by the test process, driven from a real browser (Debian's chromium through
playwright), with the server's MRML scene read in between.

The server runs on the main thread's event loop (aiohttp installs signal handlers, which only the main thread
may); the browser script runs on a second thread and reaches the server's thread through ``ServedApp.call``, so
MRML is touched from the server's thread only, as in the served app.
"""

import asyncio
import itertools
import threading
import time

from trame.app import get_server

from GuiDINOWeb.WebApp import GuiDINOWebApp

CHROMIUM = "/usr/bin/chromium"  # Debian's package (.ci/web-system installs it); playwright downloads no browser
_names = itertools.count()


class ServedApp:
    """``GuiDINOWebApp(dataFolder, **arguments)``, served on 127.0.0.1 at a free port (``url``) by ``drive``."""

    def __init__(self, dataFolder, timeout=60, **arguments):
        self.timeout = timeout
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.app = GuiDINOWebApp(dataFolder, server=get_server(f"guidino-test-{next(_names)}", client_type="vue3"),
                                 **arguments)
        self.url = None

    @property
    def session(self):
        return self.app.session

    def drive(self, script, timeout=600):
        """Serve the app while ``script(self)`` runs on a second thread (a browser session); returns its result,
        or raises its exception."""
        outcome = {}

        def run():
            try:
                outcome["result"] = script(self)
            except BaseException as error:  # re-raised on the test's thread
                outcome["error"] = error

        async def serve():
            if self.url is None:
                self.app.server.start(exec_mode="task", port=0, host="127.0.0.1", open_browser=False,
                                      show_connection_info=False, disable_logging=True)
                await self.app.server.ready
                self.url = f"http://127.0.0.1:{self.app.server.port}/"
            thread = threading.Thread(target=run, name="browser", daemon=True)
            thread.start()
            end = time.monotonic() + timeout
            while thread.is_alive() and time.monotonic() < end:
                await asyncio.sleep(0.05)
            if thread.is_alive():
                raise TimeoutError(f"the browser script ran longer than {timeout} s")

        self.loop.run_until_complete(serve())
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("result")

    def call(self, function, timeout=None):
        """From the browser thread: ``function()`` run on the server's thread; its result (or exception) here."""

        async def run():
            return function()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout or self.timeout)

    def waitIdle(self, timeout=300):
        """From the browser thread: wait until no job runs; returns the session's status line."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.call(lambda: self.session.task) is None:
                return self.call(lambda: self.session.status)
            time.sleep(0.2)
        raise TimeoutError(f"the {self.call(lambda: self.session.task)} job did not end in {timeout} s")

    def close(self):
        """Stop the server and the worker process."""
        from GuiDINOSegmentLib.WorkerClient import closeSharedWorker

        try:
            self.session.shutdown()
            if self.url is not None:
                self.loop.run_until_complete(self.app.server.stop())
        finally:
            closeSharedWorker()
            pending = [task for task in asyncio.all_tasks(self.loop) if not task.done()]
            for task in pending:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.close()
