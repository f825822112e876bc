"""Overlay pictures: each prompt's mask outlined on its image, one PNG per case (``overlays/<case>.png``).

Why: the manifest says what a prompt was understood as and how many voxels it got; only a picture shows
whether those voxels are the structure. Each prompt that found something gets a row: the image in three
orthogonal slices through its mask, every mask outlined in its own colour (and, drawn by
``nnUNetv2_text_evaluate``, the reference in white). A legend names each prompt, what it was understood
as and its flag; a prompt that came back empty is listed as such and draws nothing.

Orientation: image and masks are first turned to the patient's axes (:func:`in_patient_axes`), then drawn
as radiologists read them: the patient's left on the viewer's right in axial and coronal slices, anterior
at the top of an axial slice, superior at the top of coronal and sagittal ones (anterior on a sagittal
slice's left), pixels stretched by the voxel spacing. Letters at the panel edges and a line in the
picture say so, because a reader cannot tell from the picture alone.

Outlines are pixels of one exact colour (drawn nearest-neighbour, never blended), so that they can be
found again in the PNG; the figure is written uncropped and :class:`Panel` records where each slice
landed in it. Drawn with matplotlib's Agg canvas, as the other plots (:mod:`.plots`); no torch.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy import ndimage

from nnunetv2_text.errors import UserInputError
from nnunetv2_text.evaluation.plots import save_figure
from nnunetv2_text.utils.orientation import in_patient_axes

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
Colour = Tuple[int, int, int]

#: the folder, inside a prediction or evaluation folder, that holds ``<case>.png``
OVERLAYS = "overlays"
#: one colour per prompt in prompt order (cycled after the last): none grey or white, so that no outline
#: can be mistaken for the image or the reference
PALETTE: Tuple[Colour, ...] = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
                               (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 128, 128),
                               (170, 110, 40), (128, 0, 0))
REFERENCE_COLOUR: Colour = (255, 255, 255)
#: the image's greys stop short of white, so that white is the reference outline's alone
GREYS = ListedColormap(np.repeat(np.linspace(0.0, 0.8, 256)[:, None], 3, 1), name="greys_below_white")
VIEWS = ("axial", "coronal", "sagittal")
#: the array axis (z, y, x in the patient's axes) that each view slices
VIEW_AXIS = {"axial": 0, "coronal": 1, "sagittal": 2}
#: the patient's side at the (left, right, top, bottom) edge of each view, as drawn
EDGES = {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I"), "sagittal": ("A", "P", "S", "I")}
ORIENTATION_NOTE = ("Radiological view: the patient's left is on the viewer's right "
                    "(letters mark the patient's sides: R/L, A/P, S/I)")
DPI = 100
PANEL_INCHES = 2.6
_HEADER_INCHES, _LEGEND_LINE_INCHES = 0.55, 0.2


class OverlayError(UserInputError):
    """An image and its masks that cannot be drawn together (different grids); the message names the files."""


@dataclass(frozen=True)
class Panel:
    """Where one slice landed: the row's prompt (None in the one row of a case where nothing was found),
    the view, the slice's index along the view's axis (in the patient's axes) and its pixel box
    ``(left, top, right, bottom)`` in the PNG."""
    prompt: Optional[str]
    view: str
    index: int
    box: Tuple[int, int, int, int]


def prompt_colours(prompts: Sequence[str]) -> Dict[str, Colour]:
    """Each prompt's outline colour; empty prompts keep theirs, so the colours do not shift between cases."""
    return {p: PALETTE[i % len(PALETTE)] for i, p in enumerate(prompts)}


def view_slice(volume: np.ndarray, view: str, index: int) -> np.ndarray:
    """One slice of a (z, y, x) array in the patient's axes, turned as it is drawn (rows from the top,
    columns from the viewer's left)."""
    if view == "axial":  # rows anterior -> posterior, columns the patient's right -> left
        return volume[index]
    if view == "coronal":  # rows superior -> inferior, columns right -> left
        return volume[::-1, index, :]
    if view == "sagittal":  # rows superior -> inferior, columns anterior -> posterior
        return volume[::-1, :, index]
    raise ValueError(f"unknown view {view!r}; one of {VIEWS}")


def view_aspect(spacing: Sequence[float], view: str) -> float:
    """Height over width of one drawn pixel of ``view`` (spacing in z, y, x order, mm)."""
    z, y, x = (float(s) for s in spacing)
    return {"axial": y / x, "coronal": z / x, "sagittal": z / y}[view]


def slice_centre(mask: np.ndarray) -> Tuple[int, int, int]:
    """The mask's voxel nearest its centroid: the three slices through it all cut the mask (a curved
    structure's centroid can lie outside it)."""
    idx = np.argwhere(mask)
    return tuple(int(v) for v in idx[np.argmin(((idx - idx.mean(0)) ** 2).sum(1))])


def outline(mask2d: np.ndarray, thickness: int = 1, outside: bool = False) -> np.ndarray:
    """The mask's border, ``thickness`` pixels wide: its own edge pixels, or (``outside``) the ring just
    around it. A reference is drawn outside and the prediction inside, so that where they agree both
    rings show side by side instead of one hiding the other."""
    m = np.asarray(mask2d, bool)
    if outside:
        return ndimage.binary_dilation(m, iterations=thickness) & ~m
    return m & ~ndimage.binary_erosion(m, iterations=thickness)


def describe(prompt: str, record: Mapping) -> str:
    """A legend line: the prompt, what it was understood as, its voxels and its flag."""
    u = record.get("understood") or {}
    if "relation" in u:  # a position prompt
        meaning = f"the {u['relation']} structure -> {u.get('concept') or 'none'}"
    elif u.get("concept") is not None:
        sim = u.get("similarity")
        meaning = f"{u['concept']} (nearest term '{u.get('term')}'" + \
            (f", similarity {sim:.2f}" if isinstance(sim, (int, float)) else "") + \
            (f", {u['side']} side)" if u.get("side") in ("left", "right") else ")")
    else:
        meaning = "- (the model has no vocabulary)"
    voxels = int(record.get("voxels") or 0)
    return f"\"{prompt}\": {meaning}; {f'{voxels} voxels' if voxels else 'EMPTY'}; flag: {record.get('flag') or '-'}"


def _draw_panel(ax, image: np.ndarray, view: str, index: int, aspect: float, window: Tuple[float, float],
                outlines: Sequence[Tuple[np.ndarray, Colour, bool]]) -> None:
    """The image slice in grey, then each (mask, colour, outside) outline on top (later ones win)."""
    grey = view_slice(image, view, index)
    ax.imshow(grey, cmap=GREYS, vmin=window[0], vmax=window[1], aspect=aspect, interpolation="nearest")
    # a slice shrunk to fit the panel would lose one-pixel outlines: thicken them by the shrink factor
    thickness = max(1, int(np.ceil(max(grey.shape) / (PANEL_INCHES * DPI * 0.9))))
    rgba = np.zeros(grey.shape + (4,), np.uint8)
    for mask, colour, outside in outlines:
        rgba[outline(view_slice(mask, view, index), thickness, outside)] = (*colour, 255)
    ax.imshow(rgba, aspect=aspect, interpolation="nearest")
    ax.set_axis_off()
    left, right, top, bottom = EDGES[view]
    for text, x, y, ha, va in ((left, -0.02, 0.5, "right", "center"), (right, 1.02, 0.5, "left", "center"),
                               (top, 0.5, 1.01, "center", "bottom"), (bottom, 0.5, -0.01, "center", "top")):
        ax.text(x, y, text, transform=ax.transAxes, color="white", fontsize=8, ha=ha, va=va, fontweight="bold")


def _legend(fig: Figure, records: Mapping[str, Mapping], colours: Mapping[str, Colour], with_reference: bool) -> None:
    handles, labels = [], []
    for prompt, rec in records.items():
        empty = not int(rec.get("voxels") or 0)
        handles.append(Line2D([], [], color="grey" if empty else np.array(colours[prompt]) / 255.0,
                              lw=1 if empty else 3, ls=":" if empty else "-"))
        labels.append(describe(prompt, rec))
    if with_reference:
        handles.append(Line2D([], [], color=np.array(REFERENCE_COLOUR) / 255.0, lw=3))
        labels.append("reference (the evaluation's label map)")
    fig.legend(handles, labels, loc="lower left", bbox_to_anchor=(0.01, 0.0), frameon=False, fontsize=7.5,
               labelcolor="white", handlelength=2.5)


def overlay_figure(image: np.ndarray, spacing: Sequence[float], masks: Mapping[str, np.ndarray],
                   records: Mapping[str, Mapping], references: Optional[Mapping[str, np.ndarray]] = None,
                   title: str = "") -> Tuple[Figure, List[Tuple[Optional[str], str, int, object]]]:
    """The picture of one case, and its panels as (row prompt, view, slice index, axes).

    ``image``: (z, y, x) in the patient's axes (:func:`in_patient_axes`), ``spacing`` in the same order;
    ``masks``: {prompt: bool array of the image's shape}; ``records``: the manifest's entries of the
    case's prompts (``understood``, ``voxels``, ``flag``), which order the rows and the legend;
    ``references``: {prompt: reference mask}, outlined in white just outside its edge."""
    references = {p: r for p, r in (references or {}).items() if r is not None}
    colours = prompt_colours(list(records))
    rows: Dict[Optional[str], Tuple[int, int, int]] = {}
    for p in records:
        shown = masks[p] if masks[p].any() else references.get(p)
        if shown is not None and shown.any():
            rows[p] = slice_centre(shown)
    if not rows:  # nothing found anywhere: the image's central slices, so the picture still shows the case
        rows[None] = tuple(s // 2 for s in image.shape)
    legend_inches = _LEGEND_LINE_INCHES * (len(records) + bool(references)) + 0.15
    height = _HEADER_INCHES + PANEL_INCHES * len(rows) + legend_inches
    fig = Figure(figsize=(3 * PANEL_INCHES, height), dpi=DPI, facecolor="black")
    fig.text(0.01, 1 - 0.08 / height, title, color="white", fontsize=10, va="top", fontweight="bold")
    fig.text(0.01, 1 - 0.32 / height, ORIENTATION_NOTE, color="white", fontsize=8, va="top")
    window = tuple(float(v) for v in np.percentile(image, (0.5, 99.5)))
    outlines = [(references[p], REFERENCE_COLOUR, True) for p in records if p in references] + \
        [(masks[p], colours[p], False) for p in records if masks[p].any()]
    placed = []
    for r, (prompt, centre) in enumerate(rows.items()):
        bottom = 1 - (_HEADER_INCHES + PANEL_INCHES * (r + 1)) / height
        for c, view in enumerate(VIEWS):
            # room above for the title, below for the edge letter: rows must not overlap
            ax = fig.add_axes((c / 3 + 0.03, bottom + 0.2 / height, 1 / 3 - 0.06, (PANEL_INCHES - 0.55) / height))
            index = centre[VIEW_AXIS[view]]
            _draw_panel(ax, image, view, index, view_aspect(spacing, view), window, outlines)
            name = "nothing found" if prompt is None else f'"{prompt}"'
            ax.set_title(f"{name}: {view} {index}" if c == 0 else f"{view} {index}", fontsize=8,
                         color="white" if prompt is None else np.array(colours[prompt]) / 255.0, pad=13)
            placed.append((prompt, view, index, ax))
    _legend(fig, records, colours, bool(references))
    return fig, placed


def patient_array(image: sitk.Image) -> Tuple[np.ndarray, Tuple[float, float, float]]:
    """(z, y, x) array in the patient's axes and its spacing in the same order."""
    turned = in_patient_axes(image)
    return sitk.GetArrayFromImage(turned), tuple(float(s) for s in reversed(turned.GetSpacing()))


def write_overlay(out: PathLike, image: sitk.Image, masks: Mapping[str, sitk.Image], records: Mapping[str, Mapping],
                  references: Optional[Mapping[str, np.ndarray]] = None, title: str = "") -> List[Panel]:
    """Draw one case and write the PNG atomically; returns where each slice landed.

    ``image`` and the ``masks`` (one per prompt of ``records``) share one grid, in any storage orientation;
    ``references``: {prompt: reference mask} as arrays of that grid in the patient's axes
    (:func:`patient_array`)."""
    arr, spacing = patient_array(image)
    mask_arrays = {}
    for p in records:
        m, _ = patient_array(masks[p])
        if m.shape != arr.shape:
            raise OverlayError(f"{title}: the mask of prompt '{p}' has shape {m.shape}, its image {arr.shape}")
        mask_arrays[p] = m > 0
    fig, placed = overlay_figure(arr, spacing, mask_arrays, records, references, title)
    save_figure(fig, out, dpi=DPI, tight=False)
    height = fig.bbox.height
    panels = []
    for prompt, view, index, ax in placed:
        b = ax.get_window_extent()  # display pixels, origin bottom left, as drawn by the save
        panels.append(Panel(prompt, view, index, (int(round(b.x0)), int(round(height - b.y1)),
                                                  int(round(b.x1)), int(round(height - b.y0)))))
    return panels


def write_case_overlay(out: PathLike, image_file: PathLike, folder: PathLike, entry: Mapping[str, Mapping],
                       reference_file: Optional[PathLike] = None,
                       reference_labels: Optional[Mapping[str, Sequence[int]]] = None,
                       title: str = "") -> List[Panel]:
    """The picture of one predicted case from its files: the image (a case's first channel), the masks the
    manifest ``entry`` names (relative to ``folder``) and, when evaluating, the reference label map with
    the labels each prompt's concept has (``reference_labels``)."""
    masks = {p: sitk.ReadImage(str(Path(folder) / rec["file"])) for p, rec in entry.items()}
    references = None
    if reference_file is not None:
        ref, _ = patient_array(sitk.ReadImage(str(reference_file)))
        references = {p: np.isin(ref, labels) for p, labels in (reference_labels or {}).items()}
    panels = write_overlay(out, sitk.ReadImage(str(image_file)), masks, entry, references, title)
    logger.debug("overlay %s written", out)
    return panels
