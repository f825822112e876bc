"""TopCoW label constants, the CoWTalk channel order and the TopCoW <-> contiguous label mapping.

TopCoW numbers its 13 vessel classes 1..12 and 15 (13 and 14 are unused). nnU-Net wants contiguous
labels, so the nnU-Net target stores 3rd-A2 as 13; :func:`to_contiguous` / :func:`to_topcow` convert
between the two and refuse values that have no meaning on their side (a silent pass-through would
hide a corrupted file).
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

# error types of a variant's records ("none": the shape is unchanged) belong to the instruction-file format,
# which the package reads
from nnunetv2_text.text.instructions import ERROR_TYPES, GLOBAL_ERROR_TYPES, LOCAL_ERROR_TYPES  # noqa: F401

#: TopCoW class id -> short name (official evaluation constants, 2023 and 2024)
TOPCOW_LABELS: Dict[int, str] = {
    1: "BA", 2: "R-PCA", 3: "L-PCA", 4: "R-ICA", 5: "R-MCA", 6: "L-ICA", 7: "L-MCA",
    8: "R-Pcom", 9: "L-Pcom", 10: "Acom", 11: "R-ACA", 12: "L-ACA", 15: "3rd-A2",
}
#: ids TopCoW reserves but never uses; any id outside {0} | TOPCOW_LABELS is an error
UNUSED_TOPCOW_IDS: Tuple[int, ...] = (13, 14)
VALID_TOPCOW_VALUES = frozenset({0, *TOPCOW_LABELS})

#: TopCoW class id -> (full name, short name used in instructions); patient left/right
CLASS_TERMS: Dict[int, Tuple[str, str]] = {
    1: ("basilar artery", "basilar artery"),
    2: ("right posterior cerebral artery", "right PCA"),
    3: ("left posterior cerebral artery", "left PCA"),
    4: ("right internal carotid artery", "right ICA"),
    5: ("right middle cerebral artery", "right MCA"),
    6: ("left internal carotid artery", "left ICA"),
    7: ("left middle cerebral artery", "left MCA"),
    8: ("right posterior communicating artery", "right Pcom"),
    9: ("left posterior communicating artery", "left Pcom"),
    10: ("anterior communicating artery", "Acom"),
    11: ("right anterior cerebral artery", "right ACA"),
    12: ("left anterior cerebral artery", "left ACA"),
    15: ("third A2 segment", "third A2"),
}

GROUPS: Dict[str, Tuple[int, ...]] = {"anterior": (10, 11, 12, 15), "posterior": (2, 3, 8, 9)}

#: order of the binary shape channels (one per TopCoW class)
SHAPE_CHANNEL_ORDER: Tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 15)
NUM_SHAPE_CHANNELS = len(SHAPE_CHANNEL_ORDER)

#: contiguous (nnU-Net) label -> TopCoW id, only where they differ
CONTIGUOUS_TO_TOPCOW: Dict[int, int] = {13: 15}
TOPCOW_TO_CONTIGUOUS: Dict[int, int] = {v: k for k, v in CONTIGUOUS_TO_TOPCOW.items()}

#: the nnU-Net dataset.json ``labels`` entry of a CoWTalk dataset
DATASET_LABELS: Dict[str, int] = {"background": 0, **{
    TOPCOW_LABELS[t]: TOPCOW_TO_CONTIGUOUS.get(t, t) for t in SHAPE_CHANNEL_ORDER}}


#: the vessel each class branches from; its nearest centerline end is the class's proximal end
PARENT_CLASS: Dict[int, Tuple[int, ...]] = {
    2: (1,), 3: (1,), 5: (4,), 7: (6,), 8: (4,), 9: (6,), 10: (11,), 11: (4,), 12: (6,), 15: (10, 11, 12),
}
#: classes whose proximal end is the most inferior one (they enter the field of view from below)
INFERIOR_ORIGIN_CLASSES: Tuple[int, ...] = (1, 4, 6)


def class_name(topcow_id: int) -> str:
    """Short TopCoW name ('R-MCA'); KeyError for ids TopCoW does not use."""
    return TOPCOW_LABELS[int(topcow_id)]


def check_topcow_values(label_map: np.ndarray, source: str = "label map") -> None:
    """Raise ValueError naming ``source`` if the map holds a value outside TopCoW's label set."""
    values = np.unique(label_map)
    bad = sorted(int(v) if float(v).is_integer() else float(v) for v in values
                 if not float(v).is_integer() or int(v) not in VALID_TOPCOW_VALUES)
    if bad:
        raise ValueError(f"{source}: label value(s) {bad} are not TopCoW labels "
                         f"(allowed: 0, {sorted(TOPCOW_LABELS)})")


def to_contiguous(label_map: np.ndarray) -> np.ndarray:
    """TopCoW ids -> contiguous nnU-Net labels (15 -> 13), as uint8; rejects 13, 14 and foreign ids."""
    label_map = np.asarray(label_map)
    check_topcow_values(label_map, "to_contiguous input")
    out = label_map.astype(np.uint8, copy=True)
    for topcow, contiguous in TOPCOW_TO_CONTIGUOUS.items():
        out[label_map == topcow] = contiguous
    return out


def to_topcow(label_map: np.ndarray) -> np.ndarray:
    """Contiguous nnU-Net labels -> TopCoW ids (13 -> 15), as uint8; rejects values above 13."""
    label_map = np.asarray(label_map)
    values = np.unique(label_map)
    bad = [v for v in values.tolist() if not float(v).is_integer() or not 0 <= v <= NUM_SHAPE_CHANNELS]
    if bad:
        raise ValueError(f"to_topcow input: values {bad} are not contiguous CoWTalk labels (0..{NUM_SHAPE_CHANNELS})")
    out = label_map.astype(np.uint8, copy=True)
    for contiguous, topcow in CONTIGUOUS_TO_TOPCOW.items():
        out[label_map == contiguous] = topcow
    return out


def shape_channels(label_map: np.ndarray) -> np.ndarray:
    """TopCoW label map (Z, Y, X) -> binary stack (13, Z, Y, X) uint8 in :data:`SHAPE_CHANNEL_ORDER`.

    One channel per class, because nnU-Net resamples input channels with cubic interpolation: label
    ids in one channel would blend into neighbouring (wrong) ids, binary masks only get soft edges.
    """
    label_map = np.asarray(label_map)
    return np.stack([(label_map == t) for t in SHAPE_CHANNEL_ORDER]).astype(np.uint8)


def label_map_from_channels(channels: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Binary/soft stack (13, ...) -> TopCoW label map; where channels overlap the strongest one wins."""
    channels = np.asarray(channels, dtype=np.float32)
    if channels.shape[0] != NUM_SHAPE_CHANNELS:
        raise ValueError(f"expected {NUM_SHAPE_CHANNELS} shape channels, got {channels.shape[0]}")
    best = np.argmax(channels, axis=0)
    ids = np.asarray(SHAPE_CHANNEL_ORDER, dtype=np.uint8)[best]
    return np.where(channels.max(axis=0) > threshold, ids, 0).astype(np.uint8)
