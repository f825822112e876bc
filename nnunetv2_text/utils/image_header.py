"""Image geometry from file headers alone (no voxel data read), so inputs can be checked before any work.

One reader for the predictor's input check and the evaluation's prediction/reference check. Values are
SimpleITK's (x, y, z order, LPS world); a 4D file keeps its fourth axis in ``size``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import SimpleITK as sitk

from nnunetv2_text.errors import UserInputError


@dataclass(frozen=True)
class Geometry:
    size: Tuple[int, ...]
    spacing: Tuple[float, ...]
    origin: Tuple[float, ...]
    direction: Tuple[float, ...]

    @property
    def dimension(self) -> int:
        return len(self.size)

    def mismatch(self, other: "Geometry", tol_mm: float = 1e-3, tol_dir: float = 1e-4) -> Optional[str]:
        """Which field differs (text), or None when the two grids are the same."""
        if self.size != other.size:
            return f"size {self.size} vs {other.size}"
        if not np.allclose(self.spacing, other.spacing, rtol=0, atol=tol_mm):
            return f"spacing {self.spacing} vs {other.spacing}"
        if not np.allclose(self.origin, other.origin, rtol=0, atol=tol_mm):
            return f"origin {self.origin} vs {other.origin}"
        if not np.allclose(self.direction, other.direction, rtol=0, atol=tol_dir):
            return f"direction {self.direction} vs {other.direction}"
        return None


def read_geometry(path: Union[str, Path]) -> Geometry:
    """Geometry from the header; a file SimpleITK cannot read is a :class:`UserInputError` naming it."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise UserInputError(f"{path}: cannot read image header ({str(e).strip().splitlines()[-1]})") from None
    return Geometry(tuple(int(s) for s in reader.GetSize()), tuple(reader.GetSpacing()),
                    tuple(reader.GetOrigin()), tuple(reader.GetDirection()))
