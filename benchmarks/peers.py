"""GuiDINO's peers at equal effort: what a user gets from the same labelled slices without GuiDINO.

- do nothing: the labelled slices alone (every other slice empty);
- Fill between slices: Slicer's effect of that name, ``vtkITKMorphologicalContourInterpolator`` from
  slicer-core with the effect's settings (the defaults), run on the labelled slices only: slices
  outside the first..last labelled slice stay empty, as in Slicer.

Arrays are numpy (slices, rows, columns) label volumes, ``axis`` the array axis the slices are cut
along. This file is benchmark code: it imports VTK, so it never goes into the engine package.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def do_nothing(truth, slices, axis):
    """The true label on ``slices`` (along ``axis``), empty elsewhere: what the user drew, and all they get."""
    drawn = np.zeros(truth.shape, np.uint8)
    index = [slice(None)] * truth.ndim
    index[axis] = list(slices)
    drawn[tuple(index)] = (truth[tuple(index)] > 0)
    return drawn


# slicer-core's interpolator leaves something that crashes the interpreter as it exits (exit 139, seen with
# slicer-core 5.13 after 3 labelled slices of a synthetic blob): it runs in a child process that ends
# without the interpreter's teardown, so that no caller dies with it.
_FILL = """
import os, sys
import numpy as np
from vtkmodules.util import numpy_support
from vtkmodules.vtkCommonDataModel import vtkImageData
from slicer import vtkITKMorphologicalContourInterpolator
data = np.load(sys.argv[1])
drawn, spacing = data["drawn"], data["spacing"]
image = vtkImageData()
image.SetDimensions(drawn.shape[2], drawn.shape[1], drawn.shape[0])
image.SetSpacing(spacing[2], spacing[1], spacing[0])
image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(drawn.ravel(order="C"), deep=True))
interpolator = vtkITKMorphologicalContourInterpolator()  # Slicer's effect: the defaults
interpolator.SetInputData(image)
interpolator.Update()
filled = numpy_support.vtk_to_numpy(interpolator.GetOutput().GetPointData().GetScalars())
np.save(sys.argv[2], (filled.reshape(drawn.shape) > 0).astype(np.uint8))
sys.stdout.flush()
os._exit(0)
"""


def fill_between_slices(truth, slices, axis, spacing=(1.0, 1.0, 1.0)):
    """Slicer's Fill between slices from the labelled ``slices``. ``spacing`` in array order (z, y, x)."""
    drawn = do_nothing(truth, slices, axis)
    with tempfile.TemporaryDirectory(prefix="guidino-fill-") as folder:
        source, result = Path(folder) / "in.npz", Path(folder) / "out.npy"
        np.savez(source, drawn=drawn, spacing=np.asarray(spacing, float))
        run = subprocess.run([sys.executable, "-c", _FILL, str(source), str(result)], capture_output=True, text=True)
        if run.returncode or not result.is_file():
            raise RuntimeError(f"Fill between slices failed (exit {run.returncode}): {run.stderr.strip()[-500:]}")
        return np.load(result)
