#!/usr/bin/env bash
# Run the tests that touch Slicer's MRML on each slicer-core version pip offers (besides the pinned one
# that `make test` uses). Each version gets its own venv holding only slicer-core and its vtk; the rest
# (torch, transformers, ...) comes from .venv. Usage, from the repository root after `make setup`:
#   bash Testing/slicer_core_versions.sh [VERSION ...]
set -euo pipefail
cd "$(dirname "$0")/.."
VERSIONS=("$@")
if [ ${#VERSIONS[@]} -eq 0 ]; then
  read -r -a VERSIONS <<< "$(.venv/bin/python -m pip index versions slicer-core 2>/dev/null \
    | sed -n 's/^Available versions: //p' | tr -d ',')"
fi
SITE=$(.venv/bin/python -c "import site; print(site.getsitepackages()[0])")
TESTS=(Testing/test_segment_logic.py Testing/test_train_logic.py Testing/test_headless_geometry.py
       Testing/test_segment_widget_thin.py Testing/test_train_widget_thin.py Testing/test_worker.py
       Testing/test_bad_inputs.py Testing/test_random_sessions.py)
status=0
for version in "${VERSIONS[@]}"; do
  venv="build/slicer-core-$version"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q slicer-core=="$version"
    own=$("$venv/bin/python" -c "import site; print(site.getsitepackages()[0])")
    echo "import site; site.addsitedir('$SITE')" > "$own/zz-guidino.pth"  # after its own slicer-core and vtk
  fi
  echo "== slicer-core $version"
  "$venv/bin/python" -m pytest -q -p no:cacheprovider "${TESTS[@]}" || status=1
done
exit $status
