"""A repeating timer on an asyncio event loop, with the interface of the ``qt.QTimer`` a ``JobPoller`` is given.

The web server's callbacks and this timer run on one thread (the server's event loop), as Slicer's GUI and its
QTimer do: MRML is read and written from that thread only.
"""

import asyncio


class AsyncTimer:
    """``connect("timeout()", slot)``, ``start(ms)``, ``stop()``: calls each slot every ``ms`` until stopped.

    Args:
        loop: the event loop to run on (default: the running loop when ``start`` is called).
    """

    def __init__(self, loop=None):
        self.loop = loop
        self.slots = []
        self._handle = None
        self._interval = None

    def connect(self, signal, slot):
        if signal != "timeout()":
            raise ValueError(f"AsyncTimer has no signal {signal!r}")
        self.slots.append(slot)

    def start(self, intervalMs):
        self.stop()
        self.loop = self.loop or asyncio.get_running_loop()
        self._interval = intervalMs / 1000.0
        self._handle = self.loop.call_later(self._interval, self._timeout)

    def stop(self):
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None

    def isActive(self):
        return self._handle is not None

    def _timeout(self):
        self._handle = self.loop.call_later(self._interval, self._timeout)  # before the slots: a slot may stop it
        for slot in list(self.slots):
            slot()
