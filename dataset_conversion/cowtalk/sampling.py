"""Random choice of a variant's errors and their parameters (seeded, so a variant is reproducible).

Each variant gets its own ``numpy.random.Generator`` from :func:`variant_seed` (seed, subject, variant):
variants are independent of processing order and of the number of worker processes. A sampled error is
kept only if applying it really changes what its type claims (a thinning that removes nothing or a
disconnection that leaves one piece would teach the model a wrong instruction).
"""
from __future__ import annotations

import logging
import zlib
from typing import Any, Dict, List, Optional, Tuple

import cc3d
import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from .centerline import Geometry, build_centerline
from .constants import (GLOBAL_ERROR_TYPES, INFERIOR_ORIGIN_CLASSES, LOCAL_ERROR_TYPES, PARENT_CLASS,
                        SHAPE_CHANNEL_ORDER)
from .errors import apply_error, class_bbox

logger = logging.getLogger(__name__)

#: a class needs this many centerline nodes in its main piece before local errors are tried on it
MIN_CENTERLINE_NODES = 8
#: smallest piece (voxels) that counts when checking that a disconnection really splits a vessel
MIN_PIECE_VOXELS = 8
P_NONE = 0.1
MAX_ERRORS = 3


def variant_seed(seed: int, subject: str, variant: int) -> int:
    """Stable 32-bit seed of one variant (independent of Python's hash salt and of process order)."""
    ss = np.random.SeedSequence([int(seed), zlib.crc32(subject.encode("utf-8")), int(variant)])
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def proximal_end(label_map: np.ndarray, label: int, geometry: Geometry, candidates_zyx: np.ndarray) -> int:
    """Index into ``candidates_zyx`` (centerline ends, full-volume indices) of the class's proximal end.

    BA and ICAs enter from below: their most inferior end (world z, LPS). Other classes start at their
    parent vessel (MCA at the ICA, Acom at the right ACA, ...): the end nearest it. Without a parent in
    the map, the end nearest the centroid of all vessels (the ring) is taken.
    """
    world = geometry.index_to_world(candidates_zyx)
    if label in INFERIOR_ORIGIN_CLASSES:
        return int(np.argmin(world[:, 2]))
    parents = [p for p in PARENT_CLASS.get(label, ()) if np.any(label_map == p)]
    if parents:
        target = geometry.index_to_world(np.argwhere(np.isin(label_map, parents)))
        return int(np.argmin(cKDTree(target).query(world)[0]))
    centroid = geometry.index_to_world(np.argwhere(label_map > 0).mean(axis=0, keepdims=True))
    return int(np.argmin(np.linalg.norm(world - centroid, axis=1)))


class _LocalContext:
    """Centerline measurements of one class that local-error sampling needs."""

    def __init__(self, label_map: np.ndarray, label: int, geometry: Geometry):
        crop = class_bbox(label_map, label, 2)
        self.offset = np.array([s.start for s in crop])
        mask = label_map[crop] == label
        self.spacing = list(geometry.spacing_zyx)
        self.cl = build_centerline(mask, self.spacing)
        comp = self.cl.components()
        main = np.nonzero(comp == np.argmax(np.bincount(comp)))[0]
        self.ok = len(main) >= MIN_CENTERLINE_NODES
        ends = self.cl.endpoints(main)
        anchor = ends[proximal_end(label_map, label, geometry, self.cl.coords[ends] + self.offset)]
        self.anchor_voxel = [int(v) for v in self.cl.coords[anchor] + self.offset]
        self.pct = self.cl.percent_from(anchor)
        geo = self.cl.geodesic(anchor)
        self.length_mm = float(geo[np.isfinite(geo)].max())
        self.radius_at = ndi.distance_transform_edt(mask)[tuple(self.cl.coords.T)]

    def span(self, lo: float, hi: float) -> Optional[Tuple[float, float]]:
        """(local radius, radius covering the cross-section) in voxels over the span, None if empty."""
        with np.errstate(invalid="ignore"):
            sel = (self.pct >= lo) & (self.pct <= hi)
        if not sel.any():
            return None
        return max(float(np.median(self.radius_at[sel])) - 0.5, 0.5), float(self.radius_at[sel].max()) + 1.5

    def base(self) -> Dict[str, Any]:
        return {"anchor": "proximal", "anchor_voxel": self.anchor_voxel,
                "spacing_zyx": [round(s, 6) for s in self.spacing], "cylinder_half_length": 1.0}

    def gap_width_pct(self, rng: np.random.Generator) -> float:
        """A gap 2.5-4 voxels long, as % of the vessel's length."""
        gap_mm = rng.uniform(2.5, 4.0) * float(np.mean(self.spacing))
        return min(100.0 * gap_mm / max(self.length_mm, 1e-6), 30.0)


def proximal_anchor(label_map: np.ndarray, label: int, geometry: Geometry) -> List[int]:
    """[z, y, x] of the proximal centerline end of ``label`` (the anchor local errors are measured from)."""
    return _LocalContext(np.asarray(label_map), int(label), geometry).anchor_voxel


def _r1(v: float) -> float:
    return round(float(v), 1)


