# `make demo` runs the main job, `make test` the test suite. Both create or reuse .venv.
# `make web` serves the web app (DATA=folder), `make test-web` its browser tests: both create or reuse .venv-web
# (trame-slicer pins slicer-core 5.11, so the web app has its own lock, requirements-web.lock).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed

WEB_VENV := .venv-web
WEB_STAMP := $(WEB_VENV)/.installed
WEB_DATA := demo-output/web-data
WEB_GUIDE := demo-output/web-guide-vits16-random
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: demo test setup clean web test-web web-setup web-system

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	# torch first, so pip takes the CPU wheel that lies on this machine
	$(VENV)/bin/python -m pip install -q torch==2.13.0
	$(VENV)/bin/python -m pip install -q -r requirements.lock
	$(VENV)/bin/python -m pip install -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/guidino demo
	$(VENV)/bin/python benchmarks/demo_comparison.py demo-output

test: $(STAMP)
	$(VENV)/bin/python -m pytest

# The web venv: the engine (editable) and the modules' Lib packages on its path (a .pth file), trame-slicer, playwright
web-setup: $(WEB_STAMP)

$(WEB_STAMP): pyproject.toml requirements-web.lock
	test -x $(WEB_VENV)/bin/python || $(PYTHON) -m venv $(WEB_VENV)
	$(WEB_VENV)/bin/python -m pip install -q torch==2.13.0
	$(WEB_VENV)/bin/python -m pip install -q -r requirements-web.lock
	$(WEB_VENV)/bin/python -m pip install -q --no-deps -e .
	printf '%s\n' "$(CURDIR)/GuiDINOSegment" "$(CURDIR)/GuiDINOTrain" \
	  > "$$($(WEB_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/guidino-web.pth"
	touch $(WEB_STAMP)

# What the browser tests need from the system: Debian's chromium and Mesa's EGL (offscreen VTK rendering)
web-system:
	bash .ci/web-system

# DATA=folder of your volumes (default: a copy of the sample volume); GUIDE=hub id, folder or .pth of DINOv3 weights
# (default: random ViT-S/16 weights made here, which the page labels UNTRAINED GUIDE)
web: $(WEB_STAMP)
	@if [ -z "$(DATA)" ]; then mkdir -p $(WEB_DATA) && cp -n GuiDINOSegment/Resources/SampleData/brain1_image.nrrd $(WEB_DATA)/; fi
	@if [ -z "$(GUIDE)" ] && [ ! -d $(WEB_GUIDE) ]; then $(WEB_VENV)/bin/guidino make-tiny-guide --architecture vits16 $(WEB_GUIDE); fi
	$(WEB_VENV)/bin/python -m GuiDINOWeb --data "$(or $(DATA),$(WEB_DATA))" --guide "$(or $(GUIDE),$(WEB_GUIDE))" \
	  --host $(HOST) --port $(PORT)

test-web: $(WEB_STAMP) web-system
	$(WEB_VENV)/bin/python -m pytest -p no:cacheprovider Testing/Web

clean:
	rm -rf $(VENV) $(WEB_VENV)
