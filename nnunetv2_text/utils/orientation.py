"""Canonical orientation: every text model reads its images in one orientation, whatever their headers say.

A "left kidney" prompt means the patient's left. nnU-Net's default reader returns arrays in storage
order, so the same patient stored RAS or LPS reaches the network mirrored, and a network that learned
"left" as an array side answers with the wrong organ. nnU-Net's own remedy is a reorienting reader named
in dataset.json (``overwrite_image_reader_writer``): images are turned to RAS on reading and
predictions are written back in each input's own orientation, for planning, training, validation and
prediction alike. Text models require it (the trainer and ``nnUNetv2_text_embed`` stop without it).

World coordinates here are SimpleITK's (LPS: +x towards the patient's left, +y posterior, +z superior).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from nnunetv2_text.errors import UserInputError

#: nnU-Net readers that reorient every image to RAS on reading and write predictions back
CANONICAL_READERS = ("SimpleITKIOWithReorient", "NibabelIOWithReorient")
#: what our dataset writers use: SimpleITK reads every format nnU-Net's default reader reads
DEFAULT_CANONICAL_READER = "SimpleITKIOWithReorient"
READER_KEY = "overwrite_image_reader_writer"


class OrientationError(UserInputError):
    """A dataset without canonical orientation, or an image whose direction matrix is unusable."""


def canonical_reader(dataset_json: dict, plans: Optional[dict] = None) -> Optional[str]:
    """The reorienting reader images are read with, or None when they are read in storage order.

    The plans decide (nnU-Net copies the dataset.json reader into them when planning, and reads with the
    plans' reader from then on); without plans, dataset.json does."""
    name = plans.get("image_reader_writer") if plans is not None else dataset_json.get(READER_KEY)
    return name if name in CANONICAL_READERS else None


def require_canonical_orientation(dataset_json: dict, dataset: str, plans: Optional[dict] = None) -> str:
    """Stop with the one line to add when a dataset would be read in storage order."""
    name = canonical_reader(dataset_json, plans)
    if name is not None:
        return name
    rerun = "then rerun nnUNetv2_plan_and_preprocess and nnUNetv2_text_embed (the preprocessed arrays change)"
    if canonical_reader(dataset_json) is not None:  # the line is there, the plans predate it
        raise OrientationError(
            f"{dataset}: dataset.json names {dataset_json[READER_KEY]}, but the plans "
            f"'{plans.get('plans_name')}' read with {plans.get('image_reader_writer')} (planned before the line was "
            f"added): {rerun}")
    current = dataset_json.get(READER_KEY)
    raise OrientationError(
        f"{dataset}: text models need images in one canonical orientation (left and right are the "
        f"patient's, not the array's), but dataset.json "
        f"{'names ' + repr(current) if current else 'names no reader'}. Add this line to "
        f"nnUNet_raw/{dataset}/dataset.json:\n"
        f'    "{READER_KEY}": "{DEFAULT_CANONICAL_READER}",\n{rerun}')


def check_direction(direction: Sequence[float], where: str, tol: float = 1e-3) -> np.ndarray:
    """(3, 3) direction matrix (columns: voxel axes in world) or an error naming ``where``.

    Reorientation only permutes and flips axes, so the matrix must be a rotation or reflection: its
    columns unit length and mutually orthogonal."""
    d = np.asarray(direction, dtype=float)
    n = int(round(np.sqrt(d.size)))
    if n * n != d.size or n < 3:
        raise OrientationError(f"{where}: direction has {d.size} entries, a 3D direction matrix has 9")
    d = d.reshape(n, n)[:3, :3]
    if not np.all(np.isfinite(d)) or abs(np.linalg.det(d)) < 1e-6:
        raise OrientationError(f"{where}: degenerate direction matrix {d.round(4).tolist()} (determinant 0); "
                               f"the image's axes cannot be placed in patient space")
    if not np.allclose(d.T @ d, np.eye(3), atol=tol):
        raise OrientationError(f"{where}: direction matrix {d.round(4).tolist()} is not orthonormal (its axes "
                               f"are not unit length or not perpendicular); fix the image header")
    return d


def orientation_code(direction: Sequence[float]) -> str:
    """Three letters (ITK's convention, e.g. 'LPS' for the identity): where each voxel axis points."""
    d = np.asarray(direction, dtype=float).reshape(-1)
    if d.size == 16:
        d = d.reshape(4, 4)[:3, :3].reshape(-1)
    return sitk.DICOMOrientImageFilter_GetOrientationFromDirectionCosines([float(x) for x in d])


#: the orientation pictures are drawn from: array (z, y, x) = (inferior->superior, anterior->posterior,
#: right->left), SimpleITK's identity direction
DRAWING_ORIENTATION = "LPS"


def in_patient_axes(image: sitk.Image) -> sitk.Image:
    """The image with its voxel axes along the patient's (:data:`DRAWING_ORIENTATION`), whatever the storage.

    A picture drawn from the stored array would put the patient's left wherever the file happens to keep
    it; after this, an array column further right is further to the patient's left, one row further down
    further posterior, one slice further on higher up. Only axes are permuted and flipped (voxels move, no
    interpolation), as the canonical readers do."""
    return sitk.DICOMOrient(image, DRAWING_ORIENTATION)


def properties_orientation(properties: dict) -> Optional[str]:
    """The orientation an image was stored in, from nnU-Net's reader properties (None if unknown)."""
    sitk_stuff = properties.get("sitk_stuff") or {}
    if "original_orientation" in sitk_stuff:
        return sitk_stuff["original_orientation"]
    if len(sitk_stuff.get("direction", ())) == 9:
        return orientation_code(sitk_stuff["direction"])
    nib = properties.get("nibabel_stuff") or {}
    if "original_affine" in nib:
        a = np.asarray(nib["original_affine"], float)[:3, :3]
        return orientation_code(np.diag([-1.0, -1.0, 1.0]) @ (a / np.linalg.norm(a, axis=0)))
    return None


def index_to_world(properties: dict) -> Optional[np.ndarray]:
    """(4, 4) matrix from array indices (in the reader's array order) to LPS world mm, or None.

    Works for nnU-Net's SimpleITK readers (arrays are (z, y, x) of the image as read, reoriented or not)
    and its nibabel readers (arrays transposed to match; affines in RAS)."""
    sitk_stuff = properties.get("sitk_stuff") or {}
    if len(sitk_stuff.get("direction", ())) == 9:
        d = np.asarray(sitk_stuff["direction"], float).reshape(3, 3)
        m = d @ np.diag(np.asarray(sitk_stuff["spacing"], float))  # voxel (x, y, z) -> world
        m = m[:, ::-1]  # array index (z, y, x)
        origin = np.asarray(sitk_stuff["origin"], float)
    else:
        nib = properties.get("nibabel_stuff") or {}
        affine = nib.get("reoriented_affine", nib.get("original_affine"))
        if affine is None:
            return None
        affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, float)  # RAS -> LPS
        m = affine[:3, :3][:, ::-1]  # nnU-Net's nibabel readers transpose voxel (i, j, k) to (k, j, i)
        origin = affine[:3, 3]
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = m, origin
    return out