def sample_params(label_map: np.ndarray, label: int, error_type: str, geometry: Geometry,
                  rng: np.random.Generator, ctx: Optional[_LocalContext] = None) -> Optional[Dict[str, Any]]:
    """Random parameters of one error on one class, or None when the class cannot carry it."""
    if error_type == "missing":
        return {}
    if error_type in ("global_thickening", "global_thinning"):
        mask = label_map == label
        depth = float(ndi.distance_transform_edt(mask).max())
        r_max = 2 if error_type == "global_thickening" else max(1, int(depth // 2))
        params: Dict[str, Any] = {"radius": int(rng.integers(1, min(r_max, 2) + 1))}
        if error_type == "global_thinning":  # the kept centerline depends on the spacing
            params["spacing_zyx"] = [round(s, 6) for s in geometry.spacing_zyx]
        return params
    ctx = ctx or _LocalContext(label_map, label, geometry)
    if not ctx.ok:
        return None
    params = ctx.base()
    if error_type in ("local_thickening", "local_thinning"):
        lo = rng.uniform(0.0, 70.0)
        lo, hi = _r1(lo), _r1(min(lo + rng.uniform(20.0, 45.0), 100.0))
        radii = ctx.span(lo, hi)
        if radii is None:
            return None
        local_r, sel_r = radii
        if error_type == "local_thickening":
            factor = rng.uniform(1.6, 2.4)
            new_r = max(local_r * factor, local_r + 1.0)
        else:
            factor = rng.uniform(0.3, 0.6)
            new_r = max(local_r * factor, 0.5)
        params.update(range_pct=[lo, hi], factor=round(float(factor), 2), local_radius=round(local_r, 2),
                      radius=round(new_r, 2), select_radius=round(sel_r, 2))
        return params
    if error_type == "shortening":
        p = _r1(rng.uniform(35.0, 80.0))
        radii = ctx.span(p, 100.0)
        if radii is None:
            return None
        params.update(range_pct=[p, 100.0], select_radius=round(radii[1], 2))
        return params
    if error_type == "disconnection":
        width = ctx.gap_width_pct(rng)
        centre = rng.uniform(20.0, 80.0)
        gaps = [[_r1(centre - width / 2), _r1(centre + width / 2)]]
    elif error_type == "fragmentation":
        long_vessel = ctx.length_mm >= 30.0 * float(np.mean(ctx.spacing))  # room for three gaps
        k = int(rng.integers(2, 4)) if long_vessel else 2
        edges = np.linspace(15.0, 85.0, k + 1)
        gaps = []
        for a, b in zip(edges[:-1], edges[1:]):
            width = ctx.gap_width_pct(rng)
            centre = rng.uniform(a + width / 2 + 2.0, max(b - width / 2 - 2.0, a + width / 2 + 2.0))
            gaps.append([_r1(centre - width / 2), _r1(centre + width / 2)])
    else:
        raise ValueError(f"unknown error type '{error_type}'")
    spans = [ctx.span(lo, hi) for lo, hi in gaps]
    if any(s is None for s in spans):
        return None
    params["select_radius"] = round(max(s[1] for s in spans), 2)
    if error_type == "disconnection":
        params["range_pct"] = gaps[0]
    else:
        params["gaps_pct"] = gaps
    return params


def _pieces(mask: np.ndarray, min_size: int) -> int:
    sizes = np.bincount(cc3d.connected_components(mask.astype(np.uint8), connectivity=26).ravel())[1:]
    return int((sizes >= min_size).sum())


def has_effect(label_map: np.ndarray, error: Dict[str, Any], new_mask: np.ndarray) -> bool:
    """Does the erroneous mask show what the error type claims (checked before an error is accepted)?"""
    old = label_map == error["label"]
    n_old, n_new = int(old.sum()), int(new_mask.sum())
    t = error["type"]
    if t == "missing":
        return n_new == 0
    if t in ("global_thickening", "local_thickening"):
        return n_new > n_old
    if t in ("global_thinning", "local_thinning"):
        return 0 < n_new < n_old
    if t == "shortening":
        return 0 < n_new < n_old
    if t in ("disconnection", "fragmentation"):
        # count only pieces a reader would call a piece: crumbs of a few voxels do not make a gap visible
        min_size = max(MIN_PIECE_VOXELS, int(0.03 * n_old))
        need = 1 if t == "disconnection" else 2
        return _pieces(new_mask, min_size) >= _pieces(old, min_size) + need
    return False


def sample_variant(label_map: np.ndarray, geometry: Geometry, rng: np.random.Generator, *,
                   p_none: float = P_NONE, max_errors: int = MAX_ERRORS
                   ) -> Tuple[List[Dict[str, Any]], Dict[int, np.ndarray]]:
    """Errors of one variant (1..max_errors on distinct present classes, or one ``none``) and their masks.

    Returns ``(errors, masks)``: ``errors`` are ``{"type", "label", "params"}`` records, ``masks`` maps a
    class to its erroneous mask so callers need not apply the errors again.
    """
    present = [t for t in SHAPE_CHANNEL_ORDER if np.any(label_map == t)]
    if not present:
        raise ValueError("the label map has no vessel class")
    if rng.random() < p_none:
        return [{"type": "none", "label": None, "params": {}}], {}
    n = int(rng.integers(1, min(max_errors, len(present)) + 1))
    classes = [int(c) for c in rng.choice(present, size=n, replace=False)]
    errors, masks = [], {}
    all_types = list(GLOBAL_ERROR_TYPES + LOCAL_ERROR_TYPES)
    for label in classes:
        ctx = None
        for error_type in rng.permutation(all_types).tolist():
            if error_type in LOCAL_ERROR_TYPES and ctx is None:
                ctx = _LocalContext(label_map, label, geometry)
            accepted = False
            for _ in range(2 if error_type in LOCAL_ERROR_TYPES else 1):
                params = sample_params(label_map, label, error_type, geometry, rng, ctx)
                if params is None:
                    break
                error = {"type": error_type, "label": label, "params": params}
                new_mask = apply_error(label_map, error)
                if has_effect(label_map, error, new_mask):
                    errors.append(error)
                    masks[label] = new_mask
                    accepted = True
                    break
            if accepted:
                break
        else:
            logger.warning("class %d: no error type had an effect; class left unchanged", label)
    if not errors:
        return [{"type": "none", "label": None, "params": {}}], {}
    return errors, masks
