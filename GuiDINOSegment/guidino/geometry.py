"""Image geometry (spacing, origin, direction) and its conversion between SimpleITK and Slicer.

SimpleITK and the files on disk use LPS physical coordinates; Slicer's MRML uses RAS.
Arrays are indexed (k, j, i) = (slice, row, column) in both.
"""

from dataclasses import dataclass

import numpy as np

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Geometry:
    """Spacing (mm), origin (LPS, mm) and direction (3x3, LPS, columns are the i, j, k axes)."""

    spacing: tuple
    origin: tuple
    direction: tuple  # row-major 3x3, as SimpleITK's GetDirection()

    def to_dict(self):
        """Plain lists, for JSON (the worker process's requests)."""
        return {"spacing": list(self.spacing), "origin": list(self.origin), "direction": list(self.direction)}

    @classmethod
    def from_dict(cls, data):
        return cls(tuple(data["spacing"]), tuple(data["origin"]), tuple(data["direction"]))

    @classmethod
    def from_sitk(cls, image):
        if image.GetDimension() != 3:
            raise ValueError(f"expected a 3D image, got {image.GetDimension()}D")
        return cls(tuple(image.GetSpacing()), tuple(image.GetOrigin()), tuple(image.GetDirection()))

    def apply_to(self, image):
        """Give a SimpleITK image this geometry (in place) and return it."""
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def ijk_to_ras(self):
        """The 4x4 IJK-to-RAS matrix Slicer uses for this geometry."""
        m = np.eye(4)
        direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        m[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(self.spacing)
        m[:3, 3] = _LPS_TO_RAS @ np.asarray(self.origin, dtype=float)
        return m

    @classmethod
    def from_ijk_to_ras(cls, matrix):
        """Geometry of a Slicer volume from its 4x4 IJK-to-RAS matrix."""
        m = np.asarray(matrix, dtype=float)
        lps = _LPS_TO_RAS @ m[:3, :3]
        spacing = np.linalg.norm(lps, axis=0)
        direction = lps / spacing
        origin = _LPS_TO_RAS @ m[:3, 3]
        return cls(tuple(spacing.tolist()), tuple(origin.tolist()), tuple(direction.flatten().tolist()))

    def is_close(self, other, tol=1e-6):
        return all(
            np.allclose(a, b, atol=tol)
            for a, b in ((self.spacing, other.spacing), (self.origin, other.origin), (self.direction, other.direction))
        )