def world_summary(mask: np.ndarray, properties: dict) -> Dict[str, object]:
    """Volume in mm³ and centroid in LPS world mm of a binary mask in the reader's array order."""
    idx = np.argwhere(mask)
    m = index_to_world(properties)
    if m is None:
        raise ValueError("image geometry unknown: the reader's properties carry no direction")
    voxel_mm3 = abs(float(np.linalg.det(m[:3, :3])))
    if len(idx) == 0:
        return {"volume_mm3": 0.0, "centroid_mm": None}
    centre = m[:3, :3] @ idx.mean(0) + m[:3, 3]
    return {"volume_mm3": round(len(idx) * voxel_mm3, 3), "centroid_mm": [round(float(c), 2) for c in centre]}


def to_storage_layout(array: np.ndarray, properties: dict) -> np.ndarray:
    """An array in the reader's (canonical) order back in the file's own voxel layout.

    The predictor's export writes files through the reader/writer, which does this itself; the Python API
    returns arrays, which must match the input file's layout as ``sitk.GetArrayFromImage`` gives it."""
    sitk_stuff = properties.get("sitk_stuff") or {}
    original = sitk_stuff.get("original_orientation")
    if original is not None:
        dtype = array.dtype
        # SimpleITK has no float16 (saved probabilities); the reorientation only moves voxels, so a
        # round trip through float32 is exact
        img = sitk.GetImageFromArray(np.ascontiguousarray(array, np.float32 if dtype == np.float16 else None))
        img.SetDirection(sitk_stuff["direction"])
        return sitk.GetArrayFromImage(sitk.DICOMOrient(img, original)).astype(dtype, copy=False)
    nib = properties.get("nibabel_stuff") or {}
    if "reoriented_affine" in nib:
        import nibabel

        # the reader's array is the RAS image transposed to (k, j, i); undo the transpose, then the reorientation
        ras = np.asarray(array).transpose(2, 1, 0)
        ornt = nibabel.orientations.ornt_transform(
            nibabel.orientations.io_orientation(nib["reoriented_affine"]),
            nibabel.orientations.io_orientation(nib["original_affine"]))
        stored = nibabel.orientations.apply_orientation(ras, ornt)
        return np.ascontiguousarray(stored.transpose(2, 1, 0))
    return array
