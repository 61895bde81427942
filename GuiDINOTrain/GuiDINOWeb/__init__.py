"""GuiDINO in the browser: a trame-slicer web app on the same engine, worker and write rule as the Slicer modules.

Runs in its own venv (``make web``: ``.venv-web``, ``requirements-web.lock``), since trame-slicer's
slicer-layer-dm pins slicer-core 5.11. Slicer's CMake install leaves this package out.

- ``SceneBinding``: makes trame-slicer's MRML scene the one the modules' Logics use (``slicer.mrmlScene``).
- ``DataFolder``: what the served folder holds and where saves go (plain Python).
- ``WebSession``: the page's decisions on MRML (open, run, refine, roll back, save, reload); no trame.
- ``AsyncTimer``: the ``JobPoller``'s timer on the server's asyncio loop.
- ``WebApp``: the page (trame widgets) wired to a ``WebSession``; ``__main__``: the command.
"""
