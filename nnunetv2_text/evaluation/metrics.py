"""Per-mask metrics with TopCoW conventions (see docs/EVALUATION.md for the empty-mask rules).

Surface metrics come from DeepMind's ``surface-distance``, skeletons from scikit-image, components from
``cc3d``. Masks are numpy arrays in SimpleITK's array order (z, y, x); ``spacing`` is therefore given in
that order too (``image.GetSpacing()[::-1]``).
"""
from __future__ import annotations

import logging
import math
import re
import warnings
from typing import Dict, Sequence, Tuple

import cc3d
import numpy as np
import surface_distance
from scipy import ndimage
from skimage.morphology import skeletonize

from nnunetv2_text.text.sides import prompt_side

logger = logging.getLogger(__name__)

SpacingZYX = Tuple[float, float, float]

#: the quality metrics of :func:`mask_metrics` (summarized over positive prompts in reports)
METRIC_NAMES = ("dice", "nsd", "hd95_mm", "cldice", "betti0_error")


def _crop_pair(a: np.ndarray, b: np.ndarray, margin: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """Crop both masks to the bounding box of their union plus a zero margin (speed only)."""
    union = a | b
    if not union.any():
        return a[:0, :0, :0], b[:0, :0, :0]
    lo, hi = [], []
    for ax in range(union.ndim):
        proj = np.flatnonzero(union.any(axis=tuple(i for i in range(union.ndim) if i != ax)))
        lo.append(int(proj[0]))
        hi.append(int(proj[-1]) + 1)
    sl = tuple(slice(l, h) for l, h in zip(lo, hi))
    pad = [(margin, margin)] * union.ndim
    return np.pad(a[sl], pad), np.pad(b[sl], pad)


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Volumetric Dice, the project's only implementation; 1.0 when both masks are empty.

    Both empty is the correct answer to a prompt whose structure is absent, so it scores 1 (MONAI's
    ``ignore_empty=False``). Summaries that average Dice state which (case, prompt) pairs they average:
    the reports, the trainer's validation and the demo average over pairs whose reference is present
    and count the absent ones separately, so a mean Dice never mixes in these 1.0s.
    """
    pred, ref = pred.astype(bool, copy=False), ref.astype(bool, copy=False)
    total = int(pred.sum()) + int(ref.sum())
    if total == 0:
        return 1.0
    return float(surface_distance.compute_dice_coefficient(ref, pred))


def surface_metrics(pred: np.ndarray, ref: np.ndarray, spacing: SpacingZYX,
                    tolerance_mm: float = 1.0) -> Tuple[float, float]:
    """(NSD at ``tolerance_mm``, HD95 in mm) from surface-distance.

    Empty masks: surface-distance defines every distance to an empty surface as ``inf``, so one empty
    mask gives NSD 0 and HD95 inf; both empty gives NSD 1 (nothing to disagree on) and HD95 inf.
    These cases are decided here because the library's own empty branch uses ``np.Inf``, which NumPy 2
    removed.
    """
    pred, ref = pred.astype(bool, copy=False), ref.astype(bool, copy=False)
    has_p, has_r = bool(pred.any()), bool(ref.any())
    if not has_p and not has_r:
        return 1.0, math.inf
    if not (has_p and has_r):
        return 0.0, math.inf
    with warnings.catch_warnings():  # the library still uses scipy.ndimage's deprecated sub-namespaces
        warnings.simplefilter("ignore", DeprecationWarning)
        dists = surface_distance.compute_surface_distances(ref, pred, [float(s) for s in spacing])
    nsd = float(surface_distance.compute_surface_dice_at_tolerance(dists, tolerance_mm))
    hd95 = float(surface_distance.compute_robust_hausdorff(dists, 95))
    return nsd, hd95


def robust_skeleton(mask: np.ndarray) -> np.ndarray:
    """Skeleton (scikit-image, Lee 3D) that keeps one voxel for every component.

    scikit-image erases some blobs entirely (e.g. even-sized cubes); a vanished component would then
    not count in clDice, so its most interior voxel is put back.
    """
    mask = mask.astype(bool, copy=False)
    skel = skeletonize(mask).astype(bool)
    labels, n = cc3d.connected_components(mask, connectivity=26, return_N=True)
    if n == 0:
        return skel
    kept = np.unique(labels[skel])
    missing = sorted(set(range(1, n + 1)) - set(int(k) for k in kept))
    if missing:
        depth = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1, 1:-1]
        for pos in ndimage.maximum_position(depth, labels, missing):
            skel[tuple(int(p) for p in pos)] = True
    return skel


def cldice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Centerline Dice (Shit et al. 2021): harmonic mean of topology precision and sensitivity.

    Tprec = |S(pred) ∩ ref| / |S(pred)|, Tsens = |S(ref) ∩ pred| / |S(ref)|. Both empty: 1; one empty: 0.
    Skeletons ignore spacing (voxel grid), as in the TopCoW evaluation.
    """
    p, r = _crop_pair(pred.astype(bool, copy=False), ref.astype(bool, copy=False))
    has_p, has_r = bool(p.any()), bool(r.any())
    if not has_p and not has_r:
        return 1.0
    if not (has_p and has_r):
        return 0.0
    sp, sr = robust_skeleton(p), robust_skeleton(r)
    tprec = float((sp & r).sum()) / float(sp.sum())
    tsens = float((sr & p).sum()) / float(sr.sum())
    if tprec + tsens == 0:
        return 0.0
    return 2.0 * tprec * tsens / (tprec + tsens)


def n_components(mask: np.ndarray) -> int:
    """Number of 26-connected foreground components (Betti-0)."""
    _, n = cc3d.connected_components(mask.astype(bool, copy=False), connectivity=26, return_N=True)
    return int(n)


def false_positive_islands(pred: np.ndarray, ref: np.ndarray) -> int:
    """Connected components (26-connectivity) of ``pred`` that touch no voxel of ``ref``: the stray blobs
    users of text-prompted models count by the thousands (VoxTell #13), which Dice barely sees."""
    labels, n = cc3d.connected_components(pred.astype(bool, copy=False), connectivity=26, return_N=True)
    if n == 0:
        return 0
    touching = np.unique(labels[ref.astype(bool, copy=False) & (labels > 0)])
    return int(n - touching.size)


def betti0_error(pred: np.ndarray, ref: np.ndarray) -> int:
    """|#components(pred) - #components(ref)|, 26-connectivity (TopCoW)."""
    return abs(n_components(pred) - n_components(ref))


def volume_ml(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Foreground volume in millilitres (1 ml = 1000 mm^3)."""
    return float(np.count_nonzero(mask)) * float(np.prod(spacing)) / 1000.0


def wrong_side_fraction(pred: np.ndarray, ref_counterpart: np.ndarray) -> float:
    """Fraction of predicted voxels lying in the opposite side's reference structure (NaN if empty).

    For a "left X" prompt, ``ref_counterpart`` is the reference "right X": 1.0 means the model segmented
    the wrong side entirely.
    """
    n = int(np.count_nonzero(pred))
    if n == 0:
        return math.nan
    return float(np.count_nonzero(pred.astype(bool, copy=False) & ref_counterpart.astype(bool, copy=False))) / n


def mask_metrics(pred: np.ndarray, ref: np.ndarray, spacing: SpacingZYX, tolerance_mm: float = 1.0,
                 tubular: bool = True) -> Dict[str, float]:
    """All per-mask metrics of one prediction; clDice only for tubular structures (else NaN)."""
    pred, ref = pred.astype(bool, copy=False), ref.astype(bool, copy=False)
    nsd, hd95 = surface_metrics(pred, ref, spacing, tolerance_mm)
    return {
        "dice": dice(pred, ref),
        "nsd": nsd,
        "hd95_mm": hd95,
        "cldice": cldice(pred, ref) if tubular else math.nan,
        "betti0_error": float(betti0_error(pred, ref)),
        "pred_volume_ml": volume_ml(pred, spacing),
        "ref_volume_ml": volume_ml(ref, spacing),
    }


# ----------------------------------------------------------------------------- laterality
_SIDE = re.compile(r"\b(left|right)\b")


def laterality_pairs(mains: Dict[str, str]) -> Dict[str, str]:
    """Map concept id -> id of its mirror concept, pairing main terms that differ only by left/right.

    ``mains`` maps concept id -> main term (plain English, as vocabularies require). Which side a term
    names is read by the predictor's own rule (:func:`nnunetv2_text.text.sides.prompt_side`), so the
    evaluation never disagrees with what a prompt was understood as. Concepts without a mirror are absent
    from the result.
    """
    by_main = {" ".join(m.lower().split()): cid for cid, m in mains.items()}
    out: Dict[str, str] = {}
    for cid, main in mains.items():
        key = " ".join(main.lower().split())
        side = prompt_side(key)
        if side not in ("left", "right"):
            continue
        other = "right" if side == "left" else "left"
        mirror = _SIDE.sub(lambda m: other if m.group(1) == side else m.group(1), key)
        if mirror in by_main and by_main[mirror] != cid:
            out[cid] = by_main[mirror]
    return out
