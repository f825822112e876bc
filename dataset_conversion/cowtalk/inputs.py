"""Finding and validating the subjects of a TopCoW release before anything is written.

Every problem is collected first and reported together, each line naming the file or case at fault,
so one run shows the user everything to fix and no partial dataset is ever produced.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from nnunetv2_text.errors import UserInputError

from .constants import check_topcow_values

logger = logging.getLogger(__name__)

IMAGE_PATTERN = re.compile(r"^(topcow_(ct|mr)_(\d+))_0000\.nii\.gz$")
LABEL_FOLDERS: Tuple[str, ...] = ("cow_seg_labelsTr", "labelsTr")


class ConversionError(UserInputError):
    """Bad input or output location; the message names the files or cases at fault."""


@dataclass
class Subject:
    subject_id: str
    modality: str
    image: Path
    label: Optional[Path]
    split: str = "train"


def find_subjects(topcow_folder: Path, modality: str = "both") -> List[Subject]:
    """Subjects of ``imagesTr/`` (2024 naming) with their label file from ``cow_seg_labelsTr/`` or ``labelsTr/``."""
    images = topcow_folder / "imagesTr"
    if not images.is_dir():
        raise ConversionError(f"{images}: folder not found (expected the TopCoW 2024 layout)")
    label_dirs = [topcow_folder / d for d in LABEL_FOLDERS if (topcow_folder / d).is_dir()]
    subjects = []
    for path in sorted(images.iterdir()):
        m = IMAGE_PATTERN.match(path.name)
        if not m:
            continue
        if modality != "both" and m.group(2) != modality:
            continue
        label = next((d / f"{m.group(1)}.nii.gz" for d in label_dirs if (d / f"{m.group(1)}.nii.gz").is_file()), None)
        subjects.append(Subject(m.group(1), m.group(2), path, label))
    if not subjects:
        raise ConversionError(f"{images}: no image named topcow_{{ct|mr}}_<id>_0000.nii.gz"
                              + ("" if modality == "both" else f" for modality '{modality}'"))
    return subjects


def apply_split(subjects: List[Subject], split_file: Optional[Path]) -> List[Subject]:
    """Mark test subjects; subjects listed nowhere are skipped when the split names a train list."""
    if split_file is None:
        return subjects
    try:
        split = json.loads(Path(split_file).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConversionError(f"{split_file}: cannot read split file ({e})") from None
    if not isinstance(split, dict) or set(split) - {"train", "test"} or not all(
            isinstance(v, list) and all(isinstance(s, str) for s in v) for v in split.values()):
        raise ConversionError(f"{split_file}: expected {{\"train\": [subject ids], \"test\": [subject ids]}}")
    train, test = set(split.get("train", [])), set(split.get("test", []))
    problems = [f"{split_file}: subject '{s}' is listed as train and as test" for s in sorted(train & test)]
    known = {s.subject_id for s in subjects}
    modalities = {s.modality for s in subjects}
    for s in sorted(train | test):
        m = re.match(r"^topcow_(ct|mr)_\d+$", s)
        if s not in known and (m is None or m.group(1) in modalities):
            problems.append(f"{split_file}: subject '{s}' has no image in imagesTr")
    if problems:
        raise ConversionError("\n".join(problems))
    out = []
    for s in subjects:
        if s.subject_id in test:
            s.split = "test"
        elif "train" in split and s.subject_id not in train:
            logger.warning("%s: not in split file %s, skipped", s.subject_id, split_file)
            continue
        out.append(s)
    return out


def _close(a: Sequence[float], b: Sequence[float], atol: float) -> bool:
    return np.allclose(np.asarray(a, float), np.asarray(b, float), rtol=1e-5, atol=atol)


def validate_subject(s: Subject) -> List[str]:
    """Problems of one subject (empty when fine): label present, 3D, same grid as the image, TopCoW ids."""
    if s.label is None:
        return [f"{s.subject_id}: label file missing (looked for {s.subject_id}.nii.gz in "
                f"{' and '.join(LABEL_FOLDERS)} next to {s.image.parent})"]
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(s.image))
        reader.ReadImageInformation()
        label = sitk.ReadImage(str(s.label))
    except RuntimeError as e:
        return [f"{s.subject_id}: cannot read {s.image} or {s.label} ({str(e).strip().splitlines()[-1]})"]
    problems = []
    if reader.GetDimension() != 3 or reader.GetNumberOfComponents() != 1:
        problems.append(f"{s.image}: expected a 3D single-channel image")
    if label.GetDimension() != 3:
        problems.append(f"{s.label}: expected a 3D label map")
    if problems:
        return problems
    checks = (("size", reader.GetSize(), label.GetSize(), 0.0), ("spacing", reader.GetSpacing(), label.GetSpacing(), 1e-4),
              ("origin", reader.GetOrigin(), label.GetOrigin(), 1e-3),
              ("direction", reader.GetDirection(), label.GetDirection(), 1e-4))
    for what, a, b, tol in checks:
        if not _close(a, b, tol):
            problems.append(f"{s.label}: {what} {tuple(np.round(b, 6))} differs from the image's "
                            f"{tuple(np.round(a, 6))} ({s.image})")
    if problems:
        return problems
    arr = sitk.GetArrayViewFromImage(label)
    try:
        check_topcow_values(arr, str(s.label))
    except ValueError as e:
        return [str(e)]
    if not np.any(arr):
        problems.append(f"{s.label}: the label map is empty (no vessel voxel)")
    return problems


def validate_subjects(subjects: Sequence[Subject]) -> None:
    """Raise one :class:`ConversionError` listing every problem of every subject."""
    problems = [p for s in subjects for p in validate_subject(s)]
    if problems:
        raise ConversionError(f"{len(problems)} problem(s) in the input, nothing written:\n" + "\n".join(problems))


def reference_geometry(s: Subject) -> Dict[str, tuple]:
    """The image's geometry, read from its header only (the image itself is copied byte for byte)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(s.image))
    reader.ReadImageInformation()
    return {"spacing": reader.GetSpacing(), "origin": reader.GetOrigin(), "direction": reader.GetDirection()}
