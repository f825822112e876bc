"""Apply CoWTalk's synthetic segmentation errors to one TopCoW class.

Every function here is a pure function of the label map and the error's recorded parameters (no
randomness): the instruction file of a variant is enough to regenerate its erroneous shape exactly.
Parameters are sampled in :mod:`dataset_conversion.cowtalk.sampling`.

An error record is ``{"type": ..., "label": TopCoW id, "params": {...}}``; parameter keys per type:

- ``global_thickening``: ``radius`` (ball dilation, voxels; grows into background only)
- ``global_thinning``: ``radius`` (ball erosion, voxels; the centerline is kept so the class survives)
- ``missing``: none (the class is removed)
- local types share ``anchor_voxel`` ([z, y, x] numpy index of the proximal centerline end),
  ``spacing_zyx`` (mm, for geodesic distances), ``cylinder_half_length`` (voxels) and
  ``select_radius`` (voxels, covers the vessel's cross-section);
  ``local_thickening`` / ``local_thinning``: ``range_pct`` [lo, hi] and ``radius`` (new radius, voxels);
  ``shortening``: ``range_pct`` [p, 100] (everything from p % of the length on is removed);
  ``disconnection``: ``range_pct`` [lo, hi] (one gap); ``fragmentation``: ``gaps_pct`` [[lo, hi], ...].
"""
from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence, Tuple

import numpy as np
from scipy import ndimage as ndi

from .centerline import Centerline, build_centerline, cylinders, skeleton, tangents
from .constants import ERROR_TYPES, SHAPE_CHANNEL_ORDER, TOPCOW_LABELS, shape_channels

logger = logging.getLogger(__name__)


def ball(radius: int) -> np.ndarray:
    """Digital ball of the given radius (voxels) as a structuring element."""
    r = int(radius)
    z, y, x = np.mgrid[-r:r + 1, -r:r + 1, -r:r + 1]
    return (z * z + y * y + x * x) <= r * r


def class_bbox(label_map: np.ndarray, label: int, margin: int) -> Tuple[slice, ...]:
    """Bounding box of ``label`` grown by ``margin`` voxels (clipped): all work happens in this crop."""
    objs = ndi.find_objects((np.asarray(label_map) == label).astype(np.uint8))
    if not objs or objs[0] is None:
        raise ValueError(f"class {label} ({TOPCOW_LABELS.get(label, '?')}) is not present")
    return tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n))
                 for s, n in zip(objs[0], label_map.shape))


def _margin(error_type: str, params: Mapping[str, Any]) -> int:
    radii = [params.get(k, 0) for k in ("radius", "select_radius", "cylinder_half_length")]
    return int(np.ceil(max(radii + [1]))) + 3


def local_frame(mask: np.ndarray, anchor_voxel: Sequence[int], spacing_zyx: Sequence[float]
                ) -> Tuple[Centerline, np.ndarray, np.ndarray]:
    """Centerline of ``mask``, each node's % position from the node nearest ``anchor_voxel``, tangents."""
    cl = build_centerline(mask, spacing_zyx)
    pct = cl.percent_from(cl.nearest_node(anchor_voxel))
    return cl, pct, tangents(cl.coords)


