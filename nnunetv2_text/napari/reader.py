"""napari reader: a medical image opened with SimpleITK, its array as ``sitk.GetArrayFromImage`` gives it.

Why this reader: napari's own readers do not open NIfTI, and the widget's masks come back from
:class:`~nnunetv2_text.inference.api.TextSegmenter` in exactly this layout (the file's own voxel order), so
they lie on the image voxel for voxel. The voxel spacing becomes the layer's scale (z, y, x); the file's
orientation is kept in the layer's metadata. The model reads the file itself (``layer.source.path``), so
left and right come from the header, not from how napari shows the array.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional, Union

import SimpleITK as sitk

from nnunetv2_text.utils.orientation import orientation_code

#: file endings this reader opens (napari's manifest lists the same patterns)
ENDINGS = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")


def get_reader(path: Union[str, List[str]]) -> Optional[Callable[[str], list]]:
    """The reader for one medical image file, or None (napari then asks other readers)."""
    if isinstance(path, list):
        path = path[0] if len(path) == 1 else ""
    return read_image if str(path).lower().endswith(ENDINGS) else None


def read_image(path: Union[str, List[str]]) -> list:
    """``[(array (z, y, x), layer keywords, "image")]`` for napari."""
    path = str(path[0] if isinstance(path, list) else path)
    img = sitk.ReadImage(path)
    name = Path(path).name
    for ending in ENDINGS:
        if name.lower().endswith(ending):
            name = name[: -len(ending)]
    meta = {"spacing": img.GetSpacing(), "origin": img.GetOrigin(), "direction": img.GetDirection(),
            "orientation": orientation_code(img.GetDirection()) if img.GetDimension() == 3 else None}
    scale = tuple(float(s) for s in reversed(img.GetSpacing()))
    return [(sitk.GetArrayFromImage(img), {"name": name, "scale": scale, "metadata": {"sitk": meta}}, "image")]
