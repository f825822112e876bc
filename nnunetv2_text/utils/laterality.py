"""Which array axis runs left-right, so that training and test-time augmentation never mirror it.

Mirroring along left-right turns a left kidney into a right one while the prompt still says "left";
VoxTell disables that one mirror axis and keeps the others. nnU-Net's readers return arrays whose axis
``a`` is the file's voxel axis ``2 - a`` (SimpleITK order; NibabelIO transposes to match). The
direction matrix (SimpleITK, LPS world) or the affine (nibabel, RAS world) says which voxel axis
points mostly along world x, the left-right axis in both conventions. The plans' ``transpose_forward``
then moves it to its place in the preprocessed arrays.
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence, Tuple

import numpy as np

logger = logging.getLogger(__name__)


def voxel_axis_along_world_x(matrix: np.ndarray) -> int:
    """matrix (3, 3): columns are voxel axes in world coordinates; the column most aligned with world x."""
    return int(np.argmax(np.abs(np.asarray(matrix, dtype=float)[0, :3])))


def left_right_axis_from_properties(properties: dict, transpose_forward: Sequence[int]) -> Optional[int]:
    """Spatial axis (0..2) of preprocessed arrays that runs left-right, or None if the geometry is unknown."""
    if "sitk_stuff" in properties and len(properties["sitk_stuff"].get("direction", ())) == 9:
        matrix = np.asarray(properties["sitk_stuff"]["direction"], float).reshape(3, 3)
    elif "nibabel_stuff" in properties:
        nib = properties["nibabel_stuff"]
        matrix = np.asarray(nib.get("reoriented_affine", nib.get("original_affine")), float)[:3, :3]
    else:
        return None
    array_axis = 2 - voxel_axis_along_world_x(matrix)
    return list(transpose_forward).index(array_axis)


def mirror_axes_without(mirror_axes: Optional[Tuple[int, ...]], left_right_axis: Optional[int]
                        ) -> Optional[Tuple[int, ...]]:
    """Drop the left-right axis; with an unknown left-right axis no mirroring is safe at all."""
    if mirror_axes is None:
        return None
    if left_right_axis is None:
        logger.warning("left-right axis unknown (no geometry in the preprocessed properties): mirroring disabled")
        return ()
    return tuple(a for a in mirror_axes if a != left_right_axis)