def span_cylinders(cl: Centerline, pct: np.ndarray, tang: np.ndarray, lo: float, hi: float, radius: float,
                   half_length: float, shape: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """Cylinders at the skeleton nodes whose position lies in [lo, hi] %; also returns the node selection."""
    with np.errstate(invalid="ignore"):
        sel = (pct >= lo) & (pct <= hi)
    return cylinders(shape, cl.coords[sel], tang[sel], radius, half_length), sel


def _beyond(cl: Centerline, pct: np.ndarray, mask: np.ndarray, p: float) -> np.ndarray:
    """Mask voxels whose nearest skeleton node lies at >= p % (catches the vessel's rounded tip)."""
    node_at = np.full(mask.shape, -1, dtype=np.int64)
    node_at[tuple(cl.coords.T)] = np.arange(len(cl.coords))
    skel = node_at >= 0
    idx = ndi.distance_transform_edt(~skel, return_distances=False, return_indices=True)
    nearest = node_at[tuple(idx)]
    node_pct = np.where(nearest >= 0, pct[np.maximum(nearest, 0)], np.nan)
    with np.errstate(invalid="ignore"):
        return mask & (node_pct >= p)


def _apply_local(error_type: str, mask: np.ndarray, others_free: np.ndarray, params: Mapping[str, Any],
                 offset: np.ndarray) -> np.ndarray:
    anchor = np.asarray(params["anchor_voxel"], dtype=np.float64) - offset
    cl, pct, tang = local_frame(mask, anchor, params["spacing_zyx"])
    h = float(params["cylinder_half_length"])
    shape = mask.shape
    if error_type == "local_thickening":
        grown, _ = span_cylinders(cl, pct, tang, *params["range_pct"], float(params["radius"]), h, shape)
        return mask | (grown & others_free)
    if error_type == "local_thinning":
        region, sel = span_cylinders(cl, pct, tang, *params["range_pct"], float(params["select_radius"]), h, shape)
        keep, _ = span_cylinders(cl, pct, tang, *params["range_pct"], float(params["radius"]), h, shape)
        keep[tuple(cl.coords[sel].T)] = True  # the centerline stays: thinning never disconnects
        return mask & ~(region & ~keep)
    if error_type == "shortening":
        p = float(params["range_pct"][0])
        region, _ = span_cylinders(cl, pct, tang, p, 100.0, float(params["select_radius"]), h, shape)
        return mask & ~region & ~_beyond(cl, pct, mask, p)
    if error_type in ("disconnection", "fragmentation"):
        gaps = [params["range_pct"]] if error_type == "disconnection" else params["gaps_pct"]
        out = mask.copy()
        for lo, hi in gaps:
            region, _ = span_cylinders(cl, pct, tang, lo, hi, float(params["select_radius"]), h, shape)
            out &= ~region
        return out
    raise ValueError(f"unknown local error type '{error_type}'")


def apply_error(label_map: np.ndarray, error: Mapping[str, Any]) -> np.ndarray:
    """The class mask (bool, full size) of ``error['label']`` after the error; other classes are not touched.

    Growth (thickening) only claims background voxels of ``label_map``, so a corrected class never
    competes with its neighbours.
    """
    error_type, label = error["type"], int(error["label"]) if error.get("label") is not None else None
    if error_type not in ERROR_TYPES:
        raise ValueError(f"unknown error type '{error_type}' (known: {', '.join(ERROR_TYPES)})")
    label_map = np.asarray(label_map)
    full = label_map == label if label is not None else np.zeros(label_map.shape, dtype=bool)
    if error_type == "none":
        return full
    if error_type == "missing":
        return np.zeros_like(full)
    params = error.get("params", {})
    crop = class_bbox(label_map, label, _margin(error_type, params))
    mask = full[crop]
    others_free = label_map[crop] == 0
    if error_type == "global_thickening":
        new = mask | (ndi.binary_dilation(mask, ball(params["radius"])) & others_free)
    elif error_type == "global_thinning":
        core = ndi.binary_erosion(mask, ball(params["radius"]))
        new = core | skeleton(mask, params.get("spacing_zyx", (1.0, 1.0, 1.0)))
    else:
        offset = np.array([s.start for s in crop])
        new = _apply_local(error_type, mask, others_free, params, offset)
    out = full.copy()
    out[crop] = new
    return out


def apply_error_to_label_map(label_map: np.ndarray, error: Mapping[str, Any]) -> np.ndarray:
    """``label_map`` with one error applied: removed voxels become 0, added voxels (background only) the class."""
    label_map = np.asarray(label_map)
    if error["type"] == "none":
        return label_map.copy()
    label = int(error["label"])
    new_mask = apply_error(label_map, error)
    out = label_map.copy()
    out[(label_map == label) & ~new_mask] = 0
    out[new_mask & (label_map == 0)] = label
    return out


def variant_channels(label_map: np.ndarray, errors: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """The 13 binary input channels (13, Z, Y, X) uint8 of a variant.

    Each error is applied to the ground truth independently and only replaces its own class's
    channel, so channel c equals the ground-truth mask of c unless an error names c: a trainer can drop
    an error (CoWTalk's augmentation) by copying that class back from the target.
    """
    channels = shape_channels(label_map)
    for error in errors:
        if error["type"] == "none":
            continue
        channels[SHAPE_CHANNEL_ORDER.index(int(error["label"]))] = apply_error(label_map, error)
    return channels


def erroneous_label_map(label_map: np.ndarray, errors: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """All errors applied one after the other to one label map (for viewing; channels are the model input)."""
    out = np.asarray(label_map).copy()
    for error in errors:
        out = apply_error_to_label_map(out, error)
    return out
