"""A synthetic TopCoW-like release: tubes arranged like a Circle of Willis, for tests and demos.

Vessels are polylines defined in a normalized head frame (x: patient left, y: posterior, z: superior,
each in [-1, 1] of the field of view), mapped to world (LPS, mm) and rasterized through each subject's
geometry, so a subject stored with a flipped direction matrix still has its right ICA on the patient's
right. Radii are in voxels. Layout written (TopCoW 2024)::

    folder/imagesTr/topcow_{ct|mr}_{NNN}_0000.nii.gz
    folder/cow_seg_labelsTr/topcow_{ct|mr}_{NNN}.nii.gz
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from .centerline import Geometry

logger = logging.getLogger(__name__)

_NODES: Dict[str, Tuple[float, float, float]] = {
    "BA0": (0.0, 0.55, -0.95), "BAtop": (0.0, 0.40, -0.10),
    "RP1": (-0.33, 0.45, -0.05), "RP2": (-0.85, 0.80, 0.15),
    "RICA0": (-0.45, -0.05, -0.97), "RICAm": (-0.42, -0.15, -0.50), "RICAt": (-0.36, -0.32, 0.0),
    "RM1": (-0.62, -0.42, 0.10), "RM2": (-0.97, -0.32, 0.32),
    "RA1": (-0.30, -0.62, 0.10), "RA2": (-0.28, -0.80, 0.85),
    "AcomMid": (0.0, -0.82, -0.25), "A3top": (0.0, -0.85, 0.85),
}
for _k, (_x, _y, _z) in list(_NODES.items()):  # the left side mirrors the right
    if _k.startswith("R"):
        _NODES["L" + _k[1:]] = (-_x, _y, _z)

#: TopCoW id -> (node path, radius in voxels), in drawing order: earlier classes keep junction voxels
_VESSELS: List[Tuple[int, Tuple[str, ...], float]] = [
    (1, ("BA0", "BAtop"), 2.3),
    (4, ("RICA0", "RICAm", "RICAt"), 2.4), (6, ("LICA0", "LICAm", "LICAt"), 2.4),
    (2, ("BAtop", "RP1", "RP2"), 1.9), (3, ("BAtop", "LP1", "LP2"), 1.9),
    (5, ("RICAt", "RM1", "RM2"), 2.0), (7, ("LICAt", "LM1", "LM2"), 2.0),
    (11, ("RICAt", "RA1", "RA2"), 1.8), (12, ("LICAt", "LA1", "LA2"), 1.8),
    (8, ("RICAt", "RP1"), 1.5), (9, ("LICAt", "LP1"), 1.5),
    (10, ("RA1", "AcomMid", "LA1"), 1.5), (15, ("AcomMid", "A3top"), 1.5),
]

_GEOMETRIES: List[Geometry] = [
    Geometry((0.5, 0.5, 0.6), (0.0, 0.0, 0.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)),
    # stored like a RAS NIfTI: x and y axes flipped, non-zero origin, anisotropic spacing
    Geometry((0.45, 0.45, 0.7), (12.5, -30.0, 40.25), (-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0)),
]


def _segment_distance(grid: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((grid - a) @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
    return np.linalg.norm(grid - (a + t[..., None] * ab), axis=-1)


def phantom_label_map(size_xyz: Sequence[int], geometry: Geometry, jitter: float = 0.0,
                      rng: np.random.Generator = None) -> np.ndarray:
    """Rasterize the Circle-of-Willis tubes into a TopCoW label map (Z, Y, X) uint8."""
    size = np.asarray(size_xyz, dtype=np.float64)
    centre_index = (size - 1) / 2.0  # x, y, z
    centre = geometry.index_to_world(centre_index[None, ::-1])[0]
    half = np.abs(np.asarray(geometry.direction).reshape(3, 3)) @ (size * np.asarray(geometry.spacing)) / 2.0
    nodes = {}
    for k, u in _NODES.items():
        u = np.asarray(u)
        if jitter and rng is not None:
            u = u + rng.normal(0.0, jitter, 3) * np.array([1.0, 1.0, 0.5])
        nodes[k] = geometry.world_to_index((centre + u * half * 0.96)[None])[0]
    shape = tuple(int(v) for v in size[::-1])
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), axis=-1)
    out = np.zeros(shape, dtype=np.uint8)
    for label, path, radius in _VESSELS:
        dist = np.full(shape, np.inf)
        for a, b in zip(path[:-1], path[1:]):
            pa, pb = nodes[a], nodes[b]
            lo = np.maximum(np.floor(np.minimum(pa, pb) - radius - 1).astype(int), 0)
            hi = np.minimum(np.ceil(np.maximum(pa, pb) + radius + 2).astype(int), shape)
            sl = tuple(slice(l, h) for l, h in zip(lo, hi))
            dist[sl] = np.minimum(dist[sl], _segment_distance(grid[sl], pa, pb))
        out[(dist <= radius) & (out == 0)] = label
    return out


def phantom_image(label_map: np.ndarray, modality: str, rng: np.random.Generator) -> np.ndarray:
    """Bright vessels on a noisy background: CT in HU (int16), MR in arbitrary units (float32)."""
    vessels = ndi.gaussian_filter((label_map > 0).astype(np.float32), 0.7)
    if modality == "ct":
        img = 40.0 + 360.0 * vessels + rng.normal(0.0, 15.0, label_map.shape)
        return np.round(img).astype(np.int16)
    img = 90.0 + 600.0 * vessels + rng.normal(0.0, 20.0, label_map.shape)
    return np.clip(img, 0, None).astype(np.float32)


def write_phantom_topcow(folder: Union[str, Path], n_subjects: int = 2, modalities: Sequence[str] = ("ct", "mr"),
                         shape: Sequence[int] = (48, 48, 32), seed: int = 0) -> List[str]:
    """Write ``n_subjects`` x ``modalities`` phantom subjects in the TopCoW 2024 layout; return their ids.

    ``shape`` is the image size in SimpleITK order (x, y, z). Subject 1 has an identity direction;
    subject 2 a flipped (RAS-like) direction, non-zero origin and anisotropic spacing.
    """
    folder = Path(folder)
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "cow_seg_labelsTr").mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(n_subjects):
        geometry = _GEOMETRIES[i % len(_GEOMETRIES)]
        for m, modality in enumerate(modalities):
            if modality not in ("ct", "mr"):
                raise ValueError(f"unknown modality '{modality}' (ct or mr)")
            rng = np.random.default_rng([seed, i, m])
            labels = phantom_label_map(shape, geometry, jitter=0.02 if i else 0.0, rng=rng)
            subject = f"topcow_{modality}_{i + 1:03d}"
            for arr, path in ((phantom_image(labels, modality, rng), folder / "imagesTr" / f"{subject}_0000.nii.gz"),
                              (labels, folder / "cow_seg_labelsTr" / f"{subject}.nii.gz")):
                img = sitk.GetImageFromArray(arr)
                img.SetSpacing(geometry.spacing)
                img.SetOrigin(geometry.origin)
                img.SetDirection(geometry.direction)
                sitk.WriteImage(img, str(path), True)
            ids.append(subject)
    logger.info("wrote %d phantom subjects to %s", len(ids), folder)
    return ids
