"""PNG plots of the evaluation, drawn with matplotlib's Agg canvas (no display, no global pyplot state)."""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nnunetv2_text.utils.io import atomic_path

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
#: at most this many boxes per PNG; more concepts are split over several files
MAX_BOXES = 16


def save_figure(fig: Figure, out: PathLike, dpi: int = 110, tight: bool = True) -> Path:
    """Render ``fig`` on an Agg canvas and write it as a PNG atomically. ``tight`` crops to the drawn
    content; without it every pixel stays where the figure's layout put it (overlay pictures rely on that)."""
    FigureCanvasAgg(fig)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    return Path(out)


def _chunks(keys: List[str], size: int) -> List[List[str]]:
    return [keys[i:i + size] for i in range(0, len(keys), size)] or [[]]


def boxplots(groups: Mapping[str, Sequence[float]], out_stem: PathLike, title: str,
             ylabel: str = "Dice") -> List[Path]:
    """One box per group (e.g. concept), split into PNGs of at most MAX_BOXES boxes.

    Files are ``<out_stem>.png`` or ``<out_stem>_<k>.png`` when split.
    """
    keys = [k for k in groups if any(math.isfinite(v) for v in groups[k])]
    if not keys:
        return []
    chunks = _chunks(keys, MAX_BOXES)
    paths = []
    for i, chunk in enumerate(chunks):
        data = [[v for v in groups[k] if math.isfinite(v)] for k in chunk]
        fig = Figure(figsize=(max(4.0, 0.6 * len(chunk) + 2), 4.0))
        ax = fig.add_subplot(1, 1, 1)
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(chunk) + 1))
        ax.set_xticklabels(chunk, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        if ylabel in ("Dice", "NSD", "clDice"):
            ax.set_ylim(-0.05, 1.05)
        ax.set_title(title if len(chunks) == 1 else f"{title} ({i + 1}/{len(chunks)})")
        ax.grid(axis="y", alpha=0.3)
        stem = Path(out_stem)
        out = stem.with_name(stem.name + ("" if len(chunks) == 1 else f"_{i + 1}") + ".png")
        paths.append(save_figure(fig, out))
    return paths


def cowtalk_heatmap(table: Sequence[Mapping], out: PathLike) -> Path:
    """Rows = error types; three panels (Dice, clDice, Betti-0 error), each with input and refined columns."""
    rows = [r["error_type"] for r in table]
    panels = [("dice", "Dice (class avg)", "viridis", (0.0, 1.0)),
              ("cldice", "clDice (merged)", "viridis", (0.0, 1.0)),
              ("betti0", "Betti-0 error (class avg)", "viridis_r", None)]
    fig = Figure(figsize=(9.0, 0.45 * len(rows) + 1.8))
    for i, (key, title, cmap, lim) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        data = np.array([[r[f"{key}_input"], r[f"{key}_refined"]] for r in table], dtype=float)
        finite = data[np.isfinite(data)]
        vmin, vmax = lim if lim else (0.0, float(finite.max()) if finite.size and finite.max() > 0 else 1.0)
        im = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
        for (y, x), v in np.ndenumerate(data):
            r, g, b, _ = im.cmap(im.norm(v)) if math.isfinite(v) else (1, 1, 1, 1)
            ax.text(x, y, "–" if not math.isfinite(v) else f"{v:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black")
        ax.set_xticks([0, 1])
        ax.set_xticklabels(["input", "refined"], fontsize=8)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(rows if i == 0 else [""] * len(rows), fontsize=8)
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.08)
    fig.suptitle("CoWTalk: erroneous input vs refined output, by error type", fontsize=10)
    return save_figure(fig, out)


def per_group_values(rows: Sequence[Mapping], key: str, metric: str) -> Dict[str, List[float]]:
    """Collect ``metric`` of every row by ``row[key]``, in first-seen order."""
    out: Dict[str, List[float]] = {}
    for r in rows:
        v = r.get(metric)
        out.setdefault(r[key], [])
        if v is not None:
            out[r[key]].append(float(v))
    return out
